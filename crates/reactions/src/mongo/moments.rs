//! The `moment_detectors` and `moments` collections (see `crate::moments`). A stream's detector
//! is one document, written by the `final` pass after it took the stream's newly final windows,
//! and only if it still holds the state the pass read (a stale pass cannot move it back or
//! take a window twice). Moments are one document per stream and first spike window, written
//! before the detector that made them: a pass that dies in between makes the same moments
//! again from the same windows, and the write is guarded by the change's revision, so a
//! change is never undone by an older one. A window still counting may add a provisional
//! moment, which never overwrites a moment already there.

use super::{StoreError, WriteTimes, is_duplicate_key, server};
use crate::ids::StreamId;
use crate::moments::{Moment, MomentDetector, MomentRule, MomentStatus};
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use std::collections::BTreeMap;

/// A stream's detector as read, with the revision a write of it is conditional on.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDetector {
    pub detector: MomentDetector,
    /// The stored `rev` (`None`: no document yet).
    read_rev: Option<i64>,
}

impl StoredDetector {
    /// A stream with no detector yet starts with `rule`.
    pub fn fresh(rule: MomentRule) -> Self {
        Self {
            detector: MomentDetector::new(rule),
            read_rev: None,
        }
    }
}

/// One stored moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMoment {
    pub stream: StreamId,
    pub moment: Moment,
    pub status: MomentStatus,
    pub revision: i64,
    /// When viewers were first shown the moment: when it was first written (provisional or
    /// confirmed), or earlier when it replaced a provisional moment within its span (the final
    /// windows found the spike a window before the live ones did), which was on screen since.
    pub first_seen_ms: i64,
}

/// The two collections.
#[derive(Debug, Clone)]
pub struct MomentStore {
    database: Database,
    detectors: Collection<Document>,
    moments: Collection<Document>,
}

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(format!("moments: {what}"))
}

/// A detector's revision: where its next window starts (`i64::MIN` before its first).
fn rev_of(detector: &MomentDetector) -> i64 {
    detector.next_start_ms().unwrap_or(i64::MIN)
}

fn expiry(end_ms: i64, times: WriteTimes) -> DateTime {
    let retention_ms = i64::try_from(times.retention.as_millis()).unwrap_or(i64::MAX);
    DateTime::from_millis(end_ms.saturating_add(retention_ms))
}

fn moment_fields(moment: &Moment) -> Document {
    doc! {
        "start_ms": moment.start_ms,
        "end_ms": moment.end_ms,
        "peak_rate": moment.peak_rate,
        "emoji": &moment.emoji,
        "ended": moment.ended,
    }
}

fn moment_from(document: &Document) -> Result<StoredMoment, StoreError> {
    let number = |name: &str| {
        document
            .get(name)
            .and_then(super::integer)
            .ok_or_else(|| malformed(name))
    };
    let stream = document
        .get_str("stream")
        .ok()
        .and_then(|s| StreamId::parse("stream", s).ok())
        .ok_or_else(|| malformed("stream"))?;
    let status = document
        .get_str("status")
        .ok()
        .and_then(MomentStatus::parse)
        .ok_or_else(|| malformed("status"))?;
    Ok(StoredMoment {
        stream,
        moment: Moment {
            detected_from_ms: number("detected_from_ms")?,
            start_ms: number("start_ms")?,
            end_ms: number("end_ms")?,
            peak_rate: document
                .get_f64("peak_rate")
                .map_err(|_| malformed("peak_rate"))?,
            emoji: document
                .get_str("emoji")
                .map_err(|_| malformed("emoji"))?
                .to_owned(),
            ended: document.get_bool("ended").map_err(|_| malformed("ended"))?,
        },
        status,
        revision: number("revision")?,
        first_seen_ms: number("first_seen_ms")?,
    })
}

/// The moments of `documents` that parse; the others are logged and left out, so one bad
/// document holds nothing back.
fn parsed(documents: &[Document]) -> Vec<StoredMoment> {
    documents
        .iter()
        .filter_map(|document| match moment_from(document) {
            Ok(moment) => Some(moment),
            Err(error) => {
                tracing::warn!(%error, "skipping a stored moment");
                None
            }
        })
        .collect()
}

