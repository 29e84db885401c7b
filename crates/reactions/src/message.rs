//! The Kafka message formats. Every record is a JSON object with a version field `v`, so a
//! consumer can tell a record it does not understand (and dead-letter it) from a corrupt one,
//! and the format can evolve while old records are still in the log.

use crate::emoji::EmojiName;
use crate::idempotency::{MAX_KEYED_ITEMS, TapKey};
use crate::ids::{StreamId, UserId};
use crate::moments::{Moment, MomentStatus};
use crate::reaction::Reaction;
use crate::swarm::Swarm;
use crate::window::EmojiCounts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Why a record could not be decoded. The `code` goes into dead-letter headers and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record has no value (a tombstone or an empty produce).
    #[error("record has no value")]
    MissingValue,
    /// Key or value is not valid base64 (Lambda's Kafka events carry both base64-encoded).
    #[error("record {part} is not valid base64: {reason}")]
    BadBase64 { part: &'static str, reason: String },
    /// The value is not JSON of the expected shape.
    #[error("record value is not a valid message: {0}")]
    BadJson(String),
    /// The value carries a version this code does not read.
    #[error(
        "record version {found} is not supported (this build reads versions up to {supported})"
    )]
    UnsupportedVersion { found: u64, supported: u32 },
    /// The JSON is well-formed but a field breaks a domain rule.
    #[error("record is invalid: {0}")]
    Invalid(String),
}

impl RecordError {
    /// A stable, short code for dead-letter headers and metric dimensions.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::MissingValue => "missing_value",
            RecordError::BadBase64 { .. } => "bad_base64",
            RecordError::BadJson(_) => "bad_json",
            RecordError::UnsupportedVersion { .. } => "unsupported_version",
            RecordError::Invalid(_) => "invalid",
        }
    }
}

/// A message type with a version number, encoded as JSON with the version in field `v`.
pub trait VersionedMessage: Serialize + DeserializeOwned {
    /// The version this build writes and reads.
    const VERSION: u32;

    /// The oldest version this build still reads (older records may still be in the log).
    const OLDEST_READ: u32 = Self::VERSION;

    /// Domain checks that serde cannot express.
    fn check(&self) -> Result<(), RecordError> {
        Ok(())
    }

    /// Encodes the message as JSON bytes.
    fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs (string keys, integers, strings) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The message's own version field.
    fn version(&self) -> u32;

    /// Decodes JSON bytes. A record of another version is reported as such rather than as
    /// garbage: the version is checked before the shape. The common case (this version, well
    /// formed) is parsed once; only a record that fails is parsed again for its version.
    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let parsed = serde_json::from_slice::<Self>(bytes);
        let read = Self::OLDEST_READ..=Self::VERSION;
        if !matches!(&parsed, Ok(message) if read.contains(&message.version())) {
            check_version(bytes, read)?;
        }
        let message = parsed.map_err(|e| RecordError::BadJson(e.to_string()))?;
        message.check()?;
        Ok(message)
    }
}

/// Reads only the version field `v` of a record that did not parse as a `supported` version: an
/// error naming the version found, or Ok when it is supported (the shape is then what failed).
fn check_version(
    bytes: &[u8],
    supported: std::ops::RangeInclusive<u32>,
) -> Result<(), RecordError> {
    #[derive(Deserialize)]
    struct Envelope {
        v: Option<serde_json::Value>,
    }
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| RecordError::BadJson(e.to_string()))?;
    let Some(v) = envelope.v else {
        return Err(RecordError::BadJson("missing field `v`".into()));
    };
    match v.as_u64() {
        Some(found) if u32::try_from(found).is_ok_and(|v| supported.contains(&v)) => Ok(()),
        Some(found) => Err(RecordError::UnsupportedVersion {
            found,
            supported: *supported.end(),
        }),
        None => Err(RecordError::BadJson(format!(
            "field `v` is {v}, not a version"
        ))),
    }
}

