//! The IAM policies of each function's execution role, as SAM builds the role from the
//! function's `Policies` ("AWS::Serverless::Function", property `Policies`, in the AWS SAM
//! Developer Guide): inline policy documents (`Statement`), and AWS managed policies by name or
//! ARN. SAM also attaches `AWSLambdaBasicExecutionRole` to every role and
//! `AWSLambdaVPCAccessExecutionRole` to a function with a `VpcConfig` property (whatever its
//! `!If` resolves to: the transform runs before conditions are known). Statements come out with
//! every intrinsic evaluated for the parameters in force ([`super::intrinsics`]) and resource
//! values from a [`ResourceValues`], so the same reading serves the IAM reference check and the
//! local stack's enforcement.

use super::intrinsics::ResourceValues;
use super::{StackTemplate, TemplateError, get, invalid};
use serde_json::Value as Json;
use std::collections::BTreeMap;

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One statement of an identity policy, evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub effect: Effect,
    /// `service:Action` names, possibly with `*` and `?`.
    pub actions: Vec<String>,
    /// Resource ARNs, possibly with `*` and `?`.
    pub resources: Vec<String>,
    /// The `Condition` block as written, when there is one.
    pub condition: Option<Json>,
}

/// A function's execution role.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FunctionRole {
    /// The inline statements of every policy document.
    pub statements: Vec<Statement>,
    /// AWS managed policies attached, as written (a name or an ARN).
    pub managed_policies: Vec<String>,
}

/// The managed policy SAM attaches to every function's role.
pub const BASIC_EXECUTION: &str =
    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole";
/// The managed policy SAM attaches to a function with a `VpcConfig` property.
pub const VPC_ACCESS: &str = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole";

fn strings(value: Option<&Json>) -> Vec<String> {
    match value {
        Some(Json::String(s)) => vec![s.clone()],
        Some(Json::Array(items)) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn statement(function: &str, value: &Json) -> Result<Statement, TemplateError> {
    for unsupported in ["NotAction", "NotResource", "NotPrincipal", "Principal"] {
        if value.get(unsupported).is_some() {
            return Err(invalid(
                function,
                format!("{unsupported} in a role policy is not read here"),
            ));
        }
    }
    let effect = match value.get("Effect").and_then(Json::as_str) {
        Some("Allow") => Effect::Allow,
        Some("Deny") => Effect::Deny,
        other => {
            return Err(invalid(
                function,
                format!("a statement's Effect must be Allow or Deny, not {other:?}"),
            ));
        }
    };
    let actions = strings(value.get("Action"));
    let resources = strings(value.get("Resource"));
    if actions.is_empty() || resources.is_empty() {
        return Err(invalid(
            function,
            "every statement needs Action and Resource",
        ));
    }
    Ok(Statement {
        effect,
        actions,
        resources,
        condition: value.get("Condition").cloned(),
    })
}

impl StackTemplate {
    /// Each function's execution role with the parameters in force, by logical id. A policy
    /// that cannot be evaluated (a value only AWS knows that `values` does not stand in for) is
    /// an error naming the function.
    pub fn function_roles(
        &self,
        values: &dyn ResourceValues,
    ) -> Result<BTreeMap<String, FunctionRole>, TemplateError> {
        let scope = self.scope(values);
        let mut roles = BTreeMap::new();
        for id in self.functions.keys() {
            let properties = self
                .resources
                .get(id.as_str())
                .and_then(|r| get(r, "Properties"));
            let mut role = FunctionRole {
                managed_policies: vec![BASIC_EXECUTION.to_owned()],
                ..FunctionRole::default()
            };
            // SAM decides before CloudFormation resolves `!If`: a `VpcConfig` that is written at
            // all attaches the policy, even when its `!If` turns out `AWS::NoValue`.
            if properties.and_then(|p| get(p, "VpcConfig")).is_some() {
                role.managed_policies.push(VPC_ACCESS.to_owned());
            }
            let policies = match properties.and_then(|p| get(p, "Policies")) {
                None => None,
                Some(policies) => scope
                    .tree(policies)
                    .ok_or_else(|| invalid(id, "Policies cannot be evaluated"))?,
            };
            let policies = match policies {
                None => Vec::new(),
                Some(Json::Array(items)) => items,
                Some(other) => vec![other],
            };
            for policy in policies {
                match policy {
                    Json::String(managed) => role.managed_policies.push(managed),
                    Json::Object(document) if document.contains_key("Statement") => {
                        let statements = match &document["Statement"] {
                            Json::Array(items) => items.clone(),
                            other => vec![other.clone()],
                        };
                        for item in &statements {
                            role.statements.push(statement(id, item)?);
                        }
                    }
                    other => {
                        return Err(invalid(
                            id,
                            format!("policy {other} is neither a managed policy nor a document"),
                        ));
                    }
                }
            }
            roles.insert(id.clone(), role);
        }
        Ok(roles)
    }
}
