//! `GET /streams/{id}/replay?from=&to=&resolution=`: a stream's exact counts over a range, in
//! buckets of a chosen resolution (see `reactions::replay`), with the heatmap of the whole
//! stream, for a page playing the swarm in sync with a recording. `from` and `to` default to
//! when the stream went live and ended (or now). A range that can no longer change (the stream
//! ended a while ago and every window in it is final) is served with a year-long, immutable
//! `Cache-Control`, so a CDN answers a popular recording; anything else for one second.
//! "A while" is an hour ([`SETTLED_AFTER_END_MS`]).

use crate::api_error::ApiError;
use crate::query_string;
use reactions::mongo::{REQUEST_READ_LIMIT, StoreError, WindowStore, within};
use reactions::replay::{
    BucketBuilder, HEATMAP_SEGMENTS, MAX_BUCKETS, RangeError, ReplayRange, heatmap_segment_ms,
    intensities, segment_totals,
};
use reactions::{Rule, StreamEntry, ValidationError};
use serde::Serialize;

/// How long after its end a stream's ranges may be cached for good (when every window read is
/// final). ingest cannot see aggregate's backlog, and a window that had no taps yet has no
/// document to be final: an hour is far past the allowed lateness, any retry of a record sent
/// before the end, and any backlog short of an incident (the `AggregateLag` alarm's).
pub const SETTLED_AFTER_END_MS: i64 = 60 * 60_000;

/// The most windows one request reads (a day of 2 s windows): a longer range needs several.
pub const MAX_WINDOWS_READ: i64 = 4 * MAX_BUCKETS;

/// The `Cache-Control` of a range that can no longer change.
pub const SETTLED_CACHE: &str = "public, max-age=31536000, immutable";
/// The `Cache-Control` of anything else: a CDN still collapses a crowd's requests.
pub const LIVE_CACHE: &str = "public, max-age=1";

/// The query as given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayQuery {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub resolution_ms: Option<i64>,
}

fn invalid(field: &str, rule: Rule) -> ApiError {
    ApiError::Invalid(vec![ValidationError::new(field, rule)])
}

/// Parses `from`, `to` and `resolution` (integers, ms) from the raw query string.
pub fn parse_query(query: Option<&str>) -> Result<ReplayQuery, ApiError> {
    let mut parsed = ReplayQuery::default();
    for (name, value) in query_string::pairs(query) {
        let slot = match name.as_str() {
            "from" => &mut parsed.from_ms,
            "to" => &mut parsed.to_ms,
            "resolution" => &mut parsed.resolution_ms,
            other => return Err(query_string::unknown_parameter(other)),
        };
        let number = value
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                invalid(
                    &name,
                    Rule::WrongType {
                        expected: "integer (ms), not negative",
                    },
                )
            })?;
        *slot = Some(number);
    }
    Ok(parsed)
}

/// The range the query asks of `entry` at `now_ms`.
pub fn range_of(
    entry: &StreamEntry,
    query: &ReplayQuery,
    width_ms: i64,
    now_ms: i64,
) -> Result<ReplayRange, ApiError> {
    let from = query
        .from_ms
        .or(entry.started_ms)
        .ok_or_else(|| ApiError::NoOrigin {
            stream: entry.id.as_str().to_owned(),
            parameter: "from",
        })?;
    let to = query.to_ms.or(entry.ended_ms).unwrap_or(now_ms);
    let range = ReplayRange::new(from, to, query.resolution_ms, width_ms).map_err(|error| {
        let field = match error {
            RangeError::Empty { .. } => "to",
            RangeError::NotWholeWindows { .. } | RangeError::TooManyBuckets { .. } => "resolution",
        };
        invalid(
            field,
            Rule::BadRange {
                reason: error.to_string(),
            },
        )
    })?;
    let windows = (range.to_ms - range.from_ms) / width_ms;
    if windows > MAX_WINDOWS_READ {
        return Err(invalid(
            "to",
            Rule::OutOfRange {
                min: 1,
                max: MAX_WINDOWS_READ,
                value: windows,
            },
        ));
    }
    Ok(range)
}

/// The heatmap of an answer.
#[derive(Debug, Serialize)]
struct Heatmap {
    from_ms: i64,
    to_ms: i64,
    segment_ms: i64,
    intensity: Vec<f64>,
}

