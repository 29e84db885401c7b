//! Which authorizer guards an HTTP API route: none, the IAM authorizer (the event's
//! `Auth.Authorizer: AWS_IAM`), or a JWT authorizer that the route's HttpApi declares in its
//! OpenAPI `DefinitionBody` (`security` on the path and method, the scheme's
//! `x-amazon-apigateway-authorizer` of type `jwt`). `!If` is taken the way the template's
//! conditions choose (the template turns viewer identity on and off that way), and
//! `!Ref AWS::NoValue` removes what it stands in.

use super::{StackTemplate, TemplateError, chosen, get, invalid, referenced_id, resolve_in};
use serde_yaml_ng::{Mapping, Value};

/// A JWT authorizer as the template configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtAuthorizerSpec {
    /// Its security scheme's name.
    pub name: String,
    /// `jwtConfiguration.issuer`.
    pub issuer: String,
    /// `jwtConfiguration.audience`.
    pub audience: Vec<String>,
}

/// How one route is authorized.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RouteAuth {
    #[default]
    None,
    /// SigV4-signed requests only.
    Iam,
    /// A valid bearer token only.
    Jwt(JwtAuthorizerSpec),
}

fn chosen_key<'a>(
    map: &'a Value,
    key: &str,
    template: &StackTemplate,
    resource: &str,
) -> Result<Option<&'a Value>, TemplateError> {
    match get(map, key) {
        Some(value) => chosen(value, template, resource),
        None => Ok(None),
    }
}

/// The authorizer of the route `route` (an `HttpApi` event's `Properties`, for `method` and
/// `path`): the event's `Auth.Authorizer` (`AWS_IAM` or `NONE`), else the `security` its API's
/// OpenAPI `DefinitionBody` gives the path and method, naming a JWT authorizer among the
/// body's `components.securitySchemes`.
pub fn route_auth(
    route: &str,
    event_properties: &Value,
    resources: &Mapping,
    template: &StackTemplate,
    (method, path): (&str, &str),
) -> Result<RouteAuth, TemplateError> {
    if let Some(auth) = chosen_key(event_properties, "Auth", template, route)?
        && let Some(authorizer) = chosen_key(auth, "Authorizer", template, route)?
    {
        let name = resolve_in(authorizer, template)
            .ok_or_else(|| invalid(route, "Auth.Authorizer must be a name"))?;
        return match name.as_str() {
            "NONE" => Ok(RouteAuth::None),
            "AWS_IAM" => Ok(RouteAuth::Iam),
            _ => Err(invalid(
                route,
                format!(
                    "authorizer {name}: only AWS_IAM is read from Auth; declare JWT authorizers in the API's DefinitionBody"
                ),
            )),
        };
    }
    let Some(api) = get(event_properties, "ApiId").and_then(referenced_id) else {
        return Ok(RouteAuth::None);
    };
    let Some(body) = resources
        .get(api.as_str())
        .and_then(|resource| get(resource, "Properties"))
        .and_then(|properties| get(properties, "DefinitionBody"))
    else {
        return Ok(RouteAuth::None);
    };
    let operation = get(body, "paths")
        .and_then(|paths| get(paths, path))
        .and_then(|item| get(item, &method.to_ascii_lowercase()));
    let Some(operation) = operation else {
        return Ok(RouteAuth::None);
    };
    let Some(security) = chosen_key(operation, "security", template, &api)? else {
        return Ok(RouteAuth::None);
    };
    let name = security
        .as_sequence()
        .and_then(|requirements| requirements.first())
        .and_then(Value::as_mapping)
        .and_then(|requirement| requirement.keys().next())
        .and_then(Value::as_str)
        .ok_or_else(|| {
            invalid(
                &api,
                format!("{method} {path}: security must list a scheme"),
            )
        })?
        .to_owned();
    let undefined = || invalid(&api, format!("{method} {path}: no security scheme {name}"));
    let scheme = get(body, "components")
        .and_then(|components| get(components, "securitySchemes"))
        .map(|schemes| chosen_key(schemes, &name, template, &api))
        .transpose()?
        .flatten()
        .ok_or_else(undefined)?;
    let jwt = get(scheme, "x-amazon-apigateway-authorizer")
        .filter(|authorizer| get(authorizer, "type").and_then(Value::as_str) == Some("jwt"))
        .and_then(|authorizer| get(authorizer, "jwtConfiguration"))
        .ok_or_else(|| {
            invalid(
                &api,
                format!("scheme {name}: only JWT authorizers run locally"),
            )
        })?;
    let text = |value: &Value| resolve_in(value, template).filter(|text| !text.is_empty());
    let issuer = get(jwt, "issuer").and_then(text).ok_or_else(|| {
        invalid(
            &api,
            format!("scheme {name}: jwtConfiguration.issuer is empty"),
        )
    })?;
    let audience: Vec<String> = get(jwt, "audience")
        .and_then(Value::as_sequence)
        .map(|items| items.iter().filter_map(text).collect())
        .unwrap_or_default();
    if audience.is_empty() {
        return Err(invalid(
            &api,
            format!("scheme {name}: jwtConfiguration.audience is empty"),
        ));
    }
    Ok(RouteAuth::Jwt(JwtAuthorizerSpec {
        name,
        issuer,
        audience,
    }))
}
