//! The stream registry's domain: which streams exist, whether they take reactions now, and
//! which emojis each one offers. Broadcasters run events with their own reactions (a team's
//! emoji for a final), so the catalogue belongs to the stream; the configured `EMOJI_CATALOGUE`
//! is only the default a new stream starts with. So do its moderation switches: reactions
//! paused (a live stream refusing taps for a while, say during a minute's silence) and its own
//! fair-use limit (lower than the deployment's, for a stream being flooded). Storage is in
//! `mongo::streams`; this module holds the rules: statuses and their transitions, and what an
//! admin may write.

use crate::emoji::{CatalogueError, EmojiCatalogue};
use crate::ids::StreamId;
use crate::validation::{Rule, ValidationError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Where a stream is in its life. Reactions are taken only while it is `live`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStatus {
    /// Registered, not started: viewers may load the page but not react yet.
    Scheduled,
    /// Taking reactions.
    Live,
    /// Over for good; its windows stay readable until their retention ends.
    Ended,
}

impl StreamStatus {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::Scheduled => "scheduled",
            StreamStatus::Live => "live",
            StreamStatus::Ended => "ended",
        }
    }

    /// Reads a stored or queried name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "scheduled" => Some(StreamStatus::Scheduled),
            "live" => Some(StreamStatus::Live),
            "ended" => Some(StreamStatus::Ended),
            _ => None,
        }
    }

    /// The status after `transition`, or why it is not allowed. Repeating a transition is
    /// allowed (an admin retrying `start` gets the same answer), going back is not: an ended
    /// stream's counts are final.
    pub fn after(self, transition: Transition) -> Result<Self, TransitionRefused> {
        match (self, transition) {
            (StreamStatus::Scheduled | StreamStatus::Live, Transition::Start) => {
                Ok(StreamStatus::Live)
            }
            (_, Transition::End) => Ok(StreamStatus::Ended),
            (StreamStatus::Ended, Transition::Start) => Err(TransitionRefused {
                from: self,
                transition,
            }),
        }
    }
}

impl fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An admin's request to move a stream along its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Start,
    End,
}

impl Transition {
    /// The route segment (`/admin/streams/{id}/start`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::End => "end",
        }
    }
}

/// A transition the stream's status does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a stream that is {from} cannot {}", transition.as_str())]
pub struct TransitionRefused {
    pub from: StreamStatus,
    pub transition: Transition,
}

/// One registered stream as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: StreamId,
    /// What viewers see as the stream's name.
    pub title: String,
    pub status: StreamStatus,
    /// The emojis this stream takes, in display order.
    pub catalogue: EmojiCatalogue,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// When it last went live, if it did.
    pub started_ms: Option<i64>,
    /// When it ended, if it did.
    pub ended_ms: Option<i64>,
    /// Whether its broadcaster paused reactions: ingest refuses them (409 `reactions_paused`)
    /// while it is live.
    pub reactions_paused: bool,
    /// Its own fair-use limit (taps per viewer and window), if its broadcaster set one.
    pub fair_use_limit: Option<u32>,
}

impl StreamEntry {
    /// Whether ingest may accept reactions to it now (reactions paused aside).
    pub fn is_live(&self) -> bool {
        self.status == StreamStatus::Live
    }

    /// The public JSON view (`GET /streams/{id}`): what a watch page needs, its fair-use limit
    /// left out (it would tell a spammer how far to go).
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id.as_str(),
            "title": self.title,
            "status": self.status,
            "emojis": self.catalogue,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "started_ms": self.started_ms,
            "ended_ms": self.ended_ms,
            "reactions_paused": self.reactions_paused,
        })
    }

    /// The admin routes' view: the public one and the stream's fair-use limit.
    pub fn to_admin_json(&self) -> Value {
        let mut view = self.to_json();
        view["fair_use_limit"] = serde_json::json!(self.fair_use_limit);
        view
    }
}

/// What an admin writes with `PUT /admin/streams/{id}`: any of a new title, a new catalogue and
/// the moderation switches. Creating a stream needs a title; its catalogue defaults to the
/// configured one, reactions are not paused and the deployment's fair-use limit applies.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamChanges {
    pub title: Option<String>,
    pub catalogue: Option<EmojiCatalogue>,
    pub reactions_paused: Option<bool>,
    /// `Some(None)`: back to the deployment's limit.
    pub fair_use_limit: Option<Option<u32>>,
}

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 120;

/// The highest fair-use limit a stream may set (taps per viewer and window). A stream's limit
/// only ever lowers the deployment's, so anything above that is the deployment's anyway.
pub const MAX_FAIR_USE_LIMIT: i64 = 10_000;

