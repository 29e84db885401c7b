//! Typed validation errors. Every rejection names the field (as a JSON path such as
//! `reactions[3].emoji`) and the rule it broke, so that the HTTP edge can answer a precise
//! 4xx and a client developer can fix the request without reading our code.

use std::fmt;

/// A rule that a value broke. Kept as data (not prose) so callers can map it to status codes,
/// metrics dimensions and machine-readable error bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The field is required but absent or null.
    Missing,
    /// The value has the wrong JSON type.
    WrongType { expected: &'static str },
    /// A field this API does not know (usually a typo).
    UnknownField,
    /// The string is empty.
    Empty,
    /// The string is longer than `max` characters.
    TooLong { max: usize },
    /// The string holds a character outside the allowed set.
    BadCharset { allowed: &'static str },
    /// The emoji is not in the configured catalogue.
    UnknownEmoji { value: String },
    /// The number lies outside `min..=max`.
    OutOfRange { min: i64, max: i64, value: i64 },
    /// A batch with no items.
    EmptyBatch,
    /// A batch with more than `max` items.
    BatchTooLarge { max: usize, len: usize },
    /// An emoji catalogue that breaks a catalogue rule (`reason` says which).
    BadCatalogue { reason: String },
    /// An update that changes nothing.
    NothingToChange,
    /// A stream the registry does not know (ingest answers 404 before validating, so this is
    /// only seen by callers that validate without a registry).
    UnknownStream,
    /// A time range that cannot be answered (`reason` says why and what to ask instead).
    BadRange { reason: String },
}

impl Rule {
    /// A stable, short code for the rule, used in JSON error bodies and metric dimensions.
    pub fn code(&self) -> &'static str {
        match self {
            Rule::Missing => "missing",
            Rule::WrongType { .. } => "wrong_type",
            Rule::UnknownField => "unknown_field",
            Rule::Empty => "empty",
            Rule::TooLong { .. } => "too_long",
            Rule::BadCharset { .. } => "bad_charset",
            Rule::UnknownEmoji { .. } => "unknown_emoji",
            Rule::OutOfRange { .. } => "out_of_range",
            Rule::EmptyBatch => "empty_batch",
            Rule::BatchTooLarge { .. } => "batch_too_large",
            Rule::BadCatalogue { .. } => "bad_catalogue",
            Rule::NothingToChange => "nothing_to_change",
            Rule::UnknownStream => "unknown_stream",
            Rule::BadRange { .. } => "bad_range",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Missing => write!(f, "is required"),
            Rule::WrongType { expected } => write!(f, "must be a JSON {expected}"),
            Rule::UnknownField => write!(f, "is not a known field"),
            Rule::Empty => write!(f, "must not be empty"),
            Rule::TooLong { max } => write!(f, "must be at most {max} characters"),
            Rule::BadCharset { allowed } => write!(f, "may only contain {allowed}"),
            Rule::UnknownEmoji { value } => {
                write!(
                    f,
                    "{value:?} is not in the stream's emoji catalogue (see GET /streams/{{id}})"
                )
            }
            Rule::OutOfRange { min, max, value } => {
                write!(f, "must be between {min} and {max}, got {value}")
            }
            Rule::EmptyBatch => write!(f, "must hold at least one reaction"),
            Rule::BatchTooLarge { max, len } => {
                write!(f, "must hold at most {max} reactions, got {len}")
            }
            Rule::BadCatalogue { reason } => write!(f, "is not a valid catalogue: {reason}"),
            Rule::NothingToChange => write!(f, "must set title, emojis or both"),
            Rule::UnknownStream => write!(f, "is not a registered stream"),
            Rule::BadRange { reason } => write!(f, "does not make an answerable range: {reason}"),
        }
    }
}

/// One field that broke one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ValidationError {
    /// JSON path of the offending field, e.g. `reactions[3].emoji`.
    pub field: String,
    /// The rule it broke.
    pub rule: Rule,
}

impl ValidationError {
    /// Builds an error for `field` breaking `rule`.
    pub fn new(field: impl Into<String>, rule: Rule) -> Self {
        Self {
            field: field.into(),
            rule,
        }
    }

    /// The same error with its field path placed under `prefix` (e.g. `reactions[2]`), so
    /// item-level validators need not know where their item sits in a batch.
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}
