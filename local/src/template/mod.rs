//! Reads `template.yaml`, the SAM template `sam deploy` ships, as CloudFormation and the SAM
//! transform read it ("Template anatomy" and "Intrinsic function reference" in the AWS
//! CloudFormation User Guide, "AWS SAM resources and properties"), into what the local stack needs:
//! the functions (binary, environment, timeout, memory), the HTTP API routes, the WebSocket API
//! routes and stage, and the Kafka event source mappings (batch size, batching window, starting
//! position, consumer group). Local runs therefore take their shape from the deployed one
//! instead of a second, drifting description. CloudFormation's short (`!Ref`) and long
//! (`Ref:`) intrinsic forms are both understood. The AppSync Events API of the `AppSyncEvents`
//! delivery mode is read in [`event_api`], conditions in [`conditions`], the `Rules` a
//! deployment must pass in [`rules`], the functions' IAM policies in [`policies`], and every
//! intrinsic function in [`intrinsics`].

mod conditions;
mod event_api;
mod http_auth;
pub mod intrinsics;
mod kafka;
pub mod policies;
mod rules;
mod schedule;
mod stand_ins;

pub use http_auth::{JwtAuthorizerSpec, RouteAuth};
pub use kafka::{KafkaMapping, StartingPosition};
pub use schedule::ScheduledEvent;
pub use stand_ins::{DeployedStandIns, LocalArns};

use serde_yaml_ng::{Mapping, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

/// Why the template cannot drive the local stack.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("template is not valid YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{resource}: {reason}")]
    Invalid { resource: String, reason: String },
    /// A `Rules` assertion fails: CloudFormation refuses these parameters before creating
    /// anything, with the assertion's description.
    #[error("rule {rule} refuses these parameters: {message}")]
    Rule { rule: String, message: String },
}

fn invalid(resource: &str, reason: impl Into<String>) -> TemplateError {
    TemplateError::Invalid {
        resource: resource.to_owned(),
        reason: reason.into(),
    }
}

/// An environment variable's value as written in the template: a literal, or an intrinsic
/// function the local stack resolves (or asks to be overridden).
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateValue {
    Literal(String),
    Expression(Value),
}

/// One `AWS::Serverless::Function`.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    /// The logical id, e.g. `IngestFunction`.
    pub logical_id: String,
    /// The cargo binary (`Metadata.BuildProperties.Binary`), e.g. `ingest`.
    pub binary: String,
    /// Globals' variables overlaid with the function's own.
    pub environment: BTreeMap<String, TemplateValue>,
    pub timeout: Duration,
    pub memory_mb: u32,
}

/// One HTTP API route (`Events` of type `HttpApi`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    /// Upper-case method, or `ANY`.
    pub method: String,
    /// Path with `{name}` parameters, e.g. `/streams/{id}/windows`.
    pub path: String,
    /// Logical id of the function.
    pub function: String,
    /// Its authorizer (`Auth.Authorizer`): none, `AWS_IAM`, or one of the API's JWT authorizers.
    pub auth: RouteAuth,
}

/// The WebSocket API (`AWS::ApiGatewayV2::Api` with `ProtocolType: WEBSOCKET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketSpec {
    /// E.g. `$request.body.action`.
    pub route_selection: String,
    /// Route key (`$connect`, `$disconnect`, `$default`, or an action) to function logical id.
    pub routes: BTreeMap<String, String>,
    /// The stage name, as in the management endpoint's path.
    pub stage: String,
}

