//! AWS AppSync Events channel paths and publish limits: what notify publishes a stream's states
//! to and within, what browsers subscribe to, and what the local stack's emulation accepts. A path is `/` and one to five
//! segments, the first naming the channel namespace; each segment is what AppSync allows for a
//! namespace name (letters, digits and inner dashes, at most 50). A subscription may end in `*`,
//! which matches any one or more further segments.

use crate::StreamId;

/// Events one publish may carry (AWS AppSync Events' limit).
pub const MAX_EVENTS_PER_PUBLISH: usize = 5;

/// Largest event, in bytes (AWS AppSync Events' limit: 240 KB).
pub const MAX_EVENT_BYTES: usize = 240 * 1024;

/// Most segments in a channel path.
pub const MAX_SEGMENTS: usize = 5;

/// Longest segment.
pub const MAX_SEGMENT_LEN: usize = 50;

/// Why a channel path is not one AppSync accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("a channel path starts with '/' and has 1 to {MAX_SEGMENTS} segments: {0:?}")]
    Shape(String),
    #[error(
        "segment {0:?}: 1 to {MAX_SEGMENT_LEN} letters, digits or inner dashes, or a final '*' when subscribing"
    )]
    Segment(String),
}

/// Whether `segment` is a valid literal segment.
pub fn is_segment(segment: &str) -> bool {
    let bytes = segment.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_SEGMENT_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first() != Some(&b'-')
        && bytes.last() != Some(&b'-')
}

/// The segments of `path`, checked; `wildcard` allows a final `*` (subscriptions only).
pub fn parse_path(path: &str, wildcard: bool) -> Result<Vec<&str>, ChannelError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    if segments.is_empty() || segments.len() > MAX_SEGMENTS {
        return Err(ChannelError::Shape(path.to_owned()));
    }
    let last = segments.len() - 1;
    for (index, segment) in segments.iter().enumerate() {
        let star = wildcard && index == last && index > 0 && *segment == "*";
        if !star && !is_segment(segment) {
            return Err(ChannelError::Segment((*segment).to_owned()));
        }
    }
    Ok(segments)
}

/// Whether a subscription to `pattern` receives events published to `channel` (both valid).
pub fn matches(pattern: &[&str], channel: &[&str]) -> bool {
    match pattern.split_last() {
        Some((&"*", prefix)) => channel.len() > prefix.len() && channel.starts_with(prefix),
        _ => pattern == channel,
    }
}

/// The channel segment of a stream: its id when that is a valid segment, else `h` and the
/// FNV-1a 64 hash of the id in hex (stream ids may hold `_`, `.` and `:`, and be 64 long).
/// Two streams may then share a channel; every event names its stream, and clients ignore
/// other streams' states.
pub fn stream_segment(stream: &StreamId) -> String {
    let id = stream.as_str();
    if is_segment(id) {
        id.to_owned()
    } else {
        format!("h{:016x}", crate::stream_shards::stable_hash(id))
    }
}

/// The channel a stream's states are published to: `/{namespace}/{segment}`.
pub fn stream_channel(namespace: &str, stream: &StreamId) -> String {
    format!("/{namespace}/{}", stream_segment(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(id: &str) -> StreamId {
        StreamId::parse("stream", id).unwrap()
    }

    #[test]
    fn streams_map_to_valid_channels() {
        assert_eq!(
            stream_channel("streams", &stream("final-2026")),
            "/streams/final-2026"
        );
        // The browser computes the same (web/model.js; its test checks this value too).
        let odd = stream_channel("streams", &stream("cup_final:2026.v2"));
        assert_eq!(odd, "/streams/h93e1ef301685e396");
        assert!(parse_path(&odd, false).is_ok(), "{odd}");
        let long = "a".repeat(64);
        assert!(parse_path(&stream_channel("streams", &stream(&long)), false).is_ok());
        assert_ne!(
            stream_channel("streams", &stream("a_b")),
            stream_channel("streams", &stream("a.b"))
        );
        // A stream whose id looks like a hashed segment is still its own channel.
        assert!(is_segment("h0123456789abcdef"));
    }

    #[test]
    fn paths_and_wildcards() {
        assert_eq!(parse_path("/streams/a", false).unwrap(), ["streams", "a"]);
        assert_eq!(parse_path("streams/a", false).unwrap(), ["streams", "a"]);
        for bad in [
            "/",
            "/streams/",
            "/streams//a",
            "/-a",
            "/a-",
            "/a/b/c/d/e/f",
            "/a_b",
        ] {
            assert!(parse_path(bad, true).is_err(), "{bad}");
        }
        assert!(parse_path("/streams/*", false).is_err());
        assert!(
            parse_path("/*", true).is_err(),
            "the namespace cannot be a wildcard"
        );
        assert!(parse_path("/streams/*/a", true).is_err());
        let all = parse_path("/streams/*", true).unwrap();
        assert!(matches(&all, &["streams", "a"]));
        assert!(matches(&all, &["streams", "a", "b"]));
        assert!(!matches(&all, &["streams"]));
        assert!(!matches(&all, &["other", "a"]));
        assert!(matches(&["streams", "a"], &["streams", "a"]));
        assert!(!matches(&["streams", "a"], &["streams", "a", "b"]));
        assert!(parse_path(&format!("/{}", "a".repeat(51)), false).is_err());
    }
}
