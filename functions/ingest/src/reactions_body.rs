//! Turns the body of `POST /reactions` into validated reactions. Checks run cheapest first
//! (content type, size, JSON syntax, shape, fields), so an abusive body costs little, and every
//! failure is an [`ApiError`] that names what to fix.

use crate::api_error::ApiError;
use reactions::{
    Catalogues, DomainConfig, RawReaction, Reaction, Rule, StreamId, UserId, ValidationError,
    validate_batch,
};
use serde_json::Value;

/// Whether a Content-Type header value declares JSON (`application/json`, any parameters).
pub fn is_json_content_type(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// A reactions body that passed the cheap checks: either one reaction object or the items of
/// `{"reactions": [ ... ]}`, not yet validated field by field.
#[derive(Debug, Clone, PartialEq)]
pub enum ReactionsBody {
    One(Value),
    Batch(Vec<Value>),
}

/// Checks content type, size, JSON syntax and the body's shape.
pub fn read_body(
    content_type: Option<&str>,
    body: &[u8],
    max_body_bytes: usize,
) -> Result<ReactionsBody, ApiError> {
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
    let Value::Object(mut object) = json else {
        return Err(invalid("body", Rule::WrongType { expected: "object" }));
    };
    match object.remove("reactions") {
        Some(items) => {
            if let Some(extra) = object.keys().next() {
                let shown: String = extra.chars().take(40).collect();
                return Err(invalid(&shown, Rule::UnknownField));
            }
            let Value::Array(items) = items else {
                return Err(invalid("reactions", Rule::WrongType { expected: "array" }));
            };
            Ok(ReactionsBody::Batch(items))
        }
        None => Ok(ReactionsBody::One(Value::Object(object))),
    }
}

impl ReactionsBody {
    /// The distinct well-formed stream ids the body names, in order of first appearance: what
    /// must be looked up in the registry before the reactions can be validated. Ill-formed ids
    /// are left for validation to name.
    pub fn stream_ids(&self) -> Vec<StreamId> {
        let items = match self {
            ReactionsBody::One(item) => std::slice::from_ref(item),
            ReactionsBody::Batch(items) => items.as_slice(),
        };
        let mut ids: Vec<StreamId> = Vec::new();
        for item in items {
            let Some(Value::String(text)) = item.get("stream_id") else {
                continue;
            };
            if ids.iter().any(|id| id.as_str() == text) {
                continue;
            }
            if let Ok(id) = StreamId::parse("stream_id", text) {
                ids.push(id);
            }
        }
        ids
    }

    /// Makes every reaction the viewer's whose verified token has the subject `subject`: its
    /// id is [`UserId::from_subject`] (the subject itself when that is a valid id). A missing
    /// `user_id` becomes that id, the id or the subject as given is replaced by it (a client
    /// may send either), and anything else refuses the whole body (one viewer cannot tap as
    /// another).
    pub fn bind_viewer(&mut self, subject: &str) -> Result<(), ApiError> {
        let id = UserId::from_subject(subject);
        let viewer = id.as_str();
        let (items, batch) = match self {
            ReactionsBody::One(item) => (std::slice::from_mut(item), false),
            ReactionsBody::Batch(items) => (items.as_mut_slice(), true),
        };
        for (index, item) in items.iter_mut().enumerate() {
            let Value::Object(fields) = item else {
                continue; // validation names the item that is not an object
            };
            match fields.get("user_id") {
                None => {
                    fields.insert("user_id".to_owned(), Value::from(viewer));
                }
                Some(Value::String(given)) if given == viewer => {}
                Some(Value::String(given)) if given == subject => {
                    fields.insert("user_id".to_owned(), Value::from(viewer));
                }
                Some(given) => {
                    let given = match given {
                        Value::String(text) => text.chars().take(128).collect(),
                        other => other.to_string().chars().take(128).collect(),
                    };
                    return Err(ApiError::ViewerMismatch {
                        field: if batch {
                            format!("reactions[{index}].user_id")
                        } else {
                            "user_id".to_owned()
                        },
                        given,
                        viewer: viewer.to_owned(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Validates every reaction against its stream's catalogue and stamps it with `now_ms`.
    pub fn validate(
        &self,
        config: &DomainConfig,
        catalogues: &impl Catalogues,
        now_ms: i64,
    ) -> Result<Vec<Reaction>, ApiError> {
        match self {
            ReactionsBody::Batch(items) => {
                validate_batch(items, &config.limits, catalogues, now_ms)
                    .map_err(|rejected| ApiError::Invalid(rejected.errors))
            }
            ReactionsBody::One(item) => RawReaction::from_json(item)
                .and_then(|raw| raw.validate(&config.limits, catalogues, now_ms))
                .map(|reaction| vec![reaction])
                .map_err(|e| ApiError::Invalid(vec![e])),
        }
    }
}

/// Parses and validates a reactions body against one catalogue for every stream (the
/// configured one): [`read_body`] then [`ReactionsBody::validate`].
pub fn parse_reactions(
    content_type: Option<&str>,
    body: &[u8],
    config: &DomainConfig,
    max_body_bytes: usize,
    now_ms: i64,
) -> Result<Vec<Reaction>, ApiError> {
    read_body(content_type, body, max_body_bytes)?.validate(config, &config.catalogue, now_ms)
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
    fn the_verified_viewer_is_every_reactions_user() {
        let read = |body: &str| read_body(Some("application/json"), body.as_bytes(), 4096).unwrap();
        let mut one = read(r#"{"stream_id":"s","emoji":"fire"}"#);
        one.bind_viewer("viewer:ann").unwrap();
        assert_eq!(
            one,
            ReactionsBody::One(serde_json::json!(
                {"stream_id":"s","emoji":"fire","user_id":"viewer:ann"}
            ))
        );
        let mut same = read(r#"{"reactions":[{"user_id":"viewer:ann"},{}]}"#);
        assert_eq!(same.bind_viewer("viewer:ann"), Ok(()));
        let mut other =
            read(r#"{"reactions":[{"user_id":"viewer:ann"},{"user_id":"viewer:bob"}]}"#);
        let refused = other.bind_viewer("viewer:ann").unwrap_err();
        assert_eq!(refused.status(), 403);
        assert_eq!(refused.body()["error"], "user_id_mismatch");
        assert_eq!(refused.body()["field"], "reactions[1].user_id");
        let mut not_text = read(r#"{"user_id":7}"#);
        assert_eq!(
            not_text.bind_viewer("viewer:ann").unwrap_err().code(),
            "user_id_mismatch"
        );
    }

    #[test]
    fn a_subject_that_is_not_an_id_binds_its_mapped_id_given_either_way() {
        let read = |body: &str| read_body(Some("application/json"), body.as_bytes(), 4096).unwrap();
        let subject = "auth0|64f1c2";
        let id = UserId::from_subject(subject);
        let body = format!(
            r#"{{"reactions":[{{}},{{"user_id":"{subject}"}},{{"user_id":"{}"}}]}}"#,
            id.as_str()
        );
        let mut given = read(&body);
        given.bind_viewer(subject).unwrap();
        let ReactionsBody::Batch(items) = given else {
            panic!("a batch")
        };
        for item in &items {
            assert_eq!(item["user_id"], id.as_str(), "{items:?}");
        }
        let mut other = read(r#"{"user_id":"auth0|someone-else"}"#);
        assert_eq!(
            other.bind_viewer(subject).unwrap_err().code(),
            "user_id_mismatch"
        );
    }

    #[test]
    fn stream_ids_are_listed_once_each_in_order() {
        let body = read_body(
            JSON,
            br#"{"reactions":[{"stream_id":"b"},{"stream_id":"a"},{"stream_id":"b"},{"stream_id":"bad id"},{"stream_id":7},{}]}"#,
            1_000,
        )
        .unwrap();
        let ids = body.stream_ids();
        let ids: Vec<&str> = ids.iter().map(StreamId::as_str).collect();
        assert_eq!(ids, ["b", "a"]);
        let one = read_body(JSON, br#"{"stream_id":"m"}"#, 1_000).unwrap();
        assert_eq!(one.stream_ids()[0].as_str(), "m");
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
