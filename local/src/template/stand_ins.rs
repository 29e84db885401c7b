//! Stand-ins for what AWS returns for a resource once it exists (its `Ref` and attributes),
//! shaped as AWS shapes them ("Return values" of each resource type in the AWS CloudFormation
//! User Guide): function names and ARNs, API ids, the Event API's hosts and channel-namespace
//! ARN, log group ARNs. The IAM checks need real-looking ARNs to match against AWS's resource
//! types, and the local stack names its emulated resources with the same values, so a policy
//! that names `${WebSocketApi}` matches the local `@connections` calls.

use super::intrinsics::{ResourceValues, Scope};
use super::{get, scalar};

/// AWS's return values, with an id made from the logical id where AWS would make one up.
pub struct DeployedStandIns;

fn pseudo(scope: &Scope<'_>, name: &str) -> String {
    scope
        .parameter(name)
        .and_then(|v| v.text())
        .unwrap_or_default()
}

fn kind<'a>(scope: &'a Scope<'_>, id: &str) -> &'a str {
    scope
        .resource(id)
        .and_then(|r| get(r, "Type"))
        .and_then(|t| t.as_str())
        .unwrap_or("")
}

/// A made-up id as AWS makes API ids: lower-case letters and digits.
fn made_up_id(logical_id: &str) -> String {
    logical_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn property(scope: &Scope<'_>, id: &str, key: &str) -> Option<String> {
    let value = scope.resource(id).and_then(|r| get(r, "Properties"))?;
    scope.text(get(value, key)?)
}

impl ResourceValues for DeployedStandIns {
    fn reference(&self, scope: &Scope<'_>, id: &str) -> Option<String> {
        let arn = |service: &str, rest: &str| {
            format!(
                "arn:{}:{service}:{}:{}:{rest}",
                pseudo(scope, "AWS::Partition"),
                pseudo(scope, "AWS::Region"),
                pseudo(scope, "AWS::AccountId")
            )
        };
        Some(match kind(scope, id) {
            "AWS::Serverless::Function" | "AWS::Lambda::Function" => {
                format!("{}-{id}", pseudo(scope, "AWS::StackName"))
            }
            "AWS::Logs::LogGroup" => property(scope, id, "LogGroupName")
                .unwrap_or_else(|| format!("/{}/{id}", pseudo(scope, "AWS::StackName"))),
            "AWS::SNS::Topic" => arn("sns", &format!("{}-{id}", pseudo(scope, "AWS::StackName"))),
            "AWS::SecretsManager::Secret" => arn(
                "secretsmanager",
                &format!("secret:{}-{id}-AbCdEf", pseudo(scope, "AWS::StackName")),
            ),
            "AWS::AppSync::Api" => arn("appsync", &format!("apis/{}", made_up_id(id))),
            _ => made_up_id(id),
        })
    }

    fn attribute(&self, scope: &Scope<'_>, id: &str, attribute: &str) -> Option<String> {
        let region = pseudo(scope, "AWS::Region");
        let arn = |service: &str, rest: &str| {
            format!(
                "arn:{}:{service}:{region}:{}:{rest}",
                pseudo(scope, "AWS::Partition"),
                pseudo(scope, "AWS::AccountId")
            )
        };
        match (kind(scope, id), attribute) {
            ("AWS::Serverless::Function" | "AWS::Lambda::Function", "Arn") => Some(arn(
                "lambda",
                &format!("function:{}", self.reference(scope, id)?),
            )),
            ("AWS::Logs::LogGroup", "Arn") => Some(arn(
                "logs",
                &format!("log-group:{}:*", self.reference(scope, id)?),
            )),
            ("AWS::AppSync::Api", "ApiId") => Some(made_up_id(id)),
            ("AWS::AppSync::Api", "ApiArn") => self.reference(scope, id),
            ("AWS::AppSync::Api", "Dns.Http") => Some(format!(
                "{}.appsync-api.{region}.amazonaws.com",
                made_up_id(id)
            )),
            ("AWS::AppSync::Api", "Dns.Realtime") => Some(format!(
                "{}.appsync-realtime-api.{region}.amazonaws.com",
                made_up_id(id)
            )),
            ("AWS::AppSync::ChannelNamespace", "ChannelNamespaceArn") => {
                let api = property(scope, id, "ApiId")?;
                let name = property(scope, id, "Name")?;
                Some(arn(
                    "appsync",
                    &format!("apis/{api}/channelNamespace/{name}"),
                ))
            }
            ("AWS::AppSync::ApiKey", "ApiKey") => Some(format!("da2-{}", made_up_id(id))),
            ("AWS::EC2::VPCEndpoint", "Id") => Some(format!("vpce-{}", made_up_id(id))),
            _ => scope
                .resource(id)
                .and_then(|r| get(r, "Properties"))
                .and_then(|p| get(p, attribute))
                .and_then(scalar),
        }
    }
}

/// The ARN prefixes of the emulated resources, made from the same stand-ins as the role
/// policies' ARNs, so a policy naming `${WebSocketApi}` matches the local `@connections` calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalArns {
    /// `arn:aws:execute-api:{region}:{account}:{http-api-id}/$default`.
    pub http_api: String,
    /// `arn:aws:execute-api:{region}:{account}:{websocket-api-id}/{stage}`.
    pub websocket_api: String,
    /// `arn:aws:appsync:{region}:{account}:apis/{api-id}/channelNamespace/`.
    pub event_namespaces: String,
    /// `arn:aws:secretsmanager:{region}:{account}:` (then `secret:{name}-AbCdEf`).
    pub secrets_manager: String,
    /// `arn:aws:ssm:{region}:{account}:` (then `parameter/{name}`).
    pub ssm: String,
}

