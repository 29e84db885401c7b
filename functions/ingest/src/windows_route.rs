//! `GET /streams/{id}/windows?since=&limit=`: the stored counts of a stream's windows, for late
//! joiners and replays. Reads MongoDB only; never touches Kafka.

use crate::api_error::ApiError;
use crate::query_string;
use reactions::mongo::{REQUEST_READ_LIMIT, StoreError, WindowStore, within};
use reactions::{Rule, StreamId, ValidationError, WindowWidth};
use serde_json::{Value, json};

/// The largest page of windows one request may ask for.
pub const MAX_LIMIT: u32 = 500;
/// The page size when `limit` is not given (one minute of 2 s windows).
pub const DEFAULT_LIMIT: u32 = 30;

/// A parsed, validated windows query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsQuery {
    pub stream: StreamId,
    pub since_ms: Option<i64>,
    pub limit: u32,
}

fn invalid(field: &str, rule: Rule) -> ApiError {
    ApiError::Invalid(vec![ValidationError::new(field, rule)])
}

/// Parses the stream id from the path and `since`/`limit` from the raw query string.
pub fn parse_query(stream: &str, query: Option<&str>) -> Result<WindowsQuery, ApiError> {
    let stream = StreamId::parse("stream_id", stream).map_err(|e| ApiError::Invalid(vec![e]))?;
    let mut since_ms = None;
    let mut limit = DEFAULT_LIMIT;
    for (name, value) in query_string::pairs(query) {
        match name.as_str() {
            "since" => {
                since_ms = Some(value.parse::<i64>().map_err(|_| {
                    invalid(
                        "since",
                        Rule::WrongType {
                            expected: "integer (ms since the epoch)",
                        },
                    )
                })?);
            }
            "limit" => {
                let parsed: i64 = value.parse().map_err(|_| {
                    invalid(
                        "limit",
                        Rule::WrongType {
                            expected: "integer",
                        },
                    )
                })?;
                if !(1..=i64::from(MAX_LIMIT)).contains(&parsed) {
                    return Err(invalid(
                        "limit",
                        Rule::OutOfRange {
                            min: 1,
                            max: i64::from(MAX_LIMIT),
                            value: parsed,
                        },
                    ));
                }
                limit = parsed as u32;
            }
            other => return Err(query_string::unknown_parameter(other)),
        }
    }
    Ok(WindowsQuery {
        stream,
        since_ms,
        limit,
    })
}

/// Runs the query and renders the answer.
pub async fn list_windows(
    store: &WindowStore,
    query: &WindowsQuery,
    width: WindowWidth,
) -> Result<Value, ApiError> {
    let windows = within(
        REQUEST_READ_LIMIT,
        "reading windows",
        store.list_windows(&query.stream, query.since_ms, query.limit),
    )
    .await
    .map_err(|error: StoreError| {
        // Whatever went wrong is ours or MongoDB's, never the client's: 503, retry later.
        tracing::error!(%error, "reading windows failed");
        ApiError::Unavailable { service: "MongoDB" }
    })?
    .windows;
    Ok(json!({
        "stream": query.stream.as_str(),
        "window_width_ms": width.millis(),
        "windows": windows.iter().map(|w| json!({
            "start_ms": w.key.start_ms,
            "end_ms": w.end_ms,
            "counts": w.counts,
            "total": w.total,
            "final": w.is_final,
        })).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_validated() {
        let q = parse_query("m1", Some("since=4000&limit=5")).unwrap();
        assert_eq!((q.since_ms, q.limit), (Some(4_000), 5));
        let q = parse_query("m1", None).unwrap();
        assert_eq!((q.since_ms, q.limit), (None, DEFAULT_LIMIT));
        let field = |stream, query| match parse_query(stream, Some(query)).unwrap_err() {
            ApiError::Invalid(errors) => (errors[0].field.clone(), errors[0].rule.code()),
            other => panic!("{other:?}"),
        };
        assert_eq!(field("m 1", ""), ("stream_id".into(), "bad_charset"));
        assert_eq!(
            field("m1", "since=yesterday"),
            ("since".into(), "wrong_type")
        );
        assert_eq!(field("m1", "limit=0"), ("limit".into(), "out_of_range"));
        assert_eq!(field("m1", "limit=501"), ("limit".into(), "out_of_range"));
        assert_eq!(field("m1", "limit=1e3"), ("limit".into(), "wrong_type"));
        assert_eq!(field("m1", "order=desc"), ("order".into(), "unknown_field"));
    }
}
