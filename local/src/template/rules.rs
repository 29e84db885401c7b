//! The template's `Rules`, checked as CloudFormation checks them before it creates or updates
//! anything ("Rules" in the AWS CloudFormation User Guide, template section reference): a rule
//! whose `RuleCondition` holds (or that has none) must have every `Assertions[].Assert` true,
//! else the deployment is refused with that assertion's `AssertDescription`. The local stack
//! refuses the same parameter sets, with the same message, so a combination that cannot work
//! is never run locally either.

use super::{StackTemplate, TemplateError, get, intrinsics::Evaluated, invalid};
use serde_yaml_ng::Value;

/// Refuses `template`'s parameters when one of `rules` does.
pub fn check(rules: Option<&Value>, template: &StackTemplate) -> Result<(), TemplateError> {
    let Some(rules) = rules.and_then(Value::as_mapping) else {
        return Ok(());
    };
    let scope = template.scope(&super::intrinsics::OnlyAwsKnows);
    let truth = |rule: &str, value: &Value| match scope.evaluate(value) {
        Some(Evaluated::Bool(truth)) => Ok(truth),
        _ => Err(invalid(
            rule,
            "a rule must be an expression over parameters that evaluates to true or false",
        )),
    };
    for (name, rule) in rules {
        let name = name.as_str().unwrap_or_default();
        if let Some(condition) = get(rule, "RuleCondition")
            && !truth(name, condition)?
        {
            continue;
        }
        for assertion in get(rule, "Assertions")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let assert = get(assertion, "Assert")
                .ok_or_else(|| invalid(name, "each assertion needs an Assert"))?;
            if !truth(name, assert)? {
                let message = get(assertion, "AssertDescription")
                    .and_then(Value::as_str)
                    .unwrap_or("the parameters fail this rule")
                    .to_owned();
                return Err(TemplateError::Rule {
                    rule: name.to_owned(),
                    message,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::StackTemplate;
    use super::TemplateError;
    use std::collections::BTreeMap;

    const TEMPLATE: &str = r#"
Parameters:
  Mode: { Type: String, Default: a }
  Issuer: { Type: String, Default: "" }
  Audience: { Type: String, Default: "" }
Rules:
  AudienceWithIssuer:
    RuleCondition: !Not [!Equals [!Ref Issuer, ""]]
    Assertions:
      - Assert: !Not [!Equals [!Ref Audience, ""]]
        AssertDescription: JwtAudience is required with JwtIssuer.
  KnownMode:
    Assertions:
      - Assert: {"Fn::Contains": [[a, b], !Ref Mode]}
        AssertDescription: Mode is a or b.
Resources: {}
"#;

    fn parse(overrides: &[(&str, &str)]) -> Result<StackTemplate, TemplateError> {
        let overrides = overrides
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>();
        StackTemplate::parse(TEMPLATE, &overrides)
    }

    #[test]
    fn a_failing_assertion_refuses_the_parameters_with_its_description() {
        assert!(parse(&[]).is_ok());
        assert!(parse(&[("Issuer", "https://id"), ("Audience", "web")]).is_ok());
        let error = parse(&[("Issuer", "https://id")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "rule AudienceWithIssuer refuses these parameters: JwtAudience is required with JwtIssuer."
        );
        let error = parse(&[("Mode", "c")]).unwrap_err();
        assert!(matches!(error, TemplateError::Rule { ref rule, .. } if rule == "KnownMode"));
    }
}