impl super::StackTemplate {
    fn first_of(&self, kind: &str, also: impl Fn(&serde_yaml_ng::Value) -> bool) -> Option<String> {
        self.resources.iter().find_map(|(id, spec)| {
            let id = id.as_str()?;
            let matches = get(spec, "Type").and_then(|t| t.as_str()) == Some(kind)
                && self.exists(id, spec).unwrap_or(false)
                && also(spec);
            matches.then(|| id.to_owned())
        })
    }

    /// Where the local emulations' resources sit in ARN space.
    pub fn local_arns(&self) -> LocalArns {
        let scope = self.scope(&DeployedStandIns);
        let pseudo = |name| pseudo(&scope, name);
        let (partition, region, account) = (
            pseudo("AWS::Partition"),
            pseudo("AWS::Region"),
            pseudo("AWS::AccountId"),
        );
        let id = |logical: Option<String>| {
            logical
                .and_then(|l| DeployedStandIns.reference(&scope, &l))
                .unwrap_or_else(|| "local".to_owned())
        };
        let http = id(self.first_of("AWS::Serverless::HttpApi", |_| true));
        let websocket = id(self.first_of("AWS::ApiGatewayV2::Api", |spec| {
            get(spec, "Properties")
                .and_then(|p| get(p, "ProtocolType"))
                .and_then(|t| t.as_str())
                == Some("WEBSOCKET")
        }));
        let event_api = self
            .first_of("AWS::AppSync::Api", |_| true)
            .map(|l| made_up_id(&l))
            .unwrap_or_else(|| "local".to_owned());
        let stage = self
            .websocket
            .as_ref()
            .map(|w| w.stage.clone())
            .unwrap_or_default();
        LocalArns {
            http_api: format!("arn:{partition}:execute-api:{region}:{account}:{http}/$default"),
            websocket_api: format!(
                "arn:{partition}:execute-api:{region}:{account}:{websocket}/{stage}"
            ),
            event_namespaces: format!(
                "arn:{partition}:appsync:{region}:{account}:apis/{event_api}/channelNamespace/"
            ),
            secrets_manager: format!("arn:{partition}:secretsmanager:{region}:{account}:"),
            ssm: format!("arn:{partition}:ssm:{region}:{account}:"),
        }
    }
}