/// A reaction on `emoji-reaction-topic`, keyed by stream id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactionRecord {
    /// Format version, always [`ReactionRecord::VERSION`] when written by this build.
    pub v: u32,
    pub stream: StreamId,
    pub user: UserId,
    pub emoji: EmojiName,
    pub count: u32,
    /// Server receive time, ms since the epoch.
    pub at_ms: i64,
    /// The request's idempotency key (version 2; absent when the client sent none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<TapKey>,
    /// The stream's own fair-use limit when its broadcaster set one (version 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair_use_limit: Option<u32>,
}

impl VersionedMessage for ReactionRecord {
    /// 2 added `key`, 3 `fair_use_limit`; older records (with neither) are still read.
    const VERSION: u32 = 3;
    const OLDEST_READ: u32 = 1;

    fn version(&self) -> u32 {
        self.v
    }

    fn check(&self) -> Result<(), RecordError> {
        if self.count == 0 {
            return Err(RecordError::Invalid("count must be at least 1".into()));
        }
        match self.key {
            Some(_) if self.v < 2 => Err(RecordError::Invalid(
                "key needs version 2 (version 1 records carry none)".into(),
            )),
            Some(key) if key.item >= MAX_KEYED_ITEMS => Err(RecordError::Invalid(format!(
                "key.item is {}; a keyed request has at most {MAX_KEYED_ITEMS} items",
                key.item
            ))),
            _ => match self.fair_use_limit {
                Some(_) if self.v < 3 => Err(RecordError::Invalid(
                    "fair_use_limit needs version 3".into(),
                )),
                Some(0) => Err(RecordError::Invalid(
                    "fair_use_limit must be at least 1".into(),
                )),
                _ => Ok(()),
            },
        }
    }
}

impl From<&Reaction> for ReactionRecord {
    /// A reaction is written as the oldest version that holds it, which every aggregate since
    /// reads: only keyed records need a reader of version 2, and only those of a stream with
    /// its own fair-use limit one of version 3 (see docs/deploying-and-operating.md).
    fn from(r: &Reaction) -> Self {
        let v = match (r.key, r.fair_use_limit) {
            (_, Some(_)) => 3,
            (Some(_), None) => 2,
            (None, None) => 1,
        };
        Self {
            v,
            stream: r.stream.clone(),
            user: r.user.clone(),
            emoji: r.emoji.clone(),
            count: r.count,
            at_ms: r.at_ms,
            key: r.key,
            fair_use_limit: r.fair_use_limit,
        }
    }
}

impl From<ReactionRecord> for Reaction {
    fn from(r: ReactionRecord) -> Self {
        Self {
            stream: r.stream,
            user: r.user,
            emoji: r.emoji,
            count: r.count,
            at_ms: r.at_ms,
            key: r.key,
            fair_use_limit: r.fair_use_limit,
        }
    }
}

/// The absolute state of one window on `emoji-output-topic`, keyed by stream id. Absolute, not
/// a delta: consumers keep the record with the largest `total` and drop the rest, so duplicates
/// and reordering are harmless.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowStateRecord {
    /// Format version, always [`WindowStateRecord::VERSION`] when written by this build.
    pub v: u32,
    pub stream: StreamId,
    /// Window start, ms since the epoch.
    pub start_ms: i64,
    /// Window end (exclusive), ms since the epoch.
    pub end_ms: i64,
    /// Taps per emoji so far.
    pub counts: EmojiCounts,
    /// Sum of `counts`; grows monotonically for a window.
    pub total: u64,
    /// Emojis to draw per emoji, by the configured swarm rule.
    pub swarm: Swarm,
    /// True once the window is past its end plus the allowed lateness: no more updates.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// When this state was computed, ms since the epoch.
    pub updated_at_ms: i64,
}

impl VersionedMessage for WindowStateRecord {
    const VERSION: u32 = 1;

    fn version(&self) -> u32 {
        self.v
    }

    fn check(&self) -> Result<(), RecordError> {
        if self.end_ms <= self.start_ms {
            return Err(RecordError::Invalid("end_ms must be after start_ms".into()));
        }
        if self.counts.values().sum::<u64>() != self.total {
            return Err(RecordError::Invalid(
                "total must equal the sum of counts".into(),
            ));
        }
        Ok(())
    }
}

