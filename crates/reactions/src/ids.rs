//! Identifiers that arrive from untrusted clients. A validated id is safe to use as a Kafka
//! key, a MongoDB value and a log field: bounded length, a small ASCII charset.

use crate::validation::{Rule, ValidationError};
use serde::{Deserialize, Serialize};
use std::fmt;

const ID_CHARSET: &str = "ASCII letters, digits, '-', '_', '.' and ':'";

fn check_id(field: &str, value: &str, max: usize) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, Rule::Empty));
    }
    if value.chars().count() > max {
        return Err(ValidationError::new(field, Rule::TooLong { max }));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if !value.chars().all(allowed) {
        return Err(ValidationError::new(
            field,
            Rule::BadCharset {
                allowed: ID_CHARSET,
            },
        ));
    }
    Ok(())
}

/// The id of a live stream: the Kafka partition key, so all of one stream's reactions stay
/// in order on one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamId(String);

impl StreamId {
    /// Longest accepted stream id, in characters.
    pub const MAX_LEN: usize = 64;

    /// Validates `value` as the field `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        check_id(field, value, Self::MAX_LEN)?;
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of a viewer. Kept on every record so abuse can be traced, never used for counting.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Longest accepted user id, in characters.
    pub const MAX_LEN: usize = 128;

    /// What the id of a viewer whose identity provider's subject is not itself a valid id
    /// starts with; the SHA-256 of the subject, in hex, follows.
    pub const SUBJECT_DIGEST_PREFIX: &'static str = "sub-sha256:";

    /// The viewer a verified token's subject (`sub`) stands for, the same in ingest and
    /// notify. Identity providers' subjects are often not valid ids (`auth0|…`,
    /// `google-oauth2|…`, e-mail addresses, over 128 characters), and refusing them would
    /// refuse every tap of their viewers. A subject that is a valid id is kept as it is, so ids
    /// stay readable in logs and tallies; any other becomes [`UserId::SUBJECT_DIGEST_PREFIX`]
    /// and the subject's SHA-256 in hex (75 characters). A valid subject that starts with the
    /// prefix is digested too, so two subjects never share an id (short of a SHA-256
    /// collision).
    pub fn from_subject(subject: &str) -> Self {
        if check_id("sub", subject, Self::MAX_LEN).is_ok()
            && !subject.starts_with(Self::SUBJECT_DIGEST_PREFIX)
        {
            return Self(subject.to_owned());
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(subject.as_bytes());
        let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Self(format!("{}{hex}", Self::SUBJECT_DIGEST_PREFIX))
    }

    /// Validates `value` as the field `field`.
    pub fn parse(field: &str, value: &str) -> Result<Self, ValidationError> {
        check_id(field, value, Self::MAX_LEN)?;
        Ok(Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! id_conversions {
    ($ty:ident, $field:literal) => {
        impl TryFrom<String> for $ty {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse($field, &value)
            }
        }
        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_conversions!(StreamId, "stream_id");
id_conversions!(UserId, "user_id");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_that_are_ids_are_kept_and_others_become_distinct_valid_ids() {
        assert_eq!(UserId::from_subject("viewer:ann").as_str(), "viewer:ann");
        let long = "a".repeat(UserId::MAX_LEN + 1);
        let prefixed = format!("{}00", UserId::SUBJECT_DIGEST_PREFIX);
        let foreign = [
            "auth0|64f1c2",
            "google-oauth2|1098",
            "ann@example.com",
            "",
            long.as_str(),
            prefixed.as_str(),
        ];
        let mut seen = std::collections::BTreeSet::new();
        for subject in foreign {
            let id = UserId::from_subject(subject);
            assert!(
                UserId::parse("u", id.as_str()).is_ok(),
                "{subject:?}: {id:?}"
            );
            assert!(
                id.as_str().starts_with(UserId::SUBJECT_DIGEST_PREFIX),
                "{id:?}"
            );
            assert_eq!(id.as_str().len(), UserId::SUBJECT_DIGEST_PREFIX.len() + 64);
            assert_eq!(UserId::from_subject(subject), id, "the same every time");
            assert!(seen.insert(id), "{subject:?} shares an id");
        }
        // A known answer: the SHA-256 of the empty string (FIPS 180-4 test vectors).
        assert_eq!(
            UserId::from_subject("").as_str(),
            "sub-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn accepts_typical_ids() {
        assert_eq!(
            StreamId::parse("s", "ind-vs-aus_2026.final:1")
                .unwrap()
                .as_str(),
            "ind-vs-aus_2026.final:1"
        );
        assert!(UserId::parse("u", &"u".repeat(UserId::MAX_LEN)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_foreign_characters() {
        assert_eq!(StreamId::parse("s", "").unwrap_err().rule, Rule::Empty);
        assert_eq!(
            StreamId::parse("s", &"a".repeat(65)).unwrap_err().rule,
            Rule::TooLong { max: 64 }
        );
        for bad in ["a b", "a/b", "é", "$where", "a\u{0}"] {
            let err = StreamId::parse("stream_id", bad).unwrap_err();
            assert_eq!(err.field, "stream_id");
            assert_eq!(err.rule.code(), "bad_charset", "{bad:?}");
        }
    }

    #[test]
    fn serde_validates_on_the_way_in() {
        let ok: StreamId = serde_json::from_str("\"match-1\"").unwrap();
        assert_eq!(ok.as_str(), "match-1");
        assert!(serde_json::from_str::<StreamId>("\"bad id\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"match-1\"");
    }
}
