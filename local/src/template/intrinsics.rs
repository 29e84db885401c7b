//! CloudFormation's intrinsic functions, evaluated as AWS evaluates them at deploy time
//! ("Intrinsic function reference" in the AWS CloudFormation User Guide): `Ref` (parameters,
//! pseudo parameters, resources), `Fn::Sub` (both forms), `Fn::Join`, `Fn::Split`,
//! `Fn::Select`, `Fn::If`, `Fn::GetAtt` and the condition functions `Fn::Equals`, `Fn::Not`,
//! `Fn::And`, `Fn::Or`, `Condition`. What a resource's `Ref` or attribute returns is known only
//! once AWS creates it: a [`ResourceValues`] supplies stand-ins of the right shape (the IAM
//! checks) or leaves them unknown (the local environment, which then asks for an override).

use super::{intrinsic, pseudo_parameter, scalar};
use serde_json::Value as Json;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};

/// What an expression evaluates to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Evaluated {
    Text(String),
    List(Vec<String>),
    Bool(bool),
    /// `!Ref AWS::NoValue`: the property or list item is removed.
    NoValue,
}

impl Evaluated {
    pub fn text(self) -> Option<String> {
        match self {
            Evaluated::Text(text) => Some(text),
            _ => None,
        }
    }

    fn list(self) -> Option<Vec<String>> {
        match self {
            Evaluated::List(items) => Some(items),
            Evaluated::Text(text) => Some(vec![text]),
            _ => None,
        }
    }
}

/// What a resource's `Ref` and `Fn::GetAtt` return, where known.
pub trait ResourceValues {
    fn reference(&self, scope: &Scope<'_>, logical_id: &str) -> Option<String>;
    fn attribute(&self, scope: &Scope<'_>, logical_id: &str, attribute: &str) -> Option<String>;
}

/// No resource value is known: only AWS knows them.
pub struct OnlyAwsKnows;

impl ResourceValues for OnlyAwsKnows {
    fn reference(&self, _: &Scope<'_>, _: &str) -> Option<String> {
        None
    }
    fn attribute(&self, _: &Scope<'_>, _: &str, _: &str) -> Option<String> {
        None
    }
}

/// Everything an expression may refer to.
pub struct Scope<'a> {
    /// Parameter values (`None`: no default and no override).
    pub parameters: &'a BTreeMap<String, Option<String>>,
    /// Parameters of a list type (`CommaDelimitedList`, `List<...>`): `Ref` gives a list.
    pub list_parameters: &'a BTreeSet<String>,
    /// The conditions as evaluated (an unknown one makes its `!If` unknown).
    pub conditions: &'a BTreeMap<String, bool>,
    /// The template's `Resources`, for [`ResourceValues`].
    pub resources: Option<&'a serde_yaml_ng::Mapping>,
    pub values: &'a dyn ResourceValues,
}

/// Nesting deeper than this is refused rather than followed.
const MAX_DEPTH: usize = 32;

impl Scope<'_> {
    /// The value of a parameter or pseudo parameter.
    pub fn parameter(&self, name: &str) -> Option<Evaluated> {
        let value = self
            .parameters
            .get(name)
            .cloned()
            .flatten()
            .or_else(|| pseudo_parameter(name).map(str::to_owned))?;
        Some(if self.list_parameters.contains(name) {
            Evaluated::List(value.split(',').map(|s| s.trim().to_owned()).collect())
        } else {
            Evaluated::Text(value)
        })
    }

    /// The resource `id`'s definition.
    pub fn resource(&self, id: &str) -> Option<&Value> {
        self.resources?.get(id)
    }

    /// `value` evaluated; `None` where it cannot be known.
    pub fn evaluate(&self, value: &Value) -> Option<Evaluated> {
        self.evaluate_at(value, 0)
    }

    /// `value` evaluated to text; `None` where it cannot be known or is not text.
    pub fn text(&self, value: &Value) -> Option<String> {
        self.evaluate(value)?.text()
    }