/// A moment of a stream on `emoji-output-topic`, keyed by stream id, beside the window states
/// (an older notify, which reads window states only, skips it as not one). Published when a
/// moment appears, grows, ends, is confirmed or is withdrawn; the same change may be published
/// twice, so consumers keep per moment (`stream`, `moment.detected_from_ms`) the record with
/// the highest `revision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MomentRecord {
    /// Format version, always [`MomentRecord::VERSION`] when written by this build.
    pub v: u32,
    pub stream: StreamId,
    pub moment: Moment,
    pub status: MomentStatus,
    /// Grows with every change of the moment: the end of the last final window the change
    /// was computed from (0 for a provisional moment, which a window still counting made).
    pub revision: i64,
}

impl VersionedMessage for MomentRecord {
    const VERSION: u32 = 1;

    fn version(&self) -> u32 {
        self.v
    }

    fn check(&self) -> Result<(), RecordError> {
        let m = &self.moment;
        if m.end_ms <= m.start_ms || !(m.start_ms..m.end_ms).contains(&m.detected_from_ms) {
            return Err(RecordError::Invalid(
                "a moment runs from start_ms to end_ms, with detected_from_ms in between".into(),
            ));
        }
        if !m.peak_rate.is_finite() || m.peak_rate < 0.0 {
            return Err(RecordError::Invalid(
                "peak_rate must be a finite rate".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reaction_record() -> ReactionRecord {
        ReactionRecord {
            v: 1,
            stream: StreamId::parse("s", "match-1").unwrap(),
            user: UserId::parse("u", "viewer-9").unwrap(),
            emoji: EmojiName::parse("fire").unwrap(),
            count: 3,
            at_ms: 1_700_000_000_000,
            key: None,
            fair_use_limit: None,
        }
    }

    fn window_record() -> WindowStateRecord {
        let counts: EmojiCounts = [("clap", 4u64), ("fire", 21)]
            .into_iter()
            .map(|(e, n)| (EmojiName::parse(e).unwrap(), n))
            .collect();
        WindowStateRecord {
            v: 1,
            stream: StreamId::parse("s", "match-1").unwrap(),
            start_ms: 2_000,
            end_ms: 4_000,
            swarm: crate::swarm::SwarmRule::default().downscale(&counts),
            total: 25,
            counts,
            is_final: false,
            updated_at_ms: 4_100,
        }
    }

    #[test]
    fn reaction_records_round_trip_with_a_stable_shape() {
        let record = reaction_record();
        let bytes = record.encode();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"stream":"match-1","user":"viewer-9","emoji":"fire","count":3,"at_ms":1700000000000}"#
        );
        assert_eq!(ReactionRecord::decode(&bytes).unwrap(), record);
        let reaction = Reaction::from(record.clone());
        assert_eq!(ReactionRecord::from(&reaction), record);
    }

    #[test]
    fn keyed_records_carry_their_key_and_version_1_records_are_still_read() {
        let mut record = reaction_record();
        record.v = 2;
        record.key = Some(TapKey {
            key: -5,
            item: 2,
            body: 77,
        });
        assert_eq!(
            ReactionRecord::from(&Reaction::from(record.clone())),
            record
        );
        let bytes = record.encode();
        assert!(
            String::from_utf8(bytes.clone())
                .unwrap()
                .ends_with(r#","key":{"key":-5,"item":2,"body":77}}"#)
        );
        assert_eq!(ReactionRecord::decode(&bytes).unwrap(), record);
        let old = br#"{"v":1,"stream":"match-1","user":"viewer-9","emoji":"fire","count":3,"at_ms":1700000000000}"#;
        let read = ReactionRecord::decode(old).unwrap();
        assert_eq!((read.v, read.key), (1, None));
        // A key beyond what a request can hold (its bitset would be huge), or on version 1.
        for bad in [
            r#"{"v":2,"stream":"s","user":"u","emoji":"fire","count":1,"at_ms":0,"key":{"key":1,"item":4294967295,"body":2}}"#,
            r#"{"v":1,"stream":"s","user":"u","emoji":"fire","count":1,"at_ms":0,"key":{"key":1,"item":0,"body":2}}"#,
        ] {
            let refused = ReactionRecord::decode(bad.as_bytes()).unwrap_err();
            assert_eq!(refused.code(), "invalid", "{bad}");
        }
    }

    #[test]
    fn a_stream_limit_makes_a_version_3_record_and_needs_one() {
        let mut record = reaction_record();
        record.v = 3;
        record.fair_use_limit = Some(5);
        let reaction = Reaction::from(record.clone());
        assert_eq!(reaction.fair_use_limit, Some(5));
        assert_eq!(ReactionRecord::from(&reaction), record);
        let bytes = record.encode();
        assert!(
            String::from_utf8(bytes.clone())
                .unwrap()
                .ends_with(r#","fair_use_limit":5}"#)
        );
        assert_eq!(ReactionRecord::decode(&bytes).unwrap(), record);
        for bad in [
            r#"{"v":2,"stream":"s","user":"u","emoji":"fire","count":1,"at_ms":0,"fair_use_limit":5}"#,
            r#"{"v":3,"stream":"s","user":"u","emoji":"fire","count":1,"at_ms":0,"fair_use_limit":0}"#,
        ] {
            let refused = ReactionRecord::decode(bad.as_bytes()).unwrap_err();
            assert_eq!(refused.code(), "invalid", "{bad}");
        }
    }

    #[test]
    fn window_records_round_trip() {
        let record = window_record();
        let json: serde_json::Value = serde_json::from_slice(&record.encode()).unwrap();
        assert_eq!(json["final"], false);
        assert_eq!(json["swarm"]["fire"], 3);
        assert_eq!(WindowStateRecord::decode(&record.encode()).unwrap(), record);
    }

    #[test]
    fn moment_records_round_trip_and_are_no_window_states() {
        let record = MomentRecord {
            v: MomentRecord::VERSION,
            stream: StreamId::parse("s", "match-1").unwrap(),
            moment: Moment {
                detected_from_ms: 60_000,
                start_ms: 50_000,
                end_ms: 71_000,
                peak_rate: 212.5,
                emoji: "fire".into(),
                ended: true,
            },
            status: MomentStatus::Confirmed,
            revision: 72_000,
        };
        let bytes = record.encode();
        assert_eq!(MomentRecord::decode(&bytes).unwrap(), record);
        assert_eq!(
            WindowStateRecord::decode(&bytes).unwrap_err().code(),
            "bad_json"
        );
        assert_eq!(
            MomentRecord::decode(&window_record().encode())
                .unwrap_err()
                .code(),
            "bad_json"
        );
        let mut outside = record.clone();
        outside.moment.detected_from_ms = 80_000;
        assert_eq!(
            MomentRecord::decode(&outside.encode()).unwrap_err().code(),
            "invalid"
        );
    }

    #[test]
    fn malformed_records_are_told_apart() {
        let cases: [(&[u8], &str); 9] = [
            (b"not json", "bad_json"),
            (b"{}", "bad_json"),
            (br#"{"v":"1"}"#, "bad_json"),
            (br#"{"v":4,"anything":true}"#, "unsupported_version"),
            (br#"{"v":1,"stream":"s"}"#, "bad_json"),
            (
                br#"{"v":1,"stream":"bad id","user":"u","emoji":"fire","count":1,"at_ms":0}"#,
                "bad_json",
            ),
            (
                br#"{"v":1,"stream":"s","user":"u","emoji":"Fire!","count":1,"at_ms":0}"#,
                "bad_json",
            ),
            (
                br#"{"v":1,"stream":"s","user":"u","emoji":"fire","count":0,"at_ms":0}"#,
                "invalid",
            ),
            (
                br#"{"v":1,"stream":"s","user":"u","emoji":"fire","count":1,"at_ms":0,"x":1}"#,
                "bad_json",
            ),
        ];
        for (bytes, code) in cases {
            let err = ReactionRecord::decode(bytes).unwrap_err();
            assert_eq!(
                err.code(),
                code,
                "{}: {err}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut inconsistent = window_record();
        inconsistent.total += 1;
        assert_eq!(
            WindowStateRecord::decode(&inconsistent.encode())
                .unwrap_err()
                .code(),
            "invalid"
        );
    }
}
