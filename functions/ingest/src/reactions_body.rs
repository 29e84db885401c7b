//! Turns the body of `POST /reactions` into validated reactions. Checks run cheapest first
//! (content type, size, JSON syntax, shape, fields), so an abusive body costs little, and every
//! failure is an [`ApiError`] that names what to fix.

use crate::api_error::ApiError;
use reactions::{DomainConfig, RawReaction, Reaction, Rule, ValidationError, validate_batch};
use serde_json::Value;

/// Whether a Content-Type header value declares JSON (`application/json`, any parameters).
pub fn is_json_content_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Parses and validates a reactions body: either one reaction object or
/// `{"reactions": [ ... ]}`. All reactions are stamped with `now_ms`.
pub fn parse_reactions(
    content_type: Option<&str>,
    body: &[u8],
    config: &DomainConfig,
    max_body_bytes: usize,
    now_ms: i64,
) -> Result<Vec<Reaction>, ApiError> {
    if !content_type.is_some_and(is_json_content_type) {
        return Err(ApiError::UnsupportedMediaType {
            got: content_type.map(|c| c.chars().take(100).collect()),
        });
    }
    if body.len() > max_body_bytes {
        return Err(ApiError::BodyTooLarge {
            size: body.len(),
            max: max_body_bytes,
        });
    }
    let json: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let invalid =
        |field: &str, rule: Rule| ApiError::Invalid(vec![ValidationError::new(field, rule)]);
    let Value::Object(object) = &json else {
        return Err(invalid("body", Rule::WrongType { expected: "object" }));
    };
    match object.get("reactions") {
        Some(items) => {
            if let Some(extra) = object.keys().find(|k| *k != "reactions") {
                let shown: String = extra.chars().take(40).collect();
                return Err(invalid(&shown, Rule::UnknownField));
            }
            let Value::Array(items) = items else {
                return Err(invalid("reactions", Rule::WrongType { expected: "array" }));
            };
            validate_batch(items, &config.limits, &config.catalogue, now_ms)
                .map_err(|rejected| ApiError::Invalid(rejected.errors))
        }
        None => RawReaction::from_json(&json)
            .and_then(|raw| raw.validate(&config.limits, &config.catalogue, now_ms))
            .map(|reaction| vec![reaction])
            .map_err(|e| ApiError::Invalid(vec![e])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(content_type: Option<&str>, body: &str) -> Result<Vec<Reaction>, ApiError> {
        let config = DomainConfig::from_settings(&[("MAX_BATCH_SIZE", "3")]).unwrap();
        parse_reactions(content_type, body.as_bytes(), &config, 1_000, 77)
    }

    const JSON: Option<&str> = Some("application/json");

    #[test]
    fn one_reaction_or_a_batch() {
        let one = parse(
            JSON,
            r#"{"stream_id":"m","user_id":"u","emoji":"fire","count":2}"#,
        )
        .unwrap();
        assert_eq!((one.len(), one[0].count, one[0].at_ms), (1, 2, 77));
        let batch = parse(
            Some("Application/JSON; charset=utf-8"),
            r#"{"reactions":[{"stream_id":"a","user_id":"u","emoji":"fire"},{"stream_id":"b","user_id":"u","emoji":"👏"}]}"#,
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].emoji.as_str(), "clap");
    }

    #[test]
    fn each_kind_of_mistake_has_its_error() {
        let code = |ct: Option<&str>, body: &str| parse(ct, body).unwrap_err().code();
        assert_eq!(code(None, "{}"), "unsupported_media_type");
        assert_eq!(code(Some("text/plain"), "{}"), "unsupported_media_type");
        assert_eq!(
            code(Some("application/jsonx"), "{}"),
            "unsupported_media_type"
        );
        assert_eq!(code(JSON, &"x".repeat(1_001)), "body_too_large");
        assert_eq!(code(JSON, "{\"stream_id\":"), "invalid_json");
        assert_eq!(code(JSON, ""), "invalid_json");
        assert_eq!(code(JSON, "[]"), "invalid_reactions");
        assert_eq!(code(JSON, r#"{"reactions":{}}"#), "invalid_reactions");
        assert_eq!(code(JSON, r#"{"reactions":[],"x":1}"#), "invalid_reactions");
    }

    #[test]
    fn field_errors_carry_their_paths() {
        let fields = |body| match parse(JSON, body).unwrap_err() {
            ApiError::Invalid(errors) => errors.into_iter().map(|e| e.field).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fields(r#"{"stream_id":"m","user_id":"u","emoji":"unicorn"}"#),
            ["emoji"]
        );
        assert_eq!(fields(r#"{"reactions":[]}"#), ["reactions"]);
        assert_eq!(
            fields(
                r#"{"reactions":[{"stream_id":"m","user_id":"u","emoji":"fire"},{"stream_id":"m m","user_id":"u","emoji":"fire"},{"stream_id":"m","user_id":"u","emoji":"fire","count":0}]}"#
            ),
            ["reactions[1].stream_id", "reactions[2].count"]
        );
        let r = r#"{"stream_id":"m","user_id":"u","emoji":"fire"}"#;
        assert_eq!(
            fields(&format!(r#"{{"reactions":[{r},{r},{r},{r}]}}"#)),
            ["reactions"]
        );
    }
}
