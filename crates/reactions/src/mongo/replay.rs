//! The reads behind replay (see `crate::replay`): a stream's windows over a range, only the
//! fields a replay needs, in start order; and the stream's taps per heatmap segment, summed
//! by the server (`aggregate` with `$match`, `$group` and `$mod`, which MongoDB, Atlas and
//! Amazon DocumentDB all support), so the heatmap of a long stream does not bring every
//! window over the wire.

use super::{StoreError, WindowStore, server};
use crate::emoji::EmojiName;
use crate::ids::StreamId;
use crate::window::EmojiCounts;
use futures::TryStreamExt;
use mongodb::bson::{Document, doc};

/// A stream's windows over a range, as replay reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayWindows {
    /// (start, counts) in ascending start.
    pub windows: Vec<(i64, EmojiCounts)>,
    /// Whether every window read is final (no retry can change it).
    pub all_final: bool,
}

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(format!("replay: {what}"))
}

impl WindowStore {
    /// The windows of `stream` starting in `[from_ms, to_ms)`.
    pub async fn replay_windows(
        &self,
        stream: &StreamId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ReplayWindows, StoreError> {
        let documents: Vec<Document> = self
            .collection
            .find(doc! {
                "stream": stream.as_str(),
                "start_ms": { "$gte": from_ms, "$lt": to_ms },
            })
            .projection(doc! { "_id": 0, "start_ms": 1, "counts": 1, "final": 1 })
            .sort(doc! { "start_ms": 1 })
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        let mut read = ReplayWindows {
            windows: Vec::with_capacity(documents.len()),
            all_final: true,
        };
        for document in &documents {
            let start = document
                .get_i64("start_ms")
                .map_err(|_| malformed("start_ms"))?;
            let mut counts = EmojiCounts::new();
            if let Ok(stored) = document.get_document("counts") {
                for (name, value) in stored {
                    let emoji = EmojiName::parse(name).map_err(|_| malformed("emoji name"))?;
                    let n = value
                        .as_i64()
                        .and_then(|n| u64::try_from(n).ok())
                        .ok_or_else(|| malformed("count"))?;
                    counts.insert(emoji, n);
                }
            }
            read.all_final &= document.get_bool("final").unwrap_or(false);
            read.windows.push((start, counts));
        }
        Ok(read)
    }

    /// The taps of `stream` from `from_ms` to `to_ms` per segment of `segment_ms`, as
    /// (segment index, taps); segments without taps are left out.
    pub async fn segment_totals(
        &self,
        stream: &StreamId,
        from_ms: i64,
        to_ms: i64,
        segment_ms: i64,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let pipeline = [
            doc! { "$match": {
                "stream": stream.as_str(),
                "start_ms": { "$gte": from_ms, "$lt": to_ms },
            } },
            doc! { "$group": {
                // The segment's start: the window's start less its offset into the segment.
                "_id": { "$subtract": [
                    "$start_ms",
                    { "$mod": [{ "$subtract": ["$start_ms", from_ms] }, segment_ms] },
                ] },
                "taps": { "$sum": "$total" },
            } },
        ];
        let documents: Vec<Document> = self
            .collection
            .aggregate(pipeline)
            .await
            .map_err(server("aggregate"))?
            .try_collect()
            .await
            .map_err(server("aggregate"))?;
        documents
            .iter()
            .map(|document| {
                let start = document
                    .get("_id")
                    .and_then(super::integer)
                    .ok_or_else(|| malformed("segment"))?;
                let taps = document
                    .get("taps")
                    .and_then(super::integer)
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| malformed("segment taps"))?;
                Ok(((start - from_ms) / segment_ms, taps))
            })
            .collect()
    }
}