impl MomentStore {
    pub const DETECTORS: &'static str = "moment_detectors";
    pub const MOMENTS: &'static str = "moments";

    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            detectors: database.collection(Self::DETECTORS),
            moments: database.collection(Self::MOMENTS),
        }
    }

    /// The unique (stream, first spike) key of moments, the index that finds detectors with
    /// an open moment, and both collections' expiry. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexModel::builder()
            .keys(doc! { "stream": 1, "detected_from_ms": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("stream_moment_unique".to_owned())
                    .build(),
            )
            .build();
        let orphans = super::named_index(
            doc! { "status": 1, "detected_from_ms": 1 },
            "status_detected_from",
        );
        self.moments
            .create_indexes([unique, orphans, super::expiry_index()])
            .await
            .map_err(server("create_indexes"))?;
        self.detectors
            .create_indexes([
                super::named_index(doc! { "open": 1, "rev": 1 }, "open_rev"),
                super::expiry_index(),
            ])
            .await
            .map_err(server("create_indexes"))?;
        Ok(())
    }

    /// The detectors of `streams` (a stream without one is absent). A detector that no longer
    /// parses is read as a fresh one with `rule` (logged), so one bad document never holds a
    /// stream's windows back.
    pub async fn detectors(
        &self,
        streams: &[StreamId],
        rule: MomentRule,
    ) -> Result<BTreeMap<StreamId, StoredDetector>, StoreError> {
        if streams.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        self.read_detectors(doc! { "_id": { "$in": ids } }, None, rule)
            .await
    }

    /// Up to `limit` detectors holding an open moment whose next window ends by `end_ms`:
    /// streams gone quiet in a spike, whose moment ends only when they are moved on.
    pub async fn open_detectors_before(
        &self,
        end_ms: i64,
        width_ms: i64,
        limit: i64,
        rule: MomentRule,
    ) -> Result<BTreeMap<StreamId, StoredDetector>, StoreError> {
        let filter = doc! { "open": true, "rev": { "$lte": end_ms.saturating_sub(width_ms) } };
        self.read_detectors(filter, Some(limit), rule).await
    }

    async fn read_detectors(
        &self,
        filter: Document,
        limit: Option<i64>,
        rule: MomentRule,
    ) -> Result<BTreeMap<StreamId, StoredDetector>, StoreError> {
        let documents: Vec<Document> = self
            .detectors
            .find(filter)
            .selection_criteria(super::primary())
            .limit(limit.unwrap_or(0))
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        let mut read = BTreeMap::new();
        for document in documents {
            let stream = document
                .get_str("_id")
                .ok()
                .and_then(|s| StreamId::parse("stream", s).ok());
            let rev = document.get("rev").and_then(super::integer);
            // Not one this code wrote: left alone, so it holds no stream's windows back (a
            // stream whose detector cannot be written keeps its windows open; see the caller).
            let (Some(stream), Some(rev)) = (stream, rev) else {
                tracing::warn!(id = ?document.get("_id"), "skipping a moment detector that does not parse");
                continue;
            };
            let detector = match document
                .get("state")
                .cloned()
                .map(mongodb::bson::from_bson::<MomentDetector>)
            {
                Some(Ok(detector)) => detector,
                other => {
                    tracing::warn!(
                        stream = stream.as_str(),
                        error = ?other.map(|r| r.err()),
                        "a stored moment detector does not parse; the stream's baseline starts over"
                    );
                    MomentDetector::new(rule)
                }
            };
            read.insert(
                stream,
                StoredDetector {
                    detector,
                    read_rev: Some(rev),
                },
            );
        }
        Ok(read)
    }

    /// Writes each detector whose stream's document still holds what was read, in one round
    /// trip. Returns the streams whose detector was not written: another pass wrote it since,
    /// so this pass's windows of those streams may not be the ones the stored detector took
    /// next, and must stay open for a pass that reads it afresh.
    pub async fn save_detectors(
        &self,
        detectors: &[(&StreamId, &StoredDetector)],
        times: WriteTimes,
    ) -> Result<Vec<StreamId>, StoreError> {
        if detectors.is_empty() {
            return Ok(Vec::new());
        }
        let mut statements = Vec::with_capacity(detectors.len());
        for (stream, stored) in detectors {
            let state = mongodb::bson::to_bson(&stored.detector)
                .map_err(|e| StoreError::Write(format!("moment detector: {e}")))?;
            let rev = rev_of(&stored.detector);
            let filter = match stored.read_rev {
                Some(read) => doc! { "_id": stream.as_str(), "rev": read },
                None => doc! { "_id": stream.as_str(), "rev": { "$exists": false } },
            };
            statements.push(doc! {
                "q": filter,
                "u": { "$set": {
                    "rev": rev,
                    "open": stored.detector.has_open_moment(),
                    "state": state,
                    "expires_at": expiry(rev.max(times.now_ms), times),
                } },
                "upsert": true,
            });
        }
        // A condition that fails on an existing document makes its upsert a duplicate key.
        let reply = super::update_command::unordered_update(
            &self.database,
            Self::DETECTORS,
            statements,
            "moment detectors",
        )
        .await?;
        Ok(reply
            .duplicates
            .iter()
            .filter_map(|i| detectors.get(*i).map(|(stream, _)| (*stream).clone()))
            .collect())
    }

    fn key(stream: &StreamId, moment: &Moment) -> Document {
        doc! { "stream": stream.as_str(), "detected_from_ms": moment.detected_from_ms }
    }

    /// Writes a change the final windows made, unless a change of a higher revision is
    /// stored. A provisional moment of the same first spike becomes this one. The moment was
    /// first seen at `first_seen_ms` (now, or when a provisional moment it replaces was
    /// proposed) or when it was stored first, whichever is earlier.
    pub async fn confirm(
        &self,
        stream: &StreamId,
        moment: &Moment,
        revision: i64,
        first_seen_ms: i64,
        times: WriteTimes,
    ) -> Result<(), StoreError> {
        let mut filter = Self::key(stream, moment);
        filter.insert(
            "$or",
            vec![
                Bson::Document(doc! { "revision": { "$lt": revision } }),
                Bson::Document(doc! { "status": MomentStatus::Provisional.as_str() }),
            ],
        );
        let mut set = moment_fields(moment);
        set.insert("status", MomentStatus::Confirmed.as_str());
        set.insert("revision", revision);
        set.insert("expires_at", expiry(moment.end_ms, times));
        let first_seen_ms = first_seen_ms.min(times.now_ms);
        let update = doc! { "$set": set, "$min": { "first_seen_ms": first_seen_ms } };
        // Two passes inserting the same moment at once: the loser's retry finds it.
        for _ in 0..2 {
            match self
                .moments
                .update_one(filter.clone(), update.clone())
                .upsert(true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) if is_duplicate_key(&error) => {
                    // Stored at a revision this one does not pass: nothing to do.
                    if self.revision_of(stream, moment).await? >= Some(revision) {
                        return Ok(());
                    }
                }
                Err(error) => return Err(server("update_one")(error)),
            }
        }
        Err(StoreError::Write(format!(
            "moment of stream {} at {} kept changing while it was confirmed",
            stream.as_str(),
            moment.detected_from_ms
        )))
    }

    async fn revision_of(
        &self,
        stream: &StreamId,
        moment: &Moment,
    ) -> Result<Option<i64>, StoreError> {
        let found = self
            .moments
            .find_one(Self::key(stream, moment))
            .selection_criteria(super::primary())
            .await
            .map_err(server("find_one"))?;
        Ok(found.and_then(|d| d.get("revision").and_then(super::integer)))
    }

    /// Adds a provisional moment unless one of the same first spike is stored (in any
    /// status). Returns whether it was added (and is to be published).
    pub async fn propose(
        &self,
        stream: &StreamId,
        moment: &Moment,
        times: WriteTimes,
    ) -> Result<bool, StoreError> {
        let mut fields = moment_fields(moment);
        fields.insert("status", MomentStatus::Provisional.as_str());
        fields.insert("revision", 0_i64);
        fields.insert("first_seen_ms", times.now_ms);
        fields.insert("expires_at", expiry(moment.end_ms, times));
        match self
            .moments
            .update_one(Self::key(stream, moment), doc! { "$setOnInsert": fields })
            .upsert(true)
            .await
        {
            Ok(result) => Ok(result.upserted_id.is_some()),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(server("update_one")(error)),
        }
    }

    /// The moments `filter` finds (at most `limit`; 0 for all), from the primary: the passes
    /// decide from them what to write next. Documents that do not parse are left out.
    async fn find_moments(
        &self,
        filter: Document,
        limit: i64,
    ) -> Result<Vec<StoredMoment>, StoreError> {
        let found: Vec<Document> = self
            .moments
            .find(filter)
            .selection_criteria(super::primary())
            .limit(limit)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        Ok(parsed(&found))
    }

    /// The provisional moments of `streams`: those the final windows may have to withdraw.
    pub async fn provisional_of(
        &self,
        streams: &[StreamId],
    ) -> Result<Vec<StoredMoment>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let filter = doc! {
            "stream": { "$in": ids },
            "status": MomentStatus::Provisional.as_str(),
        };
        self.find_moments(filter, 0).await
    }

    /// The moments of `streams` not ended (confirmed and going on, or proposed): a window
    /// that spikes while one is there belongs to it.
    pub async fn unended_of(&self, streams: &[StreamId]) -> Result<Vec<StoredMoment>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let filter = doc! {
            "stream": { "$in": ids },
            "ended": false,
            "status": { "$ne": MomentStatus::Withdrawn.as_str() },
        };
        self.find_moments(filter, 0).await
    }

    /// Up to `limit` provisional moments of any stream whose first spike is before
    /// `before_ms`: by then the final windows have passed them, so they are left from a
    /// proposal that raced a pass and must be withdrawn (their stream may have gone quiet, so
    /// no pass of its own will).
    pub async fn provisional_before(
        &self,
        before_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredMoment>, StoreError> {
        let filter = doc! {
            "status": MomentStatus::Provisional.as_str(),
            "detected_from_ms": { "$lt": before_ms },
        };
        self.find_moments(filter, limit).await
    }

    /// Withdraws the stream's provisional moments that start at `detected_from`: their windows
    /// are final and made no moment there (a confirmed moment took the spike in, or it fell
    /// short once all its taps were in). One a confirmation reached first stays confirmed.
    pub async fn withdraw(
        &self,
        stream: &StreamId,
        detected_from: &[i64],
        revision: i64,
    ) -> Result<(), StoreError> {
        if detected_from.is_empty() {
            return Ok(());
        }
        self.moments
            .update_many(
                doc! {
                    "stream": stream.as_str(),
                    "status": MomentStatus::Provisional.as_str(),
                    "detected_from_ms": { "$in": detected_from },
                },
                doc! { "$set": { "status": MomentStatus::Withdrawn.as_str(), "revision": revision } },
            )
            .await
            .map_err(server("update_many"))?;
        Ok(())
    }

    /// Where the oldest detector holding an open moment expects its next window (`None`: no
    /// moment is open): the `final` pass must run up to there even when no window is open,
    /// or a stream that went quiet in a spike would keep its moment open.
    pub async fn oldest_open_next_start(&self) -> Result<Option<i64>, StoreError> {
        let found = self
            .detectors
            .find_one(doc! { "open": true })
            .sort(doc! { "rev": 1 })
            .projection(doc! { "rev": 1 })
            .selection_criteria(super::primary())
            .await
            .map_err(server("find_one"))?;
        Ok(found.and_then(|d| d.get("rev").and_then(super::integer)))
    }

    /// The stream's moments, oldest first, up to `limit`; withdrawn ones only when asked.
    /// A document that does not parse is skipped (logged).
    pub async fn list(
        &self,
        stream: &StreamId,
        include_withdrawn: bool,
        limit: i64,
    ) -> Result<Vec<StoredMoment>, StoreError> {
        let mut filter = doc! { "stream": stream.as_str() };
        if !include_withdrawn {
            filter.insert("status", doc! { "$ne": MomentStatus::Withdrawn.as_str() });
        }
        let documents: Vec<Document> = self
            .moments
            .find(filter)
            .sort(doc! { "detected_from_ms": 1 })
            .limit(limit)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        Ok(parsed(&documents))
    }
}
