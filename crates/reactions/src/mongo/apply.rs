//! Exactly-once application of a batch's window deltas to the `windows` collection.
//!
//! Each window document keeps, per topic-partition, the highest offset it has applied. A batch
//! is applied as one unordered `update` command with one conditional upsert per window: "add
//! these taps if none of this batch's offsets for each partition are applied yet". That is the
//! common case and costs one round trip for the whole batch. A statement whose condition fails
//! (a redelivery, an overlapping batch, a racing insert) reports a duplicate-key error; for
//! those windows the stored offsets are read in one `find` and only what remains is applied,
//! with one unordered `update` of compare-and-set statements on those offsets: two more round
//! trips however many windows conflict (a batch retried after a crash conflicts on every window
//! it had written). A batch touching few windows sends the same conditional
//! upserts as `findAndModify` commands instead, which return the state the batch publishes (see
//! [`WindowStore::apply_and_read`]). Only `update` and `findAndModify` with
//! `$inc`/`$max`/`$set`/`$setOnInsert`, `find` and unique indexes are used: MongoDB, Atlas and
//! DocumentDB all have them. Every write is at the client's write concern (majority by default)
//! and one the server could not confirm fails the batch (see `update_command`).

use super::{StoreError, StoredWindow, WindowStore, parse_window, server};
use crate::window::{WindowKey, WindowWidth};
use crate::window_delta::{Remaining, WindowDelta};
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use std::collections::BTreeMap;
use std::time::Duration;

/// How many compare-and-set rounds the conflicting windows get before the batch fails (and is
/// retried by the event source). Only concurrent writers of the same partition can make a
/// window need another round.
const MAX_ROUNDS: usize = 20;

/// The most windows a batch may touch and still be written and read with one `findAndModify`
/// per window, sent at once; more take the bulk `update` and a `find` (two round trips, but
/// two requests however many windows).
const FIND_AND_MODIFY_WINDOWS: usize = 4;

/// What applying a batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Windows the batch touches.
    pub windows: usize,
    /// Update statements in the bulk round trip (one per window).
    pub bulk_statements: usize,
    /// Windows whose bulk statement found part of the batch already applied (or lost an
    /// insert race) and went through the read-then-compare-and-set path.
    pub conflicts: usize,
    /// Windows that already held everything this batch carries: nothing written.
    pub replays_skipped: usize,
    /// Taps added to the store by this batch.
    pub taps_applied: u64,
    /// Round trips to MongoDB the batch waited for in a row (requests sent at once count as
    /// one): one for the bulk write when nothing conflicted.
    pub round_trips: usize,
}

/// When a window's document expires, and the clock for `updated_at`.
#[derive(Debug, Clone, Copy)]
pub struct WriteTimes {
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// How long after its end a window is kept (the TTL index deletes it then).
    pub retention: Duration,
}

fn offsets_path(field: &str) -> String {
    format!("offsets.{field}")
}

fn update_for(
    remaining: &Remaining,
    delta: &WindowDelta,
    width: WindowWidth,
    times: WriteTimes,
) -> Document {
    let mut inc = Document::new();
    for (emoji, n) in &remaining.counts {
        inc.insert(
            format!("counts.{emoji}"),
            i64::try_from(*n).unwrap_or(i64::MAX),
        );
    }
    inc.insert(
        "total",
        i64::try_from(remaining.total()).unwrap_or(i64::MAX),
    );
    let mut max = Document::new();
    for (partition, (_, highest)) in &remaining.offsets {
        max.insert(offsets_path(&partition.field_name()), *highest);
    }
    let end_ms = delta.key.end_ms(width);
    let retention_ms = crate::clock::duration_ms(times.retention);
    doc! {
        "$inc": inc,
        "$max": max,
        "$set": { "updated_at": DateTime::from_millis(times.now_ms) },
        "$setOnInsert": {
            "end_ms": end_ms,
            "expires_at": DateTime::from_millis(end_ms.saturating_add(retention_ms)),
            // Until aggregate finds every partition counted past its end (see
            // `WindowStore::finalize`).
            "open": true,
        },
    }
}

/// The condition "none of this batch's offsets are applied yet", for the bulk statement.
fn first_attempt_filter(delta: &WindowDelta) -> Document {
    let mut filter = WindowStore::filter(&delta.key);
    let clauses: Vec<Bson> = delta
        .first_offsets()
        .iter()
        .map(|(partition, first)| {
            let path = offsets_path(&partition.field_name());
            Bson::Document(doc! { "$or": [
                { path.clone(): { "$exists": false } },
                { path: { "$lt": first } },
            ]})
        })
        .collect();
    filter.insert("$and", clauses);
    filter
}

