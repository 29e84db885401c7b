//! Turns a function's environment in template.yaml into the values a local process gets.
//! Literals are used as written; `!Ref` to a parameter takes the local override or the
//! parameter's default; `!Sub` substitutes parameters and pseudo parameters. What only AWS can
//! resolve (`{{resolve:secretsmanager:…}}`, resource attributes) must be supplied locally: the
//! stack supplies `KAFKA_BROKERS`, `MONGODB_URI` and `MANAGEMENT_API_ENDPOINT` itself, and the
//! user may override any variable. Anything still unresolved stops the stack with the function
//! and variable named, rather than starting a function with a wrong value.

use crate::template::{FunctionSpec, StackTemplate, TemplateValue, resolve_in};
use std::collections::BTreeMap;

/// A variable the local stack cannot resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{function}: environment variable {variable} is {expression} in template.yaml, which only AWS \
     can resolve; give it a local value (emostream-local --env {variable}=...)"
)]
pub struct UnresolvedVariable {
    pub function: String,
    pub variable: String,
    pub expression: String,
}

/// Local values that stand in for what AWS would resolve.
#[derive(Debug, Clone, Default)]
pub struct LocalValues {
    /// Parameter values (like `sam deploy --parameter-overrides`), applied when the template is
    /// loaded.
    pub parameters: BTreeMap<String, String>,
    /// Environment variables set for every function, winning over the template.
    pub variables: BTreeMap<String, String>,
}

impl LocalValues {
    /// The environment of `function` as a local process should get it.
    pub fn environment_of(
        &self,
        template: &StackTemplate,
        function: &FunctionSpec,
    ) -> Result<Vec<(String, String)>, UnresolvedVariable> {
        let mut resolved = BTreeMap::new();
        for (name, value) in &function.environment {
            if let Some(local) = self.variables.get(name) {
                resolved.insert(name.clone(), local.clone());
                continue;
            }
            let value = match value {
                TemplateValue::Literal(literal) => literal.clone(),
                TemplateValue::Expression(expression) => resolve_in(expression, template)
                    .ok_or_else(|| UnresolvedVariable {
                        function: function.logical_id.clone(),
                        variable: name.clone(),
                        expression: serde_yaml_ng::to_string(expression)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    })?,
            };
            resolved.insert(name.clone(), value);
        }
        for (name, value) in &self.variables {
            resolved
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
        Ok(resolved.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Parameters:
  Topic: { Type: String, Default: reactions }
  Secret: { Type: String, Default: "" }
Resources:
  F:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: f } }
    Properties:
      Environment:
        Variables:
          TOPIC: !Ref Topic
          SECRET: !Ref Secret
          PLAIN: "7"
          URL: !Sub "https://x.execute-api.${AWS::Region}.amazonaws.com/${Topic}"
          DB: !Sub "{{resolve:secretsmanager:${Topic}}}"
"#;

    #[test]
    fn parameters_substitutions_and_overrides() {
        let template = StackTemplate::parse(TEMPLATE, &BTreeMap::new()).unwrap();
        let function = &template.functions["F"];
        let mut local = LocalValues::default();
        let error = local.environment_of(&template, function).unwrap_err();
        assert_eq!(error.variable, "DB");
        assert!(error.to_string().contains("--env DB="), "{error}");

        local
            .variables
            .insert("DB".into(), "mongodb://local".into());
        local.variables.insert("EXTRA".into(), "yes".into());
        let overrides = BTreeMap::from([("Topic".to_owned(), "t2".to_owned())]);
        let template = StackTemplate::parse(TEMPLATE, &overrides).unwrap();
        let function = &template.functions["F"];
        let env: BTreeMap<String, String> = local
            .environment_of(&template, function)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(env["TOPIC"], "t2");
        assert_eq!(env["SECRET"], "");
        assert_eq!(env["PLAIN"], "7");
        assert_eq!(env["URL"], "https://x.execute-api.local.amazonaws.com/t2");
        assert_eq!(env["DB"], "mongodb://local");
        assert_eq!(env["EXTRA"], "yes");
    }
}