/// Everything the local stack reads from the template.
#[derive(Debug, Clone, PartialEq)]
pub struct StackTemplate {
    /// Parameter defaults (`None` when a parameter has no default).
    pub parameters: BTreeMap<String, Option<String>>,
    pub functions: BTreeMap<String, FunctionSpec>,
    pub http_routes: Vec<HttpRoute>,
    pub websocket: Option<WebSocketSpec>,
    pub kafka_mappings: Vec<KafkaMapping>,
    pub schedules: Vec<ScheduledEvent>,
    /// The conditions known locally, with the parameters in force.
    pub conditions: BTreeMap<String, bool>,
    /// The AppSync Events API, when the parameters create one (`Delivery: AppSyncEvents`).
    pub event_api: Option<crate::event_api::EventApiSpec>,
    /// Parameters of a list type (`CommaDelimitedList`): their `Ref` is a list.
    pub list_parameters: BTreeSet<String>,
    /// The template's `Resources` as written, for what is read on demand (IAM policies).
    pub resources: Mapping,
}

/// The name and argument of an intrinsic function in either form (`!Ref X` or `{Ref: X}`).
pub fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let name = if name == "Ref" {
                "Ref".to_owned()
            } else {
                format!("Fn::{name}")
            };
            Some((name, &tagged.value))
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, inner) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key.starts_with("Fn::")).then(|| (key.to_owned(), inner))
        }
        _ => None,
    }
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'a>(map: &'a Value, key: &str) -> Option<&'a Value> {
    map.as_mapping()?.get(key)
}

fn path<'a>(value: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().try_fold(value, |v, k| get(v, k))
}

/// The logical id a value refers to: `!Ref X`, `!GetAtt X.Arn`, or `integrations/${X}`.
fn referenced_id(value: &Value) -> Option<String> {
    let (name, argument) = intrinsic(value)?;
    match name.as_str() {
        "Ref" => scalar(argument),
        "Fn::GetAtt" => match argument {
            Value::String(s) => s.split('.').next().map(str::to_owned),
            Value::Sequence(parts) => parts.first().and_then(scalar),
            _ => None,
        },
        "Fn::Sub" => {
            // The first substitution that is not a pseudo parameter (`${AWS::Region}`).
            let text = scalar(argument)?;
            text.split("${")
                .skip(1)
                .filter_map(|rest| rest.split('}').next())
                .find(|name| !name.starts_with("AWS::"))
                .and_then(|name| name.split('.').next())
                .map(str::to_owned)
        }
        _ => None,
    }
}

/// Values of the pseudo parameters locally; a parameter of the same name (say
/// `AWS::StackName`) given as an override wins.
pub(crate) fn pseudo_parameter(name: &str) -> Option<&'static str> {
    match name {
        "AWS::Region" => Some("local"),
        "AWS::AccountId" => Some("000000000000"),
        "AWS::Partition" => Some("aws"),
        "AWS::StackName" => Some("emostream-local"),
        "AWS::URLSuffix" => Some("amazonaws.com"),
        _ => None,
    }
}

/// Resolves what can be known before AWS creates anything: a literal, `!Ref` to a parameter,
/// `!Sub`, `!Join`, `!Split` and `!Select` over parameters. `None` for anything only AWS can
/// resolve (resource attributes, `{{resolve:...}}` dynamic references).
pub fn resolve(value: &Value, parameters: &BTreeMap<String, Option<String>>) -> Option<String> {
    let none = BTreeMap::new();
    let lists = BTreeSet::new();
    let scope = intrinsics::Scope {
        parameters,
        list_parameters: &lists,
        conditions: &none,
        resources: None,
        values: &intrinsics::OnlyAwsKnows,
    };
    scope.text(value)
}

/// [`resolve`] with the template's conditions, list parameters and resources in scope (so
/// `!If` takes the branch AWS takes); `None` where that branch is `AWS::NoValue` or cannot be
/// known locally.
pub fn resolve_in(value: &Value, template: &StackTemplate) -> Option<String> {
    template.scope(&intrinsics::OnlyAwsKnows).text(value)
}

fn is_no_value(value: &Value) -> bool {
    intrinsic(value)
        .is_some_and(|(name, argument)| name == "Ref" && argument.as_str() == Some("AWS::NoValue"))
}

