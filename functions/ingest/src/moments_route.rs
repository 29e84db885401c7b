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

/// What the query asks: `origin`, and `format` (`vtt` or `json`), which wins over the
/// `Accept` header: a `<track>` element fetches with `Accept: */*`, so its `src` says
/// `?format=vtt`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MomentsQuery {
    pub origin: Option<i64>,
    pub format: Option<MomentsFormat>,
}

/// Parses `origin` and `format` from the raw query string.
pub fn parse_query(query: Option<&str>) -> Result<MomentsQuery, ApiError> {
    let mut parsed = MomentsQuery::default();
    for (name, value) in query_string::pairs(query) {
        match name.as_str() {
            "format" => {
                parsed.format = Some(match value.as_str() {
                    "vtt" => MomentsFormat::WebVtt,
                    "json" => MomentsFormat::Json,
                    _ => {
                        return Err(ApiError::Invalid(vec![ValidationError::new(
                            "format",
                            Rule::WrongType {
                                expected: "string, vtt or json",
                            },
                        )]));
                    }
                });
            }
            "origin" => {
                let origin = value
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
                parsed.origin = Some(origin);
            }
            other => return Err(query_string::unknown_parameter(other)),
        }
    }
    Ok(parsed)
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
                "first_seen_ms": m.first_seen_ms,
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
    // Chapters may nest or follow one another, not overlap: moments closer than their padding
    // start where the previous one ends.
    let mut previous_end = i64::MIN;
    for m in moments
        .iter()
        .filter(|m| m.status == MomentStatus::Confirmed && m.moment.end_ms > origin)
    {
        let start = m.moment.start_ms.max(previous_end).max(origin);
        if start >= m.moment.end_ms {
            continue;
        }
        previous_end = m.moment.end_ms;
        let title = match entry.catalogue.find(&m.moment.emoji) {
            Some(emoji) => format!("{} {}", emoji.glyph, m.moment.emoji),
            None => m.moment.emoji.clone(),
        };
        let _ = write!(
            vtt,
            "\nmoment-{}\n{} --> {}\n{} · peak {:.0} taps/s\n",
            m.moment.detected_from_ms,
            vtt_time(start - origin),
            vtt_time(m.moment.end_ms - origin),
            cue_text(&title),
            m.moment.peak_rate,
        );
    }
    vtt
}

/// Text safe in a cue: one line, with `&`, `<` and `>` escaped (a cue's text is markup), so
/// no catalogue glyph can end a cue or open a tag.
fn cue_text(text: &str) -> String {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => safe.push_str("&amp;"),
            '<' => safe.push_str("&lt;"),
            '>' => safe.push_str("&gt;"),
            '\n' | '\r' => safe.push(' '),
            c => safe.push(c),
        }
    }
    safe
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
    fn origin_and_format_are_validated() {
        assert_eq!(parse_query(None).unwrap(), MomentsQuery::default());
        let q = parse_query(Some("origin=1500&format=vtt")).unwrap();
        assert_eq!(
            (q.origin, q.format),
            (Some(1_500), Some(MomentsFormat::WebVtt))
        );
        for bad in ["origin=-1", "origin=soon", "since=4", "format=srt"] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn cues_are_one_line_of_escaped_text_and_chapters_do_not_overlap() {
        assert_eq!(cue_text("a<b>&c\n-->"), "a&lt;b&gt;&amp;c --&gt;");
        let entry = StreamEntry {
            id: reactions::StreamId::parse("id", "m").unwrap(),
            title: "m".into(),
            status: reactions::StreamStatus::Ended,
            catalogue: reactions::EmojiCatalogue::parse("fire=🔥").unwrap(),
            created_ms: 0,
            updated_ms: 0,
            started_ms: Some(0),
            ended_ms: Some(100_000),
            reactions_paused: false,
            fair_use_limit: None,
        };
        let moment = |from_ms: i64| StoredMoment {
            stream: entry.id.clone(),
            moment: reactions::moments::Moment {
                detected_from_ms: from_ms,
                start_ms: from_ms - 10_000,
                end_ms: from_ms + 7_000,
                peak_rate: 99.6,
                emoji: "fire".into(),
                ended: true,
            },
            status: MomentStatus::Confirmed,
            revision: 1,
            first_seen_ms: 0,
        };
        // 12 s apart: padded, they would overlap by 5 s.
        let vtt = to_webvtt(&entry, &[moment(20_000), moment(32_000)], 0);
        assert_eq!(
            vtt,
            "WEBVTT\n\nmoment-20000\n00:00:10.000 --> 00:00:27.000\n🔥 fire · peak 100 taps/s\n\nmoment-32000\n00:00:27.000 --> 00:00:39.000\n🔥 fire · peak 100 taps/s\n"
        );
    }

    #[test]
    fn webvtt_times_count_from_the_origin() {
        assert_eq!(vtt_time(0), "00:00:00.000");
        assert_eq!(vtt_time(3_723_045), "01:02:03.045");
        assert_eq!(vtt_time(-5_000), "00:00:00.000");
    }
}
