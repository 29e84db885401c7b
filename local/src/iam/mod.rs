//! IAM as the emulated services apply it: every signed call the local stack answers (Secrets
//! Manager and SSM reads, `@connections`, AppSync Events publishes, the IAM-authorized admin
//! routes) is made by a principal whose identity policies are evaluated before it is served,
//! and a missing grant is refused with the service's own AccessDenied. A function's principal
//! is its execution role as template.yaml builds it ([`crate::template::policies`]), so a grant
//! missing from the template fails locally as it would in an account.
//!
//! Requests are authenticated as AWS authenticates them ([`sigv4`], after "Signature Version 4
//! for API requests" in the IAM User Guide). Follows the AWS IAM User Guide: "Policy evaluation logic" (an explicit Deny wins, else an
//! Allow is needed, else the request is implicitly denied), "IAM JSON policy elements: Action"
//! (service prefix and action name, case-insensitive, `*` and `?` wildcards), "...: Resource"
//! (ARNs, case-sensitive, `*` and `?` wildcards) and "...: Condition" (the string, ARN and Bool
//! operators; a statement whose condition cannot be evaluated grants nothing and, for safety,
//! a Deny whose condition cannot be evaluated applies).

mod principals;
pub mod sigv4;

pub use principals::{OPERATOR, Principal, Principals};

/// The local account: principals' ARNs and the emulated resources' ARNs name it.
pub const LOCAL_ACCOUNT_ID: &str = "000000000000";

use crate::template::policies::{Effect, Statement};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What an emulated service needs to apply IAM: who may sign its requests, and the ARN its
/// resources' ARNs start with (`arn:aws:execute-api:local:000000000000:{api-id}/{stage}`, say).
#[derive(Debug, Clone)]
pub struct ServiceIam {
    pub principals: Arc<Principals>,
    pub arn_prefix: String,
}

impl ServiceIam {
    /// Only the operator may call: for an emulation started by itself, outside a stack.
    pub fn operator_only(arn_prefix: &str) -> Self {
        Self {
            principals: Principals::operator_only(),
            arn_prefix: arn_prefix.to_owned(),
        }
    }

    /// The ARN of the resource at `path` under the prefix.
    pub fn arn(&self, path: &str) -> String {
        format!("{}{path}", self.arn_prefix)
    }
}

/// What the policies decide for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// A Deny statement matched.
    ExplicitlyDenied,
    /// No Allow statement matched.
    ImplicitlyDenied,
}

/// One request as IAM sees it.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `service:Action`.
    pub action: &'a str,
    /// The resource's ARN.
    pub resource: &'a str,
    /// Condition keys and their values (`aws:SecureTransport`, say).
    pub context: &'a BTreeMap<String, String>,
}

/// `*` matches any run of characters, `?` any one; everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let fold = |c: char| {
        if ignore_case {
            c.to_ascii_lowercase()
        } else {
            c
        }
    };
    let pattern: Vec<char> = pattern.chars().map(fold).collect();
    let text: Vec<char> = text.chars().map(fold).collect();
    // Iterative matching with back-tracking to the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Whether a statement's `Condition` holds; `None` when it uses what is not evaluated here.
fn condition_holds(condition: &Value, context: &BTreeMap<String, String>) -> Option<bool> {
    let operators = condition.as_object()?;
    for (operator, keys) in operators {
        for (key, expected) in keys.as_object()? {
            let expected: Vec<&str> = match expected {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                Value::Bool(true) => vec!["true"],
                Value::Bool(false) => vec!["false"],
                _ => return None,
            };
            let actual = context.get(key).map(String::as_str);
            let holds = match operator.as_str() {
                "StringEquals" | "ArnEquals" | "Bool" => {
                    actual.is_some_and(|a| expected.contains(&a))
                }
                "StringNotEquals" => actual.is_none_or(|a| !expected.contains(&a)),
                "StringLike" | "ArnLike" => {
                    actual.is_some_and(|a| expected.iter().any(|e| wildcard_match(e, a, false)))
                }
                _ => return None,
            };
            if !holds {
                return Some(false);
            }
        }
    }
    Some(true)
}

fn statement_matches(statement: &Statement, request: &Request<'_>) -> Option<bool> {
    let action = statement
        .actions
        .iter()
        .any(|a| wildcard_match(a, request.action, true));
    let resource = statement
        .resources
        .iter()
        .any(|r| wildcard_match(r, request.resource, false));
    if !(action && resource) {
        return Some(false);
    }
    match &statement.condition {
        None => Some(true),
        Some(condition) => condition_holds(condition, request.context),
    }
}

/// The decision of `statements` (one principal's identity policies) on `request`.
pub fn evaluate(statements: &[Statement], request: &Request<'_>) -> Decision {
    let mut allowed = false;
    for statement in statements {
        let matches = statement_matches(statement, request);
        match statement.effect {
            // A Deny whose condition cannot be evaluated is taken to apply.
            Effect::Deny if matches != Some(false) => return Decision::ExplicitlyDenied,
            Effect::Allow if matches == Some(true) => allowed = true,
            _ => {}
        }
    }
    if allowed {
        Decision::Allowed
    } else {
        Decision::ImplicitlyDenied
    }
}