const CHANGE_FIELDS: [&str; 4] = ["title", "emojis", "reactions_paused", "fair_use_limit"];

fn parse_paused(value: &Value) -> Result<bool, ValidationError> {
    value.as_bool().ok_or_else(|| {
        ValidationError::new(
            "reactions_paused",
            Rule::WrongType {
                expected: "true or false",
            },
        )
    })
}

fn parse_fair_use_limit(value: &Value) -> Result<Option<u32>, ValidationError> {
    if value.is_null() {
        return Ok(None);
    }
    let Some(limit) = value.as_i64() else {
        return Err(ValidationError::new(
            "fair_use_limit",
            Rule::WrongType {
                expected: "integer (taps per viewer and window), or null for the deployment's",
            },
        ));
    };
    if !(1..=MAX_FAIR_USE_LIMIT).contains(&limit) {
        return Err(ValidationError::new(
            "fair_use_limit",
            Rule::OutOfRange {
                min: 1,
                max: MAX_FAIR_USE_LIMIT,
                value: limit,
            },
        ));
    }
    Ok(u32::try_from(limit).ok())
}

fn parse_title(value: &Value) -> Result<String, ValidationError> {
    let Value::String(title) = value else {
        return Err(ValidationError::new(
            "title",
            Rule::WrongType { expected: "string" },
        ));
    };
    let title = title.trim();
    if title.is_empty() {
        return Err(ValidationError::new("title", Rule::Empty));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ValidationError::new(
            "title",
            Rule::TooLong {
                max: MAX_TITLE_CHARS,
            },
        ));
    }
    if title.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "title",
            Rule::BadCharset {
                allowed: "printable characters",
            },
        ));
    }
    Ok(title.to_owned())
}

fn parse_catalogue(value: &Value) -> Result<EmojiCatalogue, ValidationError> {
    let wrong = |field: String, expected| ValidationError::new(field, Rule::WrongType { expected });
    let Value::Array(items) = value else {
        return Err(wrong("emojis".into(), "array of {name, glyph}"));
    };
    let mut entries = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let field = |name: &str| format!("emojis[{index}].{name}");
        let Value::Object(object) = item else {
            return Err(wrong(format!("emojis[{index}]"), "object"));
        };
        if let Some(extra) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "name" | "glyph"))
        {
            let shown: String = extra.chars().take(40).collect();
            return Err(ValidationError::new(field(&shown), Rule::UnknownField));
        }
        let text = |name: &str| match object.get(name) {
            None | Some(Value::Null) => Err(ValidationError::new(field(name), Rule::Missing)),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(wrong(field(name), "string")),
        };
        entries.push((text("name")?, text("glyph")?));
    }
    EmojiCatalogue::from_entries(entries).map_err(|error| {
        let rule = match &error {
            CatalogueError::Empty => Rule::Empty,
            _ => Rule::BadCatalogue {
                reason: error.to_string(),
            },
        };
        ValidationError::new("emojis", rule)
    })
}

impl StreamChanges {
    /// Reads an admin's JSON body, naming the field of the first mistake in each part.
    pub fn from_json(body: &Value) -> Result<Self, Vec<ValidationError>> {
        let Value::Object(object) = body else {
            return Err(vec![ValidationError::new(
                "body",
                Rule::WrongType { expected: "object" },
            )]);
        };
        let mut errors = Vec::new();
        if let Some(extra) = object.keys().find(|k| !CHANGE_FIELDS.contains(&k.as_str())) {
            let shown: String = extra.chars().take(40).collect();
            errors.push(ValidationError::new(shown, Rule::UnknownField));
        }
        let title = object.get("title").map(parse_title).transpose();
        let catalogue = object.get("emojis").map(parse_catalogue).transpose();
        let paused = object.get("reactions_paused").map(parse_paused).transpose();
        let limit = object
            .get("fair_use_limit")
            .map(parse_fair_use_limit)
            .transpose();
        let (title, catalogue, reactions_paused, fair_use_limit) =
            match (title, catalogue, paused, limit) {
                (Ok(title), Ok(catalogue), Ok(paused), Ok(limit)) => {
                    (title, catalogue, paused, limit)
                }
                (title, catalogue, paused, limit) => {
                    errors.extend(title.err());
                    errors.extend(catalogue.err());
                    errors.extend(paused.err());
                    errors.extend(limit.err());
                    return Err(errors);
                }
            };
        let changes = Self {
            title,
            catalogue,
            reactions_paused,
            fair_use_limit,
        };
        if changes == Self::default() && errors.is_empty() {
            errors.push(ValidationError::new("body", Rule::NothingToChange));
        }
        if errors.is_empty() {
            Ok(changes)
        } else {
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The field and rule of each mistake `body` makes.
    fn fields(body: Value) -> Vec<(String, &'static str)> {
        StreamChanges::from_json(&body)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.rule.code()))
            .collect()
    }

