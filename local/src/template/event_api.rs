//! Reads the AppSync Events API of the template (`AWS::AppSync::Api` with an `EventConfig`, and
//! its `AWS::AppSync::ChannelNamespace`s) into what the local emulation needs: the auth modes
//! of connections, and of publishing and subscribing per namespace (a namespace's own modes,
//! else the API's defaults), the OPENID_CONNECT provider, and each namespace's onSubscribe
//! channel rule (its `CHANNEL_SEGMENTS`: how many segments a subscription must name, no
//! wildcard). Properties are evaluated as CloudFormation evaluates them (`!If` included);
//! resources whose `Condition` is false do not exist, as in AWS.

use super::stand_ins::DeployedStandIns;
use super::{StackTemplate, TemplateError, get, invalid, referenced_id};
use crate::event_api::{AuthType, EventApiSpec, NamespaceAuth, OpenIdConnectSpec};
use serde_json::Value as Json;
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

fn auth_modes(id: &str, value: Option<&Json>) -> Result<Option<Vec<AuthType>>, TemplateError> {
    let Some(list) = value.and_then(Json::as_array) else {
        return Ok(None);
    };
    list.iter()
        .map(|mode| {
            let name = mode["AuthType"].as_str().unwrap_or_default();
            AuthType::parse(name).ok_or_else(|| {
                invalid(
                    id,
                    format!(
                        "auth type {name:?} is not emulated locally (API_KEY, AWS_IAM, OPENID_CONNECT)"
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The segment count an onSubscribe handler's code requires (`const CHANNEL_SEGMENTS = 2;`).
fn channel_segments(code: &str) -> Option<usize> {
    let after = code.split("CHANNEL_SEGMENTS").nth(1)?;
    let value = after.trim_start().strip_prefix('=')?.trim_start();
    let digits: String = value.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The Event API among `resources`, if one exists with the parameters in force.
pub fn read(
    resources: &Mapping,
    template: &StackTemplate,
) -> Result<Option<EventApiSpec>, TemplateError> {
    let scope = template.scope(&DeployedStandIns);
    let properties = |id: &str, spec: &Value| -> Result<Json, TemplateError> {
        match get(spec, "Properties") {
            None => Ok(Json::Null),
            Some(value) => scope
                .tree(value)
                .map(|tree| tree.unwrap_or(Json::Null))
                .ok_or_else(|| invalid(id, "Properties cannot be evaluated")),
        }
    };
    let of_type = |kind: &'static str| {
        resources.iter().filter_map(move |(id, spec)| {
            let id = id.as_str()?;
            (get(spec, "Type").and_then(Value::as_str) == Some(kind)).then_some((id, spec))
        })
    };
    let mut api = None;
    for (id, spec) in of_type("AWS::AppSync::Api") {
        if !template.exists(id, spec)? {
            continue;
        }
        let properties = properties(id, spec)?;
        let config = &properties["EventConfig"];
        if config.is_null() {
            continue;
        }
        if api.is_some() {
            return Err(invalid(id, "the local stack emulates one Event API"));
        }
        let modes = |key: &str| auth_modes(id, config.get(key));
        let connection = modes("ConnectionAuthModes")?.unwrap_or_default();
        let publish = modes("DefaultPublishAuthModes")?.unwrap_or_default();
        let subscribe = modes("DefaultSubscribeAuthModes")?.unwrap_or_default();
        let openid_connect = config["AuthProviders"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["AuthType"] == "OPENID_CONNECT")
            .map(|provider| {
                let settings = &provider["OpenIDConnectConfig"];
                let text = |key: &str| settings[key].as_str().unwrap_or_default().to_owned();
                OpenIdConnectSpec {
                    issuer: text("Issuer"),
                    client_id: text("ClientId"),
                }
            });
        api = Some((
            id.to_owned(),
            connection,
            publish,
            subscribe,
            openid_connect,
        ));
    }
    let Some((api_id, connection, publish, subscribe, openid_connect)) = api else {
        return Ok(None);
    };
    let mut namespaces = BTreeMap::new();
    for (id, spec) in of_type("AWS::AppSync::ChannelNamespace") {
        if !template.exists(id, spec)? {
            continue;
        }
        let owner = get(spec, "Properties")
            .and_then(|p| get(p, "ApiId"))
            .and_then(referenced_id);
        if owner.as_deref() != Some(api_id.as_str()) {
            continue;
        }
        let properties = properties(id, spec)?;
        let name = properties["Name"]
            .as_str()
            .ok_or_else(|| invalid(id, "Name is required"))?
            .to_owned();
        let own = |key: &str| auth_modes(id, properties.get(key));
        let subscribe_segments = match properties["CodeHandlers"].as_str() {
            None => None,
            Some(code) => Some(channel_segments(code).ok_or_else(|| {
                invalid(
                    id,
                    "the local Event API runs an onSubscribe handler's channel rule only: name it `const CHANNEL_SEGMENTS = <n>;`",
                )
            })?),
        };
        namespaces.insert(
            name,
            NamespaceAuth {
                publish: own("PublishAuthModes")?.unwrap_or_else(|| publish.clone()),
                subscribe: own("SubscribeAuthModes")?.unwrap_or_else(|| subscribe.clone()),
                subscribe_segments,
            },
        );
    }
    Ok(Some(EventApiSpec {
        connection,
        namespaces,
        openid_connect,
    }))
}

#[cfg(test)]
mod tests {
    use super::channel_segments;

    #[test]
    fn the_channel_rule_is_read_from_the_handler() {
        let code = "const CHANNEL_SEGMENTS = 2;\nexport function onSubscribe(ctx) {}";
        assert_eq!(channel_segments(code), Some(2));
        assert_eq!(
            channel_segments("export function onSubscribe(ctx) {}"),
            None
        );
    }
}