/// `value` with every `!If` taken as the conditions choose; `None` where `AWS::NoValue` is chosen.
pub fn chosen<'a>(
    value: &'a Value,
    template: &StackTemplate,
    resource: &str,
) -> Result<Option<&'a Value>, TemplateError> {
    if is_no_value(value) {
        return Ok(None);
    }
    match intrinsic(value) {
        Some((name, argument)) if name == "Fn::If" => {
            let Some([condition, then, otherwise]) = argument.as_sequence().map(Vec::as_slice)
            else {
                return Err(invalid(resource, "!If takes [condition, then, else]"));
            };
            let name = condition.as_str().unwrap_or_default();
            let Some(&truth) = template.conditions.get(name) else {
                return Err(invalid(
                    resource,
                    format!("condition {name} cannot be known locally"),
                ));
            };
            chosen(if truth { then } else { otherwise }, template, resource)
        }
        _ => Ok(Some(value)),
    }
}

fn environment(properties: Option<&Value>) -> BTreeMap<String, TemplateValue> {
    let mut variables = BTreeMap::new();
    if let Some(Value::Mapping(map)) =
        properties.and_then(|p| path(p, &["Environment", "Variables"]))
    {
        for (name, value) in map {
            if let Some(name) = name.as_str() {
                let value = match scalar(value) {
                    Some(literal) => TemplateValue::Literal(literal),
                    None => TemplateValue::Expression(value.clone()),
                };
                variables.insert(name.to_owned(), value);
            }
        }
    }
    variables
}

/// The parameters the local stack deploys with unless told otherwise, each because the local
/// world differs from an AWS account: its broker is a self-managed, plaintext cluster; its page
/// is served from whatever loopback port a run picks (`*` is the one place a wildcard origin is
/// used); without the demo issuer its viewers are anonymous, which the template accepts only
/// when asked to; the emulated Event API's key needs an expiry like AppSync's.
pub fn local_parameters(overrides: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let a_year_from_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 365 * 24 * 3600;
    let mut parameters = BTreeMap::from([
        ("KafkaEventSource".to_owned(), "SelfManagedKafka".to_owned()),
        // A stand-in: the stack gives the functions its broker's address itself.
        (
            "KafkaBootstrapServers".to_owned(),
            "127.0.0.1:9092".to_owned(),
        ),
        ("SelfManagedKafkaAuth".to_owned(), "PLAINTEXT".to_owned()),
        ("AllowedOrigins".to_owned(), "*".to_owned()),
        ("AllowAnonymousReactions".to_owned(), "true".to_owned()),
        ("EventApiKeyExpires".to_owned(), a_year_from_now.to_string()),
    ]);
    parameters.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
    parameters
}

