//! Who signs the requests the local stack answers. Lambda hands each function temporary
//! credentials of its execution role; the local stack does the same, one key pair per function,
//! made at start-up, whose policies are the role's statements in template.yaml. The operator
//! (the local credentials that `emostream-local`'s admin client, the tools and the tests sign
//! with) stands for an administrator's own credentials and may do everything.

use super::{Decision, decide, denial_message};
use crate::iam::sigv4::{SignatureError, SignedRequest, verify};
use crate::lambda::function_process::local_credentials;
use crate::template::policies::Statement;
use crate::template::{DeployedStandIns, StackTemplate, TemplateError};
use aws_credential_types::Credentials;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The operator's access key id.
pub const OPERATOR: &str = crate::lambda::function_process::LOCAL_CREDENTIALS.0;

/// One identity and its policies.
#[derive(Debug)]
pub struct Principal {
    /// As AWS names it in a denial (`arn:aws:sts::...:assumed-role/{role}/{session}`).
    pub arn: String,
    pub credentials: Credentials,
    /// The identity policies' statements; `None` for the operator, who is allowed everything.
    pub statements: Option<Vec<Statement>>,
}

impl Principal {
    /// IAM's decision on `action` over `resource` for this principal.
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        match &self.statements {
            None => Decision::Allowed,
            Some(statements) => decide(statements, action, resource),
        }
    }

    /// `Ok` when allowed, else AWS's denial message (naming the action and the resource).
    pub fn check(&self, action: &str, resource: &str) -> Result<(), String> {
        match self.decide(action, resource) {
            Decision::Allowed => Ok(()),
            decision => {
                let message = denial_message(&self.arn, action, resource, decision);
                tracing::warn!(principal = %self.arn, action, resource, "access denied");
                Err(message)
            }
        }
    }
}

/// Every principal the local stack knows, by access key id.
#[derive(Debug)]
pub struct Principals {
    by_key: BTreeMap<String, Arc<Principal>>,
    by_function: BTreeMap<String, Arc<Principal>>,
}

fn operator() -> Arc<Principal> {
    Arc::new(Principal {
        arn: format!(
            "arn:aws:iam::{}:user/{OPERATOR}",
            crate::iam::LOCAL_ACCOUNT_ID
        ),
        credentials: local_credentials(),
        statements: None,
    })
}

fn random_secret() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut rng = rand::rng();
    (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Principals {
    /// Only the operator: for an emulation started by itself, outside a stack.
    pub fn operator_only() -> Arc<Self> {
        let operator = operator();
        Arc::new(Self {
            by_key: BTreeMap::from([(OPERATOR.to_owned(), operator)]),
            by_function: BTreeMap::new(),
        })
    }

    /// The operator and one principal per function of `template`, with its execution role's
    /// statements as the template's parameters make them.
    pub fn for_template(template: &StackTemplate) -> Result<Arc<Self>, TemplateError> {
        let roles = template.function_roles(&DeployedStandIns)?;
        let stack = template
            .scope(&DeployedStandIns)
            .parameter("AWS::StackName")
            .and_then(|v| v.text())
            .unwrap_or_default();
        let operator = operator();
        let mut by_key = BTreeMap::from([(OPERATOR.to_owned(), operator)]);
        let mut by_function = BTreeMap::new();
        for (function, role) in roles {
            let key = format!("ASIALOCAL{}", function.to_ascii_uppercase());
            let principal = Arc::new(Principal {
                arn: format!(
                    "arn:aws:sts::{}:assumed-role/{stack}-{function}Role/{stack}-{function}",
                    crate::iam::LOCAL_ACCOUNT_ID
                ),
                credentials: Credentials::new(
                    key.clone(),
                    random_secret(),
                    Some(format!("local-session-{function}")),
                    None,
                    "local-role",
                ),
                statements: Some(role.statements),
            });
            by_key.insert(key, Arc::clone(&principal));
            by_function.insert(function, principal);
        }
        Ok(Arc::new(Self {
            by_key,
            by_function,
        }))
    }

    /// The principal of a function's execution role.
    pub fn function(&self, logical_id: &str) -> Option<Arc<Principal>> {
        self.by_function.get(logical_id).cloned()
    }

    /// The environment Lambda gives a function: its role's temporary credentials.
    pub fn function_environment(&self, logical_id: &str) -> Vec<(String, String)> {
        let Some(principal) = self.function(logical_id) else {
            return Vec::new();
        };
        let credentials = &principal.credentials;
        vec![
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                credentials.access_key_id().to_owned(),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                credentials.secret_access_key().to_owned(),
            ),
            (
                "AWS_SESSION_TOKEN".to_owned(),
                credentials.session_token().unwrap_or_default().to_owned(),
            ),
        ]
    }

    /// The principal who signed `request` for `service`, once its signature checks out.
    pub fn authenticate(
        &self,
        request: &SignedRequest<'_>,
        service: &'static str,
    ) -> Result<Arc<Principal>, SignatureError> {
        let key = request
            .headers
            .iter()
            .find(|(name, _)| name == "authorization")
            .and_then(|(_, value)| value.split("Credential=").nth(1))
            .and_then(|rest| rest.split('/').next())
            .ok_or(SignatureError::Missing)?;
        let principal = self
            .by_key
            .get(key)
            .ok_or_else(|| SignatureError::UnknownKey(key.to_owned()))?;
        verify(request, &principal.credentials, service)?;
        Ok(Arc::clone(principal))
    }
}