/// The answer, serialized as it is (a long recording's answer holds ten thousand rows: no
/// intermediate JSON tree).
#[derive(Debug, Serialize)]
struct ReplayAnswer<'a> {
    stream: &'a str,
    window_width_ms: i64,
    started_ms: Option<i64>,
    ended_ms: Option<i64>,
    from_ms: i64,
    to_ms: i64,
    resolution_ms: i64,
    #[serde(rename = "final")]
    is_final: bool,
    emojis: Vec<String>,
    /// Per non-empty bucket: its index, then its count per emoji.
    buckets: Vec<Vec<u64>>,
    heatmap: Option<Heatmap>,
}

/// The answer as JSON text, and whether it can no longer change. The heatmap covers the
/// stream's life (from when it went live to when it ended, or now); when the range asked
/// covers it, as a page asking for the whole recording does, it is summed from the windows
/// read, else the server sums it.
pub async fn replay(
    store: &WindowStore,
    entry: &StreamEntry,
    range: ReplayRange,
    width_ms: i64,
    now_ms: i64,
) -> Result<(String, bool), ApiError> {
    let unavailable = |error: StoreError| {
        tracing::error!(%error, "reading a replay failed");
        ApiError::Unavailable { service: "MongoDB" }
    };
    let span = entry
        .started_ms
        .map(|from| (from, entry.ended_ms.unwrap_or(now_ms).max(from + width_ms)));
    let covered = span.filter(|(from, to)| range.from_ms <= *from && *to <= range.to_ms);
    let separate = span.filter(|_| covered.is_none());
    let heatmap_read = async {
        match separate {
            Some((from, to)) => {
                let segment = heatmap_segment_ms(from, to, width_ms);
                Ok(Some(
                    store.segment_totals(&entry.id, from, to, segment).await?,
                ))
            }
            None => Ok(None),
        }
    };
    let (windows, separate_totals) = tokio::join!(
        within(
            REQUEST_READ_LIMIT,
            "reading a replay's windows",
            store.replay_windows(&entry.id, range.from_ms, range.to_ms),
        ),
        within(
            REQUEST_READ_LIMIT,
            "reading a replay's heatmap",
            heatmap_read
        )
    );
    let (windows, separate_totals) = (
        windows.map_err(unavailable)?,
        separate_totals.map_err(unavailable)?,
    );
    // One pass over the windows read: the buckets, and each window's taps for a heatmap the
    // range covers.
    let mut builder = BucketBuilder::new(range);
    let mut window_totals: Vec<(i64, u64)> = Vec::with_capacity(windows.len());
    windows
        .visit(|start, counts| {
            let mut total = 0;
            builder.add(start, counts.inspect(|(_, n)| total += n));
            window_totals.push((start, total));
        })
        .map_err(unavailable)?;
    let heatmap = span.map(|(from, to)| {
        let segment = heatmap_segment_ms(from, to, width_ms);
        let totals = separate_totals
            .clone()
            .unwrap_or_else(|| segment_totals(window_totals.iter().copied(), from, to, segment));
        let segments = HEATMAP_SEGMENTS.min((to - from + segment - 1) / segment);
        Heatmap {
            from_ms: from,
            to_ms: to,
            segment_ms: segment,
            intensity: intensities(&totals, segments),
        }
    });
    let buckets = builder.finish();
    let settled = windows.all_final
        && entry
            .ended_ms
            .is_some_and(|end| now_ms >= end.saturating_add(SETTLED_AFTER_END_MS));
    let answer = ReplayAnswer {
        stream: entry.id.as_str(),
        window_width_ms: width_ms,
        started_ms: entry.started_ms,
        ended_ms: entry.ended_ms,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        resolution_ms: range.resolution_ms,
        is_final: settled,
        buckets: buckets
            .rows
            .into_iter()
            .map(|(index, counts)| {
                let mut row = Vec::with_capacity(counts.len() + 1);
                row.push(u64::try_from(index).unwrap_or(0));
                row.extend(counts);
                row
            })
            .collect(),
        emojis: buckets.emojis,
        heatmap,
    };
    // Plain numbers and strings: serialization cannot fail.
    Ok((serde_json::to_string(&answer).unwrap_or_default(), settled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_validated() {
        let q = parse_query(Some("from=1000&to=9000&resolution=2000")).unwrap();
        assert_eq!(
            q,
            ReplayQuery {
                from_ms: Some(1_000),
                to_ms: Some(9_000),
                resolution_ms: Some(2_000)
            }
        );
        assert_eq!(parse_query(None).unwrap(), ReplayQuery::default());
        for bad in ["from=yesterday", "to=-5", "resolution=1.5", "since=4"] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }
}
