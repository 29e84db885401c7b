//! Reads the AppSync Events API of the template (`AWS::AppSync::Api` with an `EventConfig`, and
//! its `AWS::AppSync::ChannelNamespace`s) into what the local emulation needs: the auth modes
//! of connections, and of publishing and subscribing per namespace (a namespace's own modes,
//! else the API's defaults). Resources whose `Condition` is false do not exist, as in AWS.

use super::{TemplateError, get, invalid, referenced_id, scalar};
use crate::event_api::{AuthType, EventApiSpec, NamespaceAuth};
use serde_yaml_ng::{Mapping, Value};
use std::collections::BTreeMap;

fn auth_modes(id: &str, value: Option<&Value>) -> Result<Option<Vec<AuthType>>, TemplateError> {
    let Some(list) = value.and_then(Value::as_sequence) else {
        return Ok(None);
    };
    list.iter()
        .map(|mode| {
            let name = get(mode, "AuthType").and_then(scalar).unwrap_or_default();
            AuthType::parse(&name).ok_or_else(|| {
                invalid(
                    id,
                    format!("auth type {name:?} is not emulated locally (API_KEY, AWS_IAM)"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The Event API among `resources`, if one exists with the `conditions` in force.
pub fn read(
    resources: &Mapping,
    template: &super::StackTemplate,
) -> Result<Option<EventApiSpec>, TemplateError> {
    let exists = |id: &str, spec: &Value| template.exists(id, spec);
    let of_type = |kind: &'static str| {
        resources.iter().filter_map(move |(id, spec)| {
            let id = id.as_str()?;
            (get(spec, "Type").and_then(Value::as_str) == Some(kind)).then_some((id, spec))
        })
    };
    let mut api = None;
    for (id, spec) in of_type("AWS::AppSync::Api") {
        if !exists(id, spec)? {
            continue;
        }
        let Some(config) = get(spec, "Properties").and_then(|p| get(p, "EventConfig")) else {
            continue;
        };
        if api.is_some() {
            return Err(invalid(id, "the local stack emulates one Event API"));
        }
        let modes = |key| auth_modes(id, get(config, key));
        let connection = modes("ConnectionAuthModes")?.unwrap_or_default();
        let publish = modes("DefaultPublishAuthModes")?.unwrap_or_default();
        let subscribe = modes("DefaultSubscribeAuthModes")?.unwrap_or_default();
        api = Some((id.to_owned(), connection, publish, subscribe));
    }
    let Some((api_id, connection, publish, subscribe)) = api else {
        return Ok(None);
    };
    let mut namespaces = BTreeMap::new();
    for (id, spec) in of_type("AWS::AppSync::ChannelNamespace") {
        if !exists(id, spec)? {
            continue;
        }
        let properties = get(spec, "Properties");
        let owner = properties
            .and_then(|p| get(p, "ApiId"))
            .and_then(referenced_id);
        if owner.as_deref() != Some(api_id.as_str()) {
            continue;
        }
        let name = properties
            .and_then(|p| get(p, "Name"))
            .and_then(scalar)
            .ok_or_else(|| invalid(id, "Name is required"))?;
        let own = |key| auth_modes(id, properties.and_then(|p| get(p, key)));
        namespaces.insert(
            name,
            NamespaceAuth {
                publish: own("PublishAuthModes")?.unwrap_or_else(|| publish.clone()),
                subscribe: own("SubscribeAuthModes")?.unwrap_or_else(|| subscribe.clone()),
            },
        );
    }
    Ok(Some(EventApiSpec {
        connection,
        namespaces,
    }))
}