/// [`evaluate`] with no condition keys known: what the emulated services and the checks ask.
pub fn decide(statements: &[Statement], action: &str, resource: &str) -> Decision {
    let context = BTreeMap::new();
    evaluate(
        statements,
        &Request {
            action,
            resource,
            context: &context,
        },
    )
}

/// The text AWS services put in an AccessDenied answer, naming the principal, the action and
/// the resource ("Troubleshoot access denied error messages", IAM User Guide).
pub fn denial_message(
    principal_arn: &str,
    action: &str,
    resource: &str,
    decision: Decision,
) -> String {
    let why = match decision {
        Decision::ExplicitlyDenied => {
            "with an explicit deny in an identity-based policy".to_owned()
        }
        _ => format!("because no identity-based policy allows the {action} action"),
    };
    format!(
        "User: {principal_arn} is not authorized to perform: {action} on resource: {resource} {why}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(effect: Effect, actions: &[&str], resources: &[&str]) -> Statement {
        Statement {
            effect,
            actions: actions.iter().map(|s| (*s).to_owned()).collect(),
            resources: resources.iter().map(|s| (*s).to_owned()).collect(),
            condition: None,
        }
    }

    #[test]
    fn wildcards_follow_iam() {
        assert!(wildcard_match(
            "secret:emostream/uri-??????",
            "secret:emostream/uri-AbCdEf",
            false
        ));
        assert!(!wildcard_match(
            "secret:emostream/uri-??????",
            "secret:emostream/uri-AbCdE",
            false
        ));
        assert!(!wildcard_match(
            "secret:emostream/uri-??????",
            "secret:emostream/uri-other-AbCdEf",
            false
        ));
        assert!(wildcard_match(
            "api/live/POST/@connections/*",
            "api/live/POST/@connections/x=",
            false
        ));
        assert!(!wildcard_match(
            "api/live/POST/@connections/*",
            "api/live/DELETE/@connections/x=",
            false
        ));
        assert!(wildcard_match(
            "EXECUTE-API:manage*",
            "execute-api:ManageConnections",
            true
        ));
        assert!(!wildcard_match("Arn", "arn", false));
        assert!(wildcard_match("*", "", false));
        // A `*` in the pattern is a wildcard even where the text has a `*` too.
        assert!(wildcard_match("a*", "a*b", false));
        assert!(wildcard_match("a*b", "a*xb", false));
    }

    #[test]
    fn deny_wins_allow_is_needed() {
        let allow = statement(
            Effect::Allow,
            &["secretsmanager:GetSecretValue"],
            &["arn:aws:secretsmanager:local:000000000000:secret:db-??????"],
        );
        let arn = "arn:aws:secretsmanager:local:000000000000:secret:db-AbCdEf";
        assert_eq!(
            decide(
                std::slice::from_ref(&allow),
                "secretsmanager:GetSecretValue",
                arn
            ),
            Decision::Allowed
        );
        assert_eq!(
            decide(
                std::slice::from_ref(&allow),
                "secretsmanager:PutSecretValue",
                arn
            ),
            Decision::ImplicitlyDenied
        );
        assert_eq!(
            decide(&[], "secretsmanager:GetSecretValue", arn),
            Decision::ImplicitlyDenied
        );
        let deny = statement(Effect::Deny, &["secretsmanager:*"], &["*"]);
        assert_eq!(
            decide(&[allow, deny], "secretsmanager:GetSecretValue", arn),
            Decision::ExplicitlyDenied
        );
    }

    #[test]
    fn conditions_grant_only_when_they_hold() {
        let mut allow = statement(Effect::Allow, &["ssm:GetParameter"], &["*"]);
        allow.condition = Some(serde_json::json!({"Bool": {"aws:SecureTransport": "true"}}));
        let mut context = BTreeMap::new();
        let request = |context: &BTreeMap<String, String>| {
            evaluate(
                std::slice::from_ref(&allow),
                &Request {
                    action: "ssm:GetParameter",
                    resource: "arn:aws:ssm:local:000000000000:parameter/x",
                    context,
                },
            )
        };
        assert_eq!(request(&context), Decision::ImplicitlyDenied);
        context.insert("aws:SecureTransport".into(), "true".into());
        assert_eq!(request(&context), Decision::Allowed);
        let mut unknown = statement(Effect::Deny, &["ssm:*"], &["*"]);
        unknown.condition = Some(serde_json::json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}));
        assert_eq!(
            decide(
                &[unknown],
                "ssm:GetParameter",
                "arn:aws:ssm:local:000000000000:parameter/x"
            ),
            Decision::ExplicitlyDenied
        );
    }
}