impl StackTemplate {
    /// The template as the local stack runs it: [`local_parameters`] under `overrides`.
    pub fn load_local(
        path: &Path,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, TemplateError> {
        Self::load(path, &local_parameters(overrides))
    }

    /// What the template's expressions may refer to, with `values` for the resources'.
    pub fn scope<'a>(
        &'a self,
        values: &'a dyn intrinsics::ResourceValues,
    ) -> intrinsics::Scope<'a> {
        intrinsics::Scope {
            parameters: &self.parameters,
            list_parameters: &self.list_parameters,
            conditions: &self.conditions,
            resources: Some(&self.resources),
            values,
        }
    }

    /// Reads and interprets the template at `path`, with parameter `overrides` (like
    /// `sam deploy --parameter-overrides`) in place of the defaults.
    pub fn load(path: &Path, overrides: &BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, overrides)
    }

    /// Interprets template text.
    pub fn parse(text: &str, overrides: &BTreeMap<String, String>) -> Result<Self, TemplateError> {
        let root: Value = serde_yaml_ng::from_str(text)?;
        let empty = Value::Mapping(Mapping::new());
        let list_parameters: BTreeSet<String> = get(&root, "Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter(|(_, spec)| {
                get(spec, "Type")
                    .and_then(Value::as_str)
                    .is_some_and(|kind| kind == "CommaDelimitedList" || kind.starts_with("List<"))
            })
            .filter_map(|(name, _)| name.as_str().map(str::to_owned))
            .collect();
        let mut parameters: BTreeMap<String, Option<String>> = get(&root, "Parameters")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
            .filter_map(|(name, spec)| {
                Some((
                    name.as_str()?.to_owned(),
                    get(spec, "Default").and_then(scalar),
                ))
            })
            .collect();
        for (name, value) in overrides {
            parameters.insert(name.clone(), Some(value.clone()));
        }
        let globals = path(&root, &["Globals", "Function"]).unwrap_or(&empty);
        let resources = get(&root, "Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| invalid("Resources", "missing"))?;
        let resource_type = |spec: &Value| {
            get(spec, "Type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };

        let mut template = StackTemplate {
            parameters,
            functions: BTreeMap::new(),
            http_routes: Vec::new(),
            websocket: None,
            kafka_mappings: Vec::new(),
            schedules: Vec::new(),
            conditions: BTreeMap::new(),
            event_api: None,
            list_parameters,
            resources: resources.clone(),
        };
        template.conditions = conditions::evaluate(
            get(&root, "Conditions"),
            &template.scope(&intrinsics::OnlyAwsKnows),
        );
        rules::check(get(&root, "Rules"), &template)?;
        template.event_api = event_api::read(resources, &template)?;
        let mut integrations: BTreeMap<String, String> = BTreeMap::new();
        let mut route_targets: Vec<(String, String)> = Vec::new();
        let mut stage = None;

        for (id, spec) in resources {
            let id = id.as_str().unwrap_or_default().to_owned();
            if !template.exists(&id, spec)? {
                continue;
            }
            let properties = get(spec, "Properties");
            match resource_type(spec).as_str() {
                "AWS::Serverless::Function" => {
                    let function = template.read_function(&id, spec, globals)?;
                    for (event_id, event) in properties
                        .and_then(|p| get(p, "Events"))
                        .and_then(Value::as_mapping)
                        .into_iter()
                        .flatten()
                    {
                        let event_id = event_id.as_str().unwrap_or_default();
                        let event_properties = get(event, "Properties").unwrap_or(&empty);
                        match get(event, "Type").and_then(Value::as_str) {
                            Some("HttpApi") => {
                                let text = |key| get(event_properties, key).and_then(scalar);
                                let method = text("Method")
                                    .unwrap_or_else(|| "ANY".into())
                                    .to_ascii_uppercase();
                                let path = text("Path").unwrap_or_else(|| "/{proxy+}".into());
                                let auth = http_auth::route_auth(
                                    &format!("{id}.{event_id}"),
                                    event_properties,
                                    resources,
                                    &template,
                                    (&method, &path),
                                )?;
                                template.http_routes.push(HttpRoute {
                                    method,
                                    path,
                                    function: id.clone(),
                                    auth,
                                });
                            }
                            Some(kind @ ("MSK" | "SelfManagedKafka")) => {
                                let mapping = template.read_mapping(
                                    &format!("{id}.{event_id}"),
                                    &id,
                                    kind == "MSK",
                                    event_properties,
                                )?;
                                template.kafka_mappings.push(mapping);
                            }
                            Some("Schedule") => template.schedules.push(schedule::read_schedule(
                                &format!("{id}.{event_id}"),
                                &id,
                                event_properties,
                            )?),
                            _ => {}
                        }
                    }
                    template.functions.insert(id, function);
                }
                "AWS::Lambda::EventSourceMapping" => {
                    let properties = properties.unwrap_or(&empty);
                    let function = get(properties, "FunctionName")
                        .and_then(|f| referenced_id(f).or_else(|| scalar(f)))
                        .ok_or_else(|| invalid(&id, "FunctionName must name a function"))?;
                    let msk = get(properties, "SelfManagedEventSource").is_none();
                    let mapping = template.read_mapping(&id, &function, msk, properties)?;
                    template.kafka_mappings.push(mapping);
                }
                "AWS::ApiGatewayV2::Api"
                    if properties
                        .and_then(|p| get(p, "ProtocolType"))
                        .and_then(Value::as_str)
                        == Some("WEBSOCKET") =>
                {
                    let selection = properties
                        .and_then(|p| get(p, "RouteSelectionExpression"))
                        .and_then(scalar)
                        .unwrap_or_else(|| "$request.body.action".into());
                    template.websocket = Some(WebSocketSpec {
                        route_selection: selection,
                        routes: BTreeMap::new(),
                        stage: String::new(),
                    });
                }
                "AWS::ApiGatewayV2::Integration" => {
                    if let Some(function) = properties
                        .and_then(|p| get(p, "IntegrationUri"))
                        .and_then(referenced_id)
                    {
                        integrations.insert(id.clone(), function);
                    }
                }
                "AWS::ApiGatewayV2::Route" => {
                    let key = properties
                        .and_then(|p| get(p, "RouteKey"))
                        .and_then(scalar)
                        .ok_or_else(|| invalid(&id, "RouteKey is required"))?;
                    let target = properties
                        .and_then(|p| get(p, "Target"))
                        .and_then(referenced_id)
                        .ok_or_else(|| {
                            invalid(&id, "Target must be integrations/${Integration}")
                        })?;
                    route_targets.push((key, target));
                }
                "AWS::ApiGatewayV2::Stage" => {
                    stage = properties
                        .and_then(|p| get(p, "StageName"))
                        .and_then(|s| resolve(s, &template.parameters));
                }
                _ => {}
            }
        }
        if let Some(websocket) = template.websocket.as_mut() {
            websocket.stage = stage.unwrap_or_else(|| "$default".into());
            for (key, integration) in route_targets {
                let function = integrations.get(&integration).ok_or_else(|| {
                    invalid(&key, format!("integration {integration} names no function"))
                })?;
                websocket.routes.insert(key, function.clone());
            }
        }
        template.check_references()?;
        Ok(template)
    }

    /// Whether a resource exists with these parameters: its `Condition` (if any) holds.
    pub fn exists(&self, id: &str, spec: &Value) -> Result<bool, TemplateError> {
        match get(spec, "Condition").and_then(scalar) {
            None => Ok(true),
            Some(name) => self.conditions.get(&name).copied().ok_or_else(|| {
                invalid(id, format!("condition {name} cannot be evaluated locally"))
            }),
        }
    }

    fn read_function(
        &self,
        id: &str,
        spec: &Value,
        globals: &Value,
    ) -> Result<FunctionSpec, TemplateError> {
        let properties = get(spec, "Properties");
        let binary = path(spec, &["Metadata", "BuildProperties", "Binary"])
            .and_then(scalar)
            .ok_or_else(|| invalid(id, "Metadata.BuildProperties.Binary names no binary"))?;
        let mut environment = environment(Some(globals));
        environment.extend(self::environment(properties));
        let number = |key: &str, default: u64| -> u64 {
            properties
                .and_then(|p| get(p, key))
                .or_else(|| get(globals, key))
                .and_then(|v| resolve(v, &self.parameters))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Ok(FunctionSpec {
            logical_id: id.to_owned(),
            binary,
            environment,
            timeout: Duration::from_secs(number("Timeout", 3)),
            memory_mb: number("MemorySize", 128) as u32,
        })
    }

    fn check_references(&self) -> Result<(), TemplateError> {
        let known_function = |id: &str, user: &str| {
            if self.functions.contains_key(id) {
                Ok(())
            } else {
                Err(invalid(
                    user,
                    format!("refers to {id}, which is not a function"),
                ))
            }
        };
        for mapping in &self.kafka_mappings {
            known_function(&mapping.function, &mapping.logical_id)?;
        }
        if let Some(websocket) = &self.websocket {
            for (key, function) in &websocket.routes {
                known_function(function, key)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