/// The compare-and-set condition: the offsets are still what `remaining` was computed against.
fn compare_and_set_filter(delta: &WindowDelta, remaining: &Remaining) -> Document {
    let mut filter = WindowStore::filter(&delta.key);
    for (partition, (stored, _)) in &remaining.offsets {
        let path = offsets_path(&partition.field_name());
        match stored {
            Some(offset) => filter.insert(path, *offset),
            None => filter.insert(path, doc! { "$exists": false }),
        };
    }
    filter
}

fn stored_offsets(
    document: &Document,
    delta: &WindowDelta,
) -> BTreeMap<crate::window_delta::PartitionKey, i64> {
    let offsets = document.get_document("offsets").ok();
    delta
        .partitions
        .keys()
        .filter_map(|partition| {
            let offset = super::integer(offsets?.get(partition.field_name())?)?;
            Some((partition.clone(), offset))
        })
        .collect()
}

impl WindowStore {
    /// Applies a batch's deltas exactly once (see the module comment).
    pub async fn apply_batch(
        &self,
        deltas: &[WindowDelta],
        width: WindowWidth,
        times: WriteTimes,
    ) -> Result<ApplyReport, StoreError> {
        let mut report = ApplyReport {
            windows: deltas.len(),
            ..ApplyReport::default()
        };
        if deltas.is_empty() {
            return Ok(report);
        }
        // Everything each window gets if none of the batch is applied yet (the bulk statement).
        let whole: Vec<Remaining> = deltas.iter().map(|d| d.after(&BTreeMap::new())).collect();
        let statements: Vec<Document> = deltas
            .iter()
            .zip(&whole)
            .map(|(delta, all)| {
                doc! {
                    "q": first_attempt_filter(delta),
                    "u": update_for(all, delta, width, times),
                    "upsert": true,
                    "multi": false,
                }
            })
            .collect();
        report.bulk_statements = statements.len();
        report.round_trips = 1;
        let duplicates = super::update_command::unordered_update(
            &self.database,
            self.collection.name(),
            statements,
            "window update statement",
        )
        .await?
        .duplicates;
        let mut conflicted = vec![false; deltas.len()];
        for index in duplicates {
            conflicted[index] = true;
        }
        let mut conflicts = Vec::new();
        for ((delta, all), conflict) in deltas.iter().zip(&whole).zip(conflicted) {
            if conflict {
                conflicts.push(delta);
            } else {
                report.taps_applied += all.total();
            }
        }
        self.settle_conflicts(&conflicts, width, times, &mut report)
            .await?;
        Ok(report)
    }

