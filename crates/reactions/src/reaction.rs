//! A reaction: one viewer tapping one emoji some number of times on one stream. This module
//! turns untrusted client JSON into typed `Reaction`s, or into errors that name every bad
//! field; nothing invalid gets past it.

use crate::emoji::{EmojiCatalogue, EmojiName};
use crate::idempotency::TapKey;
use crate::ids::{StreamId, UserId};
use crate::validation::{Rule, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A validated reaction, stamped with the server's clock (never the client's: client clocks
/// would let anyone write into closed windows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    /// The stream reacted to; also the Kafka key.
    pub stream: StreamId,
    /// Who reacted.
    pub user: UserId,
    /// What was tapped (catalogue name).
    pub emoji: EmojiName,
    /// How many taps this reaction stands for (clients batch taps), at least 1.
    pub count: u32,
    /// Server receive time, milliseconds since the Unix epoch: the event time for windows.
    pub at_ms: i64,
    /// The request's idempotency key, when the client sent one (see `crate::idempotency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<TapKey>,
    /// The stream's own fair-use limit (taps per viewer and window) when its broadcaster set
    /// one: ingest stamps it from the registry, so a change reaches every reaction within one
    /// registry-cache period, and aggregate counts at most the lower of it and the deployment's
    /// `MAX_TAPS_PER_VIEWER_PER_WINDOW` (see `crate::fair_use`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_use_limit: Option<u32>,
}

/// Bounds on what one request may carry. Configurable because the right numbers depend on
/// the client's batching interval and the stream's audience.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactionLimits {
    /// Most reactions in one batch.
    pub max_batch: usize,
    /// Most taps one reaction may stand for.
    pub max_count: u32,
}

impl Default for ReactionLimits {
    fn default() -> Self {
        Self {
            max_batch: 500,
            max_count: 100,
        }
    }
}

/// Where validation finds the catalogue of a reaction's stream: one catalogue for every stream
/// (`EmojiCatalogue` itself), or the stream registry's per-stream catalogues.
pub trait Catalogues {
    /// The catalogue of `stream`, or `None` for a stream that takes no reactions.
    fn catalogue_of(&self, stream: &StreamId) -> Option<&EmojiCatalogue>;
}

impl Catalogues for EmojiCatalogue {
    fn catalogue_of(&self, _stream: &StreamId) -> Option<&EmojiCatalogue> {
        Some(self)
    }
}

/// A reaction as a client described it, before validation. Useful for callers that build
/// reactions in code (load generator, tests); JSON input goes through [`RawReaction::from_json`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawReaction {
    pub stream_id: String,
    pub user_id: String,
    pub emoji: String,
    /// Taps; absent means 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
}

const FIELDS: [&str; 4] = ["stream_id", "user_id", "emoji", "count"];

fn string_field(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String, ValidationError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(ValidationError::new(name, Rule::Missing)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ValidationError::new(
            name,
            Rule::WrongType { expected: "string" },
        )),
    }
}

impl RawReaction {
    /// Reads one JSON object, checking field presence and types. Unknown fields are refused
    /// so that a typo such as `emoij` is reported rather than silently counted as nothing.
    pub fn from_json(value: &Value) -> Result<Self, ValidationError> {
        let object = value.as_object().ok_or_else(|| {
            ValidationError::new("reaction", Rule::WrongType { expected: "object" })
        })?;
        if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            let shown: String = unknown.chars().take(40).collect();
            return Err(ValidationError::new(shown, Rule::UnknownField));
        }
        let count = match object.get("count") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_i64() {
                Some(c) => Some(c),
                None => {
                    return Err(ValidationError::new(
                        "count",
                        Rule::WrongType {
                            expected: "integer",
                        },
                    ));
                }
            },
            Some(_) => {
                return Err(ValidationError::new(
                    "count",
                    Rule::WrongType {
                        expected: "integer",
                    },
                ));
            }
        };
        Ok(Self {
            stream_id: string_field(object, "stream_id")?,
            user_id: string_field(object, "user_id")?,
            emoji: string_field(object, "emoji")?,
            count,
        })
    }

    /// Validates every field and stamps the reaction with `at_ms`.
    pub fn validate(
        &self,
        limits: &ReactionLimits,
        catalogues: &impl Catalogues,
        at_ms: i64,
    ) -> Result<Reaction, ValidationError> {
        let stream = StreamId::parse("stream_id", &self.stream_id)?;
        let user = UserId::parse("user_id", &self.user_id)?;
        let catalogue = catalogues
            .catalogue_of(&stream)
            .ok_or_else(|| ValidationError::new("stream_id", Rule::UnknownStream))?;
        let emoji = catalogue.resolve("emoji", &self.emoji)?;
        let count = self.count.unwrap_or(1);
        let max = i64::from(limits.max_count);
        if !(1..=max).contains(&count) {
            return Err(ValidationError::new(
                "count",
                Rule::OutOfRange {
                    min: 1,
                    max,
                    value: count,
                },
            ));
        }
        Ok(Reaction {
            stream,
            user,
            emoji,
            // In 1..=u32::MAX by the check above.
            count: u32::try_from(count).unwrap_or(limits.max_count),
            at_ms,
            key: None,
            fair_use_limit: None,
        })
    }
}

/// A batch refused whole, with every problem found (item-level errors carry the item index
/// in their field path, e.g. `reactions[7].count`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} invalid: {}", errors.len(), errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
pub struct BatchRejected {
    /// One error per invalid item (the first problem of each), or one batch-level error.
    pub errors: Vec<ValidationError>,
}

