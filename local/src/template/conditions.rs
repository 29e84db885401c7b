//! The template's `Conditions`, evaluated with the parameter values in force, so the local stack
//! builds what `sam deploy` would with the same parameters: a resource whose `Condition` is
//! false (the Event API unless `Delivery` is `AppSyncEvents`) does not exist, and `!If` takes
//! the branch AWS takes. Conditions are expressions over [`super::intrinsics`]; one that names
//! a value only AWS knows is left unknown, and using an unknown condition is an error that
//! names it.

use super::intrinsics::{Evaluated, Scope};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

/// Each condition that can be known, by name. `scope`'s own conditions are ignored: conditions
/// may name each other, so they are evaluated again until none changes.
pub fn evaluate(conditions: Option<&Value>, scope: &Scope<'_>) -> BTreeMap<String, bool> {
    let Some(definitions) = conditions.and_then(Value::as_mapping) else {
        return BTreeMap::new();
    };
    let definitions: Vec<(String, &Value)> = definitions
        .iter()
        .filter_map(|(name, value)| Some((name.as_str()?.to_owned(), value)))
        .collect();
    let mut known = BTreeMap::new();
    // Each pass settles at least one more condition, or none will ever settle.
    for _ in 0..=definitions.len() {
        let before = known.len();
        for (name, definition) in &definitions {
            if known.contains_key(name) {
                continue;
            }
            let pass = Scope {
                conditions: &known,
                ..*scope
            };
            if let Some(Evaluated::Bool(truth)) = pass.evaluate(definition) {
                known.insert(name.clone(), truth);
            }
        }
        if known.len() == before {
            break;
        }
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_follow_the_parameters() {
        let root: Value = serde_yaml_ng::from_str(
            r#"
Conditions:
  A: !Equals [!Ref Mode, On]
  NotA: !Not [!Condition A]
  Both: !And [!Condition A, !Equals [x, x]]
  Either: { "Fn::Or": [{ Condition: NotA }, !Equals [!Ref Mode, On]] }
  EmptyList: !Not [!Equals [!Join ["", !Ref List], ""]]
  Unknown: !Equals [!GetAtt Api.Arn, x]
  Loop: !Condition Loop
"#,
        )
        .unwrap();
        let parameters = BTreeMap::from([
            ("Mode".to_owned(), Some("On".to_owned())),
            ("List".to_owned(), Some(String::new())),
        ]);
        let lists = std::collections::BTreeSet::from(["List".to_owned()]);
        let none = BTreeMap::new();
        let scope = |parameters| Scope {
            parameters,
            list_parameters: &lists,
            conditions: &none,
            resources: None,
            values: &super::super::intrinsics::OnlyAwsKnows,
        };
        let known = evaluate(root.get("Conditions"), &scope(&parameters));
        assert_eq!(
            (known["A"], known["NotA"], known["Both"], known["Either"]),
            (true, false, true, true)
        );
        assert!(!known["EmptyList"]);
        assert!(!known.contains_key("Unknown"));
        assert!(!known.contains_key("Loop"));
        let mut off = parameters.clone();
        off.insert("Mode".into(), Some("Off".into()));
        let known = evaluate(root.get("Conditions"), &scope(&off));
        assert_eq!(
            (known["A"], known["NotA"], known["Both"]),
            (false, true, false)
        );
    }
}