    /// Applies what remains of the windows whose conditional upsert failed, all together: one
    /// `find` of their offsets, then one unordered `update` with a compare-and-set statement per
    /// window that still lacks part of the batch. Every statement is an upsert, so one whose
    /// offsets changed since the read fails with a duplicate key (its document exists) and is
    /// named in the reply; only those windows take another round.
    async fn settle_conflicts(
        &self,
        conflicts: &[&WindowDelta],
        width: WindowWidth,
        times: WriteTimes,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        report.conflicts += conflicts.len();
        let mut pending: Vec<&WindowDelta> = conflicts.to_vec();
        for _ in 0..MAX_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            let stored = self.read_documents(&pending).await?;
            report.round_trips += 1;
            let mut attempts = Vec::new();
            for delta in pending {
                let offsets = stored
                    .get(&delta.key)
                    .map(|document| stored_offsets(document, delta))
                    .unwrap_or_default();
                let remaining = delta.after(&offsets);
                if remaining.is_empty() {
                    report.replays_skipped += 1;
                } else {
                    attempts.push((delta, remaining));
                }
            }
            if attempts.is_empty() {
                return Ok(());
            }
            let statements: Vec<Document> = attempts
                .iter()
                .map(|(delta, remaining)| {
                    doc! {
                        "q": compare_and_set_filter(delta, remaining),
                        "u": update_for(remaining, delta, width, times),
                        "upsert": true,
                        "multi": false,
                    }
                })
                .collect();
            let lost = super::update_command::unordered_update(
                &self.database,
                self.collection.name(),
                statements,
                "window compare-and-set statement",
            )
            .await?
            .duplicates;
            report.round_trips += 1;
            let mut changed_meanwhile = vec![false; attempts.len()];
            for index in lost {
                changed_meanwhile[index] = true;
            }
            pending = Vec::new();
            for ((delta, remaining), changed) in attempts.into_iter().zip(changed_meanwhile) {
                if changed {
                    pending.push(delta);
                } else {
                    report.taps_applied += remaining.total();
                }
            }
        }
        match pending.first() {
            None => Ok(()),
            Some(delta) => Err(StoreError::Write(format!(
                "{} windows (first {}@{}) kept changing under {MAX_ROUNDS} compare-and-set rounds",
                pending.len(),
                delta.key.stream,
                delta.key.start_ms
            ))),
        }
    }

    /// The stored documents of the given windows, by window.
    async fn read_documents(
        &self,
        deltas: &[&WindowDelta],
    ) -> Result<BTreeMap<WindowKey, Document>, StoreError> {
        self.find_windows(deltas.iter().copied())
            .await?
            .into_iter()
            .map(|document| Ok((super::window_key(&document)?, document)))
            .collect()
    }

    /// The stored documents of the windows `deltas` touch, in one `find`.
    async fn find_windows<'a>(
        &self,
        deltas: impl Iterator<Item = &'a WindowDelta>,
    ) -> Result<Vec<Document>, StoreError> {
        let keys: Vec<Bson> = deltas
            .map(|d| Bson::Document(Self::filter(&d.key)))
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        super::find_all(&self.collection, doc! { "$or": keys }).await
    }

    /// Applies a batch's deltas exactly once and returns the windows' states after it, in as
    /// few round trips as the batch allows. A batch of one hot stream touches one or two
    /// windows: each gets one `findAndModify` (the bulk statement's conditional upsert, returning
    /// the document after the update), all sent at once, so the write and the read take one
    /// round trip together instead of two in a row. A batch over more windows takes the bulk
    /// `update` and one `find`. Windows whose condition fails take the compare-and-set path of
    /// [`WindowStore::apply_batch`] and are read after it.
    pub async fn apply_and_read(
        &self,
        deltas: &[WindowDelta],
        width: WindowWidth,
        times: WriteTimes,
    ) -> Result<(ApplyReport, Vec<StoredWindow>), StoreError> {
        if deltas.len() > FIND_AND_MODIFY_WINDOWS {
            let mut report = self.apply_batch(deltas, width, times).await?;
            let windows = self.read_windows(deltas).await?;
            report.round_trips += 1;
            return Ok((report, windows));
        }
        let mut report = ApplyReport {
            windows: deltas.len(),
            bulk_statements: deltas.len(),
            round_trips: usize::from(!deltas.is_empty()),
            ..ApplyReport::default()
        };
        let attempts = futures::future::join_all(deltas.iter().map(|delta| async move {
            let all = delta.after(&BTreeMap::new());
            let result = self
                .collection
                .find_one_and_update(
                    first_attempt_filter(delta),
                    update_for(&all, delta, width, times),
                )
                .upsert(true)
                .return_document(ReturnDocument::After)
                .await;
            (all.total(), result)
        }))
        .await;
        let mut windows = Vec::with_capacity(deltas.len());
        let mut conflicted = Vec::new();
        for (delta, (taps, result)) in deltas.iter().zip(attempts) {
            match result {
                Ok(Some(document)) => {
                    report.taps_applied += taps;
                    windows.push(parse_window(&document)?);
                }
                // With an upsert a document always comes back; without one, read it later.
                Ok(None) => conflicted.push(delta.clone()),
                Err(error) if super::is_duplicate_key(&error) => conflicted.push(delta.clone()),
                Err(error) => return Err(server("findAndModify")(error)),
            }
        }
        if conflicted.is_empty() {
            return Ok((report, windows));
        }
        let conflicts: Vec<&WindowDelta> = conflicted.iter().collect();
        self.settle_conflicts(&conflicts, width, times, &mut report)
            .await?;
        windows.extend(self.read_windows(&conflicted).await?);
        report.round_trips += 1;
        Ok((report, windows))
    }

    /// Reads the current state of the given windows (those that exist), for re-publishing.
    pub async fn read_windows(
        &self,
        deltas: &[WindowDelta],
    ) -> Result<Vec<StoredWindow>, StoreError> {
        self.find_windows(deltas.iter())
            .await?
            .iter()
            .map(parse_window)
            .collect()
    }
}
