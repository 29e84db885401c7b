//! The reads behind replay (see `crate::replay`): a stream's windows over a range, only the
//! fields a replay needs, in start order, read as raw documents (a long range in parts at
//! once); and the stream's taps per heatmap segment, summed
//! by the server (`aggregate` with `$match`, `$group` and `$mod`, which MongoDB, Atlas and
//! Amazon DocumentDB all support), so the heatmap of a long stream does not bring every
//! window over the wire.

use super::{StoreError, WindowStore, server};
use crate::ids::StreamId;
use futures::TryStreamExt;
use mongodb::bson::{Document, RawBsonRef, RawDocumentBuf, doc};

/// A stream's windows over a range, as replay reads them: the documents as they came (no
/// tree of values per count: a long recording's hundred thousand counts are read in place).
#[derive(Debug, Clone, Default)]
pub struct ReplayWindows {
    documents: Vec<RawDocumentBuf>,
    /// Whether every window read is final (no retry can change it).
    pub all_final: bool,
}

/// Windows per round trip of a replay read (a long recording's are small documents).
const READ_BATCH: u32 = 5_000;

/// A long range is read in this many parts at once, the server working on each.
const READ_PARTS: i64 = 4;

/// Ranges shorter than this many windows' worth of time are read in one part.
const PART_AT_LEAST_MS: i64 = 600_000;

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(format!("replay: {what}"))
}

impl ReplayWindows {
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// Calls `visit` with each window's start and its counts per emoji, in ascending start.
    pub fn visit(
        &self,
        mut visit: impl FnMut(i64, &mut dyn Iterator<Item = (&str, u64)>),
    ) -> Result<(), StoreError> {
        for document in &self.documents {
            let start = document
                .get_i64("start_ms")
                .map_err(|_| malformed("start_ms"))?;
            // A window without counts (none stored yet) has no taps to show.
            let counts = document.get_document("counts").ok();
            let mut bad = false;
            let mut entries = counts
                .into_iter()
                .flat_map(|c| c.into_iter())
                .filter_map(|entry| {
                    let (name, value) = match entry {
                        Ok(pair) => pair,
                        Err(_) => {
                            bad = true;
                            return None;
                        }
                    };
                    let n = match value {
                        RawBsonRef::Int64(n) => u64::try_from(n).ok(),
                        RawBsonRef::Int32(n) => u64::try_from(n).ok(),
                        _ => None,
                    };
                    if n.is_none() {
                        bad = true;
                    }
                    n.map(|n| (name, n))
                });
            visit(start, &mut entries);
            drop(entries);
            if bad {
                return Err(malformed("counts"));
            }
        }
        Ok(())
    }
}

impl WindowStore {
    /// The windows of `stream` starting in `[from_ms, to_ms)`, a long range read in parts at
    /// once.
    pub async fn replay_windows(
        &self,
        stream: &StreamId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ReplayWindows, StoreError> {
        let span = (to_ms - from_ms).max(0);
        let parts = (span / PART_AT_LEAST_MS).clamp(1, READ_PARTS);
        let step = span / parts + 1;
        let reads = (0..parts).map(|part| {
            let from = from_ms + part * step;
            let to = (from + step).min(to_ms);
            self.replay_part(stream, from, to)
        });
        let mut read = ReplayWindows {
            documents: Vec::new(),
            all_final: true,
        };
        for part in futures::future::try_join_all(reads).await? {
            read.all_final &= part.all_final;
            read.documents.extend(part.documents);
        }
        Ok(read)
    }

    async fn replay_part(
        &self,
        stream: &StreamId,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<ReplayWindows, StoreError> {
        let documents: Vec<RawDocumentBuf> = self
            .collection
            .clone_with_type::<RawDocumentBuf>()
            .find(doc! {
                "stream": stream.as_str(),
                "start_ms": { "$gte": from_ms, "$lt": to_ms },
            })
            .projection(doc! { "_id": 0, "start_ms": 1, "counts": 1, "final": 1 })
            .sort(doc! { "start_ms": 1 })
            .batch_size(READ_BATCH)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        let all_final = documents
            .iter()
            .all(|d| d.get_bool("final").unwrap_or(false));
        Ok(ReplayWindows {
            documents,
            all_final,
        })
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
