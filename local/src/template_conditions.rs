//! The template's `Conditions`, evaluated with the local parameter values, so the local stack
//! builds what `sam deploy` would with the same parameters: a resource whose `Condition` is
//! false (the Event API unless `Delivery` is `AppSyncEvents`) does not exist, and `!If` takes
//! the branch AWS takes. `Fn::Equals`, `Fn::Not`, `Fn::And`, `Fn::Or` and `Condition` over
//! what [`resolve`] knows are understood; a condition built on anything else is left unknown,
//! and using an unknown condition is an error that names it.

use crate::template::{intrinsic, resolve};
use serde_yaml_ng::Value;
use std::collections::BTreeMap;

/// Each condition that can be known locally, by name.
pub fn evaluate(
    conditions: Option<&Value>,
    parameters: &BTreeMap<String, Option<String>>,
) -> BTreeMap<String, bool> {
    let Some(definitions) = conditions.and_then(Value::as_mapping) else {
        return BTreeMap::new();
    };
    let definitions: BTreeMap<String, &Value> = definitions
        .iter()
        .filter_map(|(name, value)| Some((name.as_str()?.to_owned(), value)))
        .collect();
    let mut known = BTreeMap::new();
    for name in definitions.keys() {
        if let Some(value) = condition(name, &definitions, parameters, 0) {
            known.insert(name.clone(), value);
        }
    }
    known
}

/// Conditions may name each other; deeper than this is a cycle.
const MAX_DEPTH: usize = 16;

fn condition(
    name: &str,
    definitions: &BTreeMap<String, &Value>,
    parameters: &BTreeMap<String, Option<String>>,
    depth: usize,
) -> Option<bool> {
    if depth > MAX_DEPTH {
        return None;
    }
    expression(definitions.get(name)?, definitions, parameters, depth + 1)
}

fn expression(
    value: &Value,
    definitions: &BTreeMap<String, &Value>,
    parameters: &BTreeMap<String, Option<String>>,
    depth: usize,
) -> Option<bool> {
    let (name, argument) = intrinsic(value).or_else(|| {
        // `{Condition: X}` is not an intrinsic in `intrinsic`'s sense.
        let map = value.as_mapping()?;
        let inner = map.get("Condition")?;
        (map.len() == 1).then(|| ("Condition".to_owned(), inner))
    })?;
    let items = || argument.as_sequence().map(Vec::as_slice).unwrap_or(&[]);
    let each = |v: &Value| expression(v, definitions, parameters, depth + 1);
    match name.as_str() {
        "Fn::Equals" => match items() {
            [left, right] => Some(resolve(left, parameters)? == resolve(right, parameters)?),
            _ => None,
        },
        "Fn::Not" => match items() {
            [inner] => each(inner).map(|b| !b),
            _ => None,
        },
        "Fn::And" => items()
            .iter()
            .try_fold(true, |all, v| Some(all && each(v)?)),
        "Fn::Or" => items()
            .iter()
            .try_fold(false, |any, v| Some(any || each(v)?)),
        "Condition" | "Fn::Condition" => {
            condition(argument.as_str()?, definitions, parameters, depth + 1)
        }
        _ => None,
    }
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
  Unknown: !Not [!Equals [!Join ["", !Ref List], ""]]
  Loop: !Condition Loop
"#,
        )
        .unwrap();
        let mut parameters = BTreeMap::from([("Mode".to_owned(), Some("On".to_owned()))]);
        let known = evaluate(root.get("Conditions"), &parameters);
        assert_eq!(
            (known["A"], known["NotA"], known["Both"], known["Either"]),
            (true, false, true, true)
        );
        assert!(!known.contains_key("Unknown"));
        assert!(!known.contains_key("Loop"));
        parameters.insert("Mode".into(), Some("Off".into()));
        let known = evaluate(root.get("Conditions"), &parameters);
        assert_eq!(
            (known["A"], known["NotA"], known["Both"]),
            (false, true, false)
        );
    }
}
