//! `GET /streams/{id}/moments`: the moments a stream's crowd reacted to (see
//! `reactions::moments`), as JSON, or as WebVTT chapters when the client asks for `text/vtt`,
//! so that any HTML5 player can list them on a recording (`<track kind="chapters">`). Cue
//! times are relative to the recording's start: `origin` (ms since the epoch) when given, else
//! when the stream went live. Withdrawn moments are left out; provisional ones are listed in
//! JSON (with their status) and left out of chapters, which a player may cache.

use crate::api_error::ApiError;
use crate::query_string;
use reactions::moments::MomentStatus;
use reactions::mongo::{MomentStore, REQUEST_READ_LIMIT, StoreError, StoredMoment, within};
use reactions::{Rule, StreamEntry, ValidationError};
use serde_json::{Value, json};
use std::fmt::Write;

/// The most moments one answer lists (a stream has a few per hour).
pub const MAX_MOMENTS: i64 = 1_000;

/// How the answer is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MomentsFormat {
    Json,
    WebVtt,
}

impl MomentsFormat {
    /// WebVTT when the `Accept` header names `text/vtt`, JSON otherwise.
    pub fn from_accept(accept: Option<&str>) -> Self {
        let wants_vtt = accept.is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.split(';').next().map(str::trim) == Some("text/vtt"))
        });
        if wants_vtt {
            MomentsFormat::WebVtt
        } else {
            MomentsFormat::Json
        }
    }
}

/// Parses `origin` from the raw query string.
pub fn parse_origin(query: Option<&str>) -> Result<Option<i64>, ApiError> {
    let mut origin = None;
    for (name, value) in query_string::pairs(query) {
        match name.as_str() {
            "origin" => {
                let parsed = value
                    .parse::<i64>()
                    .ok()
                    .filter(|ms| *ms >= 0)
                    .ok_or_else(|| {
                        ApiError::Invalid(vec![ValidationError::new(
                            "origin",
                            Rule::WrongType {
                                expected: "integer (ms since the epoch, not negative)",
                            },
                        )])
                    })?;
                origin = Some(parsed);
            }
            other => return Err(query_string::unknown_parameter(other)),
        }
    }
    Ok(origin)
}

/// Reads the stream's moments (not withdrawn), oldest first.
pub async fn read(store: &MomentStore, entry: &StreamEntry) -> Result<Vec<StoredMoment>, ApiError> {
    within(
        REQUEST_READ_LIMIT,
        "reading moments",
        store.list(&entry.id, false, MAX_MOMENTS),
    )
    .await
    .map_err(|error: StoreError| {
        tracing::error!(%error, "reading moments failed");
        ApiError::Unavailable { service: "MongoDB" }
    })
}

/// The JSON answer.
pub fn to_json(entry: &StreamEntry, moments: &[StoredMoment], origin: Option<i64>) -> Value {
    let origin = origin.or(entry.started_ms);
    json!({
        "stream": entry.id.as_str(),
        "origin_ms": origin,
        "moments": moments.iter().map(|m| {
            let glyph = entry.catalogue.find(&m.moment.emoji).map(|e| e.glyph.as_str());
            json!({
                "detected_from_ms": m.moment.detected_from_ms,
                "start_ms": m.moment.start_ms,
                "end_ms": m.moment.end_ms,
                "peak_rate": m.moment.peak_rate,
                "emoji": m.moment.emoji,
                "glyph": glyph,
                "status": m.status.as_str(),
                "ended": m.moment.ended,
                "revision": m.revision,
            })
        }).collect::<Vec<_>>(),
    })
}

/// A WebVTT timestamp (`hh:mm:ss.ttt`) of `ms` from the origin.
fn vtt_time(ms: i64) -> String {
    let ms = ms.max(0);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    )
}

/// The WebVTT chapters of the confirmed moments, from `origin`: each a cue from the moment's
/// padded start to its end, titled with its emoji and peak rate. Moments before the origin
/// are left out; one that started before it begins at 0.
pub fn to_webvtt(entry: &StreamEntry, moments: &[StoredMoment], origin: i64) -> String {
    let mut vtt = String::from("WEBVTT\n");
    for m in moments
        .iter()
        .filter(|m| m.status == MomentStatus::Confirmed && m.moment.end_ms > origin)
    {
        let title = match entry.catalogue.find(&m.moment.emoji) {
            Some(emoji) => format!("{} {}", emoji.glyph, m.moment.emoji),
            None => m.moment.emoji.clone(),
        };
        // Emoji names are [a-z0-9_-] and glyphs are emoji: neither can hold "-->" or a newline.
        let _ = write!(
            vtt,
            "\nmoment-{}\n{} --> {}\n{} · peak {:.0} taps/s\n",
            m.moment.detected_from_ms,
            vtt_time(m.moment.start_ms - origin),
            vtt_time(m.moment.end_ms - origin),
            title,
            m.moment.peak_rate,
        );
    }
    vtt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_header_chooses_webvtt() {
        assert_eq!(MomentsFormat::from_accept(None), MomentsFormat::Json);
        assert_eq!(
            MomentsFormat::from_accept(Some("application/json")),
            MomentsFormat::Json
        );
        assert_eq!(
            MomentsFormat::from_accept(Some("text/html, text/vtt;q=0.9")),
            MomentsFormat::WebVtt
        );
        assert_eq!(
            MomentsFormat::from_accept(Some("text/vtt-like")),
            MomentsFormat::Json
        );
    }

    #[test]
    fn origin_is_validated() {
        assert_eq!(parse_origin(None).unwrap(), None);
        assert_eq!(parse_origin(Some("origin=1500")).unwrap(), Some(1_500));
        for bad in ["origin=-1", "origin=soon", "since=4"] {
            assert!(parse_origin(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn webvtt_times_count_from_the_origin() {
        assert_eq!(vtt_time(0), "00:00:00.000");
        assert_eq!(vtt_time(3_723_045), "01:02:03.045");
        assert_eq!(vtt_time(-5_000), "00:00:00.000");
    }
}