    fn evaluate_at(&self, value: &Value, depth: usize) -> Option<Evaluated> {
        if depth > MAX_DEPTH {
            return None;
        }
        if let Some(text) = scalar(value) {
            return Some(Evaluated::Text(text));
        }
        if let Value::Sequence(items) = value {
            let mut list = Vec::new();
            for item in items {
                match self.evaluate_at(item, depth + 1)? {
                    Evaluated::NoValue => {}
                    Evaluated::Text(text) => list.push(text),
                    _ => return None,
                }
            }
            return Some(Evaluated::List(list));
        }
        let (name, argument) = intrinsic(value).or_else(|| {
            let map = value.as_mapping()?;
            let inner = map.get("Condition")?;
            (map.len() == 1).then(|| ("Condition".to_owned(), inner))
        })?;
        let items = || argument.as_sequence().map(Vec::as_slice).unwrap_or(&[]);
        let each = |v: &Value| self.evaluate_at(v, depth + 1);
        let truth = |v: &Value| match each(v)? {
            Evaluated::Bool(b) => Some(b),
            _ => None,
        };
        match name.as_str() {
            "Ref" => {
                let name = argument.as_str()?;
                if name == "AWS::NoValue" {
                    return Some(Evaluated::NoValue);
                }
                if let Some(value) = self.parameter(name) {
                    return Some(value);
                }
                self.resource(name)?;
                self.values.reference(self, name).map(Evaluated::Text)
            }
            "Fn::Sub" => {
                let (text, variables) = match argument {
                    Value::Sequence(parts) => match parts.as_slice() {
                        [text, variables] => (text.as_str()?, variables.as_mapping()),
                        _ => return None,
                    },
                    other => (other.as_str()?, None),
                };
                let mut rest = text;
                let mut out = String::new();
                while let Some(start) = rest.find("${") {
                    let end = rest[start..].find('}')? + start;
                    out.push_str(&rest[..start]);
                    let name = &rest[start + 2..end];
                    if let Some(literal) = name.strip_prefix('!') {
                        out.push_str("${");
                        out.push_str(literal);
                        out.push('}');
                    } else if let Some(value) = variables.and_then(|v| v.get(name)) {
                        out.push_str(&each(value)?.text()?);
                    } else if let Some((id, attribute)) = name.split_once('.') {
                        self.resource(id)?;
                        out.push_str(&self.values.attribute(self, id, attribute)?);
                    } else if let Some(value) = self.parameter(name) {
                        out.push_str(&value.text()?);
                    } else {
                        self.resource(name)?;
                        out.push_str(&self.values.reference(self, name)?);
                    }
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                (!out.contains("{{resolve:")).then_some(Evaluated::Text(out))
            }
            "Fn::Join" => match items() {
                [separator, list] => {
                    let separator = separator.as_str()?;
                    Some(Evaluated::Text(each(list)?.list()?.join(separator)))
                }
                _ => None,
            },
            "Fn::Split" => match items() {
                [separator, text] => {
                    let separator = separator.as_str()?;
                    let text = each(text)?.text()?;
                    Some(Evaluated::List(
                        text.split(separator).map(str::to_owned).collect(),
                    ))
                }
                _ => None,
            },
            "Fn::Select" => match items() {
                [index, list] => {
                    let index: usize = each(index)?.text()?.parse().ok()?;
                    let list = each(list)?.list()?;
                    list.get(index).cloned().map(Evaluated::Text)
                }
                _ => None,
            },
            "Fn::GetAtt" => {
                let (id, attribute) = match argument {
                    Value::String(s) => {
                        let (id, attribute) = s.split_once('.')?;
                        (id.to_owned(), attribute.to_owned())
                    }
                    Value::Sequence(parts) => match parts.as_slice() {
                        [id, attribute] => (scalar(id)?, scalar(attribute)?),
                        _ => return None,
                    },
                    _ => return None,
                };
                self.resource(&id)?;
                self.values
                    .attribute(self, &id, &attribute)
                    .map(Evaluated::Text)
            }
            "Fn::If" => match items() {
                [condition, then, otherwise] => {
                    let truth = *self.conditions.get(condition.as_str()?)?;
                    each(if truth { then } else { otherwise })
                }
                _ => None,
            },
            "Fn::Equals" => match items() {
                [left, right] => Some(Evaluated::Bool(each(left)? == each(right)?)),
                _ => None,
            },
            "Fn::Not" => match items() {
                [inner] => truth(inner).map(|b| Evaluated::Bool(!b)),
                _ => None,
            },
            "Fn::And" => items()
                .iter()
                .try_fold(true, |all, v| Some(all && truth(v)?))
                .map(Evaluated::Bool),
            "Fn::Or" => items()
                .iter()
                .try_fold(false, |any, v| Some(any || truth(v)?))
                .map(Evaluated::Bool),
            "Condition" | "Fn::Condition" => self
                .conditions
                .get(argument.as_str()?)
                .copied()
                .map(Evaluated::Bool),
            // The rule functions ("Rules" in the CloudFormation User Guide).
            "Fn::Contains" => match items() {
                [list, value] => {
                    let list = each(list)?.list()?;
                    let value = each(value)?.text()?;
                    Some(Evaluated::Bool(list.contains(&value)))
                }
                _ => None,
            },
            "Fn::EachMemberEquals" => match items() {
                [list, value] => {
                    let list = each(list)?.list()?;
                    let value = each(value)?.text()?;
                    Some(Evaluated::Bool(list.iter().all(|item| *item == value)))
                }
                _ => None,
            },
            "Fn::EachMemberIn" => match items() {
                [members, allowed] => {
                    let members = each(members)?.list()?;
                    let allowed = each(allowed)?.list()?;
                    Some(Evaluated::Bool(
                        members.iter().all(|item| allowed.contains(item)),
                    ))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// A whole structure (a policy document, say) with every intrinsic evaluated and every
    /// `AWS::NoValue` removed; `None` where any part cannot be known, or when the structure
    /// itself is `AWS::NoValue` (then `Some(None)`).
    pub fn tree(&self, value: &Value) -> Option<Option<Json>> {
        self.tree_at(value, 0)
    }

    fn tree_at(&self, value: &Value, depth: usize) -> Option<Option<Json>> {
        if depth > MAX_DEPTH {
            return None;
        }
        if let Some((name, argument)) = intrinsic(value) {
            // `!If` may choose a structure; the rest evaluate to text or lists.
            if name == "Fn::If" {
                let [condition, then, otherwise] = argument.as_sequence()?.as_slice() else {
                    return None;
                };
                let truth = *self.conditions.get(condition.as_str()?)?;
                return self.tree_at(if truth { then } else { otherwise }, depth + 1);
            }
            return Some(match self.evaluate_at(value, depth + 1)? {
                Evaluated::Text(text) => Some(Json::String(text)),
                Evaluated::List(items) => {
                    Some(Json::Array(items.into_iter().map(Json::String).collect()))
                }
                Evaluated::Bool(b) => Some(Json::Bool(b)),
                Evaluated::NoValue => None,
            });
        }
        Some(Some(match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => serde_json::to_value(n).ok()?,
            Value::String(s) => Json::String(s.clone()),
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    if let Some(item) = self.tree_at(item, depth + 1)? {
                        out.push(item);
                    }
                }
                Json::Array(out)
            }
            Value::Mapping(map) => {
                let mut out = serde_json::Map::new();
                for (key, item) in map {
                    let key = scalar(key)?;
                    if let Some(item) = self.tree_at(item, depth + 1)? {
                        out.insert(key, item);
                    }
                }
                Json::Object(out)
            }
            Value::Tagged(_) => return None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope_test(text: &str, expected: Option<Evaluated>) {
        let parameters = BTreeMap::from([
            ("Ids".to_owned(), Some("a,b,c".to_owned())),
            ("Empty".to_owned(), Some(String::new())),
            ("Name".to_owned(), Some("/x/y".to_owned())),
        ]);
        let lists = BTreeSet::from(["Ids".to_owned(), "Empty".to_owned()]);
        let conditions = BTreeMap::from([("On".to_owned(), true)]);
        let scope = Scope {
            parameters: &parameters,
            list_parameters: &lists,
            conditions: &conditions,
            resources: None,
            values: &OnlyAwsKnows,
        };
        let value: Value = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(scope.evaluate(&value), expected, "{text}");
    }

    #[test]
    fn lists_strings_and_choices() {
        let text = |s: &str| Some(Evaluated::Text(s.to_owned()));
        scope_test(r#"!Join ["-", !Ref Ids]"#, text("a-b-c"));
        scope_test(r#"!Join ["", !Ref Empty]"#, text(""));
        scope_test(r#"!Select [1, !Ref Ids]"#, text("b"));
        scope_test(r#"!Select [5, !Ref Ids]"#, None);
        scope_test(r#"!Select [0, !Split ["/", !Ref Name]]"#, text(""));
        scope_test(
            r#"!Sub ["${A}:${AWS::Partition}", {A: !Select [2, !Ref Ids]}]"#,
            text("c:aws"),
        );
        scope_test(r#"!Sub "${!Literal}-${Name}""#, text("${Literal}-/x/y"));
        scope_test(r#"!If [On, yes, no]"#, text("yes"));
        scope_test(r#"!If [Unknown, yes, no]"#, None);
        scope_test(r#"!Ref AWS::NoValue"#, Some(Evaluated::NoValue));
        scope_test(r#"!GetAtt Missing.Arn"#, None);
        scope_test(
            r#"!Equals [!Join ["", !Ref Empty], ""]"#,
            Some(Evaluated::Bool(true)),
        );
        scope_test(
            r#"{"Fn::Contains": [[a, b], !Select [0, !Ref Ids]]}"#,
            Some(Evaluated::Bool(true)),
        );
        scope_test(
            r#"{"Fn::EachMemberIn": [!Ref Ids, [a, b]]}"#,
            Some(Evaluated::Bool(false)),
        );
    }
}