    #[test]
    fn statuses_move_forward_only() {
        use StreamStatus::*;
        use Transition::*;
        assert_eq!(Scheduled.after(Start), Ok(Live));
        assert_eq!(Live.after(Start), Ok(Live));
        assert_eq!(Live.after(End), Ok(Ended));
        assert_eq!(Scheduled.after(End), Ok(Ended));
        assert_eq!(Ended.after(End), Ok(Ended));
        let refused = Ended.after(Start).unwrap_err();
        assert_eq!(refused.to_string(), "a stream that is ended cannot start");
        for status in [Scheduled, Live, Ended] {
            assert_eq!(StreamStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(StreamStatus::parse("LIVE"), None);
    }

    #[test]
    fn changes_take_a_title_a_catalogue_or_both() {
        let changes = StreamChanges::from_json(&json!({
            "title": "  Cup final ",
            "emojis": [{"name": "goal", "glyph": "⚽"}, {"name": "red_card", "glyph": "🟥"}],
        }))
        .unwrap();
        assert_eq!(changes.title.as_deref(), Some("Cup final"));
        let catalogue = changes.catalogue.unwrap();
        assert_eq!(catalogue.emojis()[1].name.as_str(), "red_card");
        assert_eq!(catalogue.resolve("e", "⚽").unwrap().as_str(), "goal");
        let only_title = StreamChanges::from_json(&json!({"title": "x"})).unwrap();
        assert_eq!(only_title.catalogue, None);
        assert_eq!(only_title.reactions_paused, None);
        assert_eq!(only_title.fair_use_limit, None);
    }

    #[test]
    fn moderation_pauses_reactions_and_sets_or_clears_a_limit() {
        let changes =
            StreamChanges::from_json(&json!({"reactions_paused": true, "fair_use_limit": 5}))
                .unwrap();
        assert_eq!(changes.reactions_paused, Some(true));
        assert_eq!(changes.fair_use_limit, Some(Some(5)));
        assert_eq!(changes.title, None);
        let cleared = StreamChanges::from_json(&json!({"fair_use_limit": null})).unwrap();
        assert_eq!(cleared.fair_use_limit, Some(None));
        assert_eq!(
            fields(json!({"reactions_paused": "yes"})),
            [("reactions_paused".into(), "wrong_type")]
        );
        for bad in [json!(0), json!(10_001), json!(-3)] {
            assert_eq!(
                fields(json!({ "fair_use_limit": bad })),
                [("fair_use_limit".into(), "out_of_range")]
            );
        }
        assert_eq!(
            fields(json!({"fair_use_limit": 2.5})),
            [("fair_use_limit".into(), "wrong_type")]
        );
    }

    #[test]
    fn mistakes_name_their_field() {
        assert_eq!(fields(json!([])), [("body".into(), "wrong_type")]);
        assert_eq!(fields(json!({})), [("body".into(), "nothing_to_change")]);
        assert_eq!(fields(json!({"title": ""})), [("title".into(), "empty")]);
        assert_eq!(
            fields(json!({"title": "a".repeat(121)})),
            [("title".into(), "too_long")]
        );
        assert_eq!(
            fields(json!({"title": "a\u{7}b"})),
            [("title".into(), "bad_charset")]
        );
        assert_eq!(
            fields(json!({"titel": "x"})),
            [("titel".into(), "unknown_field")]
        );
        assert_eq!(fields(json!({"emojis": []})), [("emojis".into(), "empty")]);
        assert_eq!(
            fields(json!({"emojis": [{"name": "goal"}]})),
            [("emojis[0].glyph".into(), "missing")]
        );
        assert_eq!(
            fields(json!({"emojis": [{"name": "goal", "glyph": "⚽", "url": "x"}]})),
            [("emojis[0].url".into(), "unknown_field")]
        );
        assert_eq!(
            fields(json!({"emojis": [{"name": "Goal", "glyph": "⚽"}]})),
            [("emojis".into(), "bad_catalogue")]
        );
        assert_eq!(
            fields(
                json!({"title": 3, "emojis": [{"name": "a", "glyph": "⚽"}, {"name": "b", "glyph": "⚽"}]})
            ),
            [
                ("title".into(), "wrong_type"),
                ("emojis".into(), "bad_catalogue")
            ]
        );
        let too_many: Vec<Value> = (0..65)
            .map(|i| json!({"name": format!("e{i}"), "glyph": format!("g{i}")}))
            .collect();
        assert_eq!(
            fields(json!({"emojis": too_many})),
            [("emojis".into(), "bad_catalogue")]
        );
    }
}