/// Validates a batch of JSON items. All or nothing: a single bad item rejects the batch, so a
/// client never has to work out which half of its taps were counted.
pub fn validate_batch(
    items: &[Value],
    limits: &ReactionLimits,
    catalogues: &impl Catalogues,
    at_ms: i64,
) -> Result<Vec<Reaction>, BatchRejected> {
    if items.is_empty() {
        return Err(BatchRejected {
            errors: vec![ValidationError::new("reactions", Rule::EmptyBatch)],
        });
    }
    if items.len() > limits.max_batch {
        return Err(BatchRejected {
            errors: vec![ValidationError::new(
                "reactions",
                Rule::BatchTooLarge {
                    max: limits.max_batch,
                    len: items.len(),
                },
            )],
        });
    }
    let mut accepted = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let checked = RawReaction::from_json(item)
            .and_then(|raw| raw.validate(limits, catalogues, at_ms))
            .map_err(|e| e.under(&format!("reactions[{index}]")));
        match checked {
            Ok(reaction) => accepted.push(reaction),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(accepted)
    } else {
        Err(BatchRejected { errors })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> ReactionLimits {
        ReactionLimits {
            max_batch: 3,
            max_count: 10,
        }
    }

    #[test]
    fn a_valid_item_becomes_a_stamped_reaction() {
        let item = json!({"stream_id": "match-1", "user_id": "u1", "emoji": "🔥", "count": 4});
        let r = RawReaction::from_json(&item)
            .unwrap()
            .validate(&limits(), &EmojiCatalogue::default(), 1_700_000_000_123)
            .unwrap();
        assert_eq!(r.stream.as_str(), "match-1");
        assert_eq!(r.emoji.as_str(), "fire");
        assert_eq!(r.count, 4);
        assert_eq!(r.at_ms, 1_700_000_000_123);
    }

    #[test]
    fn count_defaults_to_one_and_is_bounded() {
        let cat = EmojiCatalogue::default();
        let mut raw = RawReaction {
            stream_id: "s".into(),
            user_id: "u".into(),
            emoji: "clap".into(),
            count: None,
        };
        assert_eq!(raw.validate(&limits(), &cat, 0).unwrap().count, 1);
        for bad in [0, -1, 11, i64::MAX] {
            raw.count = Some(bad);
            let err = raw.validate(&limits(), &cat, 0).unwrap_err();
            assert_eq!(err.field, "count");
            assert_eq!(
                err.rule,
                Rule::OutOfRange {
                    min: 1,
                    max: 10,
                    value: bad
                }
            );
        }
        raw.count = Some(10);
        assert_eq!(raw.validate(&limits(), &cat, 0).unwrap().count, 10);
    }

    #[test]
    fn json_shape_errors_name_the_field() {
        let cases = [
            (json!([1]), "reaction", "wrong_type"),
            (
                json!({"user_id": "u", "emoji": "fire"}),
                "stream_id",
                "missing",
            ),
            (
                json!({"stream_id": null, "user_id": "u", "emoji": "fire"}),
                "stream_id",
                "missing",
            ),
            (
                json!({"stream_id": 5, "user_id": "u", "emoji": "fire"}),
                "stream_id",
                "wrong_type",
            ),
            (
                json!({"stream_id": "s", "user_id": "u", "emoji": "fire", "count": 1.5}),
                "count",
                "wrong_type",
            ),
            (
                json!({"stream_id": "s", "user_id": "u", "emoji": "fire", "count": "2"}),
                "count",
                "wrong_type",
            ),
            (
                json!({"stream_id": "s", "user_id": "u", "emoij": "fire"}),
                "emoij",
                "unknown_field",
            ),
        ];
        for (item, field, code) in cases {
            let err = RawReaction::from_json(&item).unwrap_err();
            assert_eq!(
                (err.field.as_str(), err.rule.code()),
                (field, code),
                "{item}"
            );
        }
    }

    #[test]
    fn batches_are_all_or_nothing_and_say_which_items_failed() {
        let cat = EmojiCatalogue::default();
        let good = json!({"stream_id": "s", "user_id": "u", "emoji": "fire"});
        let bad_emoji = json!({"stream_id": "s", "user_id": "u", "emoji": "🦄"});
        let bad_user = json!({"stream_id": "s", "user_id": "", "emoji": "fire"});
        let ok = validate_batch(&[good.clone(), good.clone()], &limits(), &cat, 5).unwrap();
        assert_eq!(ok.len(), 2);

        let err =
            validate_batch(&[good.clone(), bad_emoji, bad_user], &limits(), &cat, 5).unwrap_err();
        let fields: Vec<_> = err.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["reactions[1].emoji", "reactions[2].user_id"]);

        let empty = validate_batch(&[], &limits(), &cat, 5).unwrap_err();
        assert_eq!(empty.errors[0].rule, Rule::EmptyBatch);
        let big = validate_batch(&vec![good; 4], &limits(), &cat, 5).unwrap_err();
        assert_eq!(big.errors[0].rule, Rule::BatchTooLarge { max: 3, len: 4 });
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_items_never_panic(
            stream in ".{0,80}", user in ".{0,150}", emoji in ".{0,8}", count in proptest::option::of(proptest::num::i64::ANY)
        ) {
            let raw = RawReaction { stream_id: stream, user_id: user, emoji, count };
            let item = serde_json::to_value(&raw).unwrap();
            let parsed = RawReaction::from_json(&item).unwrap();
            proptest::prop_assert_eq!(&parsed, &raw);
            if let Ok(r) = parsed.validate(&ReactionLimits::default(), &EmojiCatalogue::default(), 0) {
                proptest::prop_assert!(r.count >= 1 && r.count <= 100);
            }
        }
    }
}
