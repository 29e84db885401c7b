//! The `pushes` collection: when each stream may next be pushed to its viewers, and what a
//! stream is owed. One document per stream holds `next_due_ms`; a notify invocation takes the
//! slot with a conditional update, so however many invocations handle a stream's states at
//! once (several partitions, a retried batch beside a new one, the sweeper), at most one push
//! per stream starts per interval, and the schedule survives restarts.
//!
//! Nothing waits for a slot. An invocation that finds the slot taken or not yet due records
//! that the stream is owed a push (`owed_from_ms`, the oldest window start it has not pushed)
//! and moves on; whichever invocation later finds the slot open and the stream owed makes the
//! push ([`PushSlots::owed_and_due`]); the mark is cleared only when that push has ended and
//! nobody marked the stream again meanwhile. The holder of a slot is named by a token, so a push
//! whose lease ran out cannot overwrite the schedule of the push that took the slot after it.

use super::{StoreError, is_duplicate_key, server};
use crate::clock::duration_ms;
use crate::ids::StreamId;
use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use std::time::Duration;

/// How long a stream's schedule is kept after its last push.
const SCHEDULE_RETENTION: Duration = Duration::from_secs(24 * 3_600);

/// A stored `next_due_ms` further ahead of this instance's clock than this was set by a clock
/// running ahead (a push never sets its next slot further than its lease): the slot is taken
/// anyway, so such a clock cannot stall a stream.
fn skew_horizon(lease: Duration) -> Duration {
    lease + Duration::from_secs(60)
}

/// A slot taken by [`PushSlots::claim`]: what the push owes and where it resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLease {
    /// The token naming this push as the slot's holder.
    pub holder: String,
    /// When the slot was taken (this instance's clock).
    pub at_ms: i64,
    /// The oldest window start that other invocations found but could not push.
    pub owed_from_ms: Option<i64>,
    /// How many times the stream had been marked owed when the slot was taken: the mark is
    /// cleared when the push ends only if no invocation marked it again meanwhile.
    pub owed_seq: i64,
    /// The connection the previous fan-out stopped at (its deadline passed): this push starts
    /// there, so nobody misses two pushes in a row.
    pub resume_from: Option<String>,
    /// The number of the stream's last push: this one is `seq + 1`. Frames carry it, so a
    /// viewer that sees a number skipped knows it missed a push and syncs.
    pub seq: i64,
    /// The audience the previous push recorded (a push cut short by its deadline does not
    /// read all of its audience).
    pub audience: Option<u64>,
}

/// What [`PushSlots::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The slot is ours: push now, then [`PushSlots::finish`].
    Granted(SlotLease),
    /// Another push holds the slot, or the next one starts at `due_ms` (as stored).
    NotDue { due_ms: i64 },
}

/// How a push ended, for [`PushSlots::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEnd {
    /// Connections the push was for: the stream's share of the post budget follows it.
    pub audience: u64,
    /// When the stream may next be pushed.
    pub next_due_ms: i64,
    /// The connection the next push starts at, when this one's deadline cut it short.
    pub resume_from: Option<String>,
    /// The number of this push (its lease's `seq + 1`, or `seq` when it reached nobody).
    pub seq: i64,
    /// Set when the push left part of its audience without the frame: the stream stays owed
    /// from this window start on, and the next push resumes where this one stopped.
    pub still_owed_from_ms: Option<i64>,
}

/// One stream's last audience, for sharing the post budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveStream {
    pub stream: String,
    pub audience: u64,
}

/// The `pushes` collection.
#[derive(Debug, Clone)]
pub struct PushSlots {
    collection: Collection<Document>,
}

impl PushSlots {
    /// The collection name.
    pub const COLLECTION: &'static str = "pushes";

    pub fn new(database: &Database) -> Self {
        Self {
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Creates the TTL index that forgets idle streams, and the indexes of the two queries
    /// every batch and sweep make (owed streams whose slot is open; recently pushed streams).
    /// Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.collection
            .create_indexes([
                super::expiry_index(),
                super::named_index(doc! { "owed_from_ms": 1, "next_due_ms": 1 }, "owed_due"),
                super::named_index(doc! { "last_push_ms": 1 }, "last_push"),
            ])
            .await
            .map_err(server("create_indexes"))?;
        Ok(())
    }

    /// Takes the push slot of `stream` if it is due at `now_ms` (or was set by a clock far
    /// ahead of this one), for `lease`: no other push of the stream starts before
    /// [`PushSlots::finish`] sets the next slot or the lease runs out (the holder died). Taking
    /// the slot takes what the stream is owed, too: the lease names it.
    pub async fn claim(
        &self,
        stream: &StreamId,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let horizon = now_ms.saturating_add(duration_ms(skew_horizon(lease)));
        let filter = doc! {
            "_id": stream.as_str(),
            "$or": [
                { "next_due_ms": { "$lte": now_ms } },
                { "next_due_ms": { "$gt": horizon } },
            ],
        };
        let holder = format!("{:032x}", rand::random::<u128>());
        let expires_at = now_ms.saturating_add(duration_ms(SCHEDULE_RETENTION));
        let update = doc! {
            "$set": {
                "next_due_ms": now_ms.saturating_add(duration_ms(lease)),
                "last_push_ms": now_ms,
                "holder": &holder,
                "expires_at": DateTime::from_millis(expires_at),
            },
        };
        match self
            .collection
            .find_one_and_update(filter, update)
            .upsert(true)
            .return_document(ReturnDocument::Before)
            .await
        {
            Ok(before) => {
                let before = before.unwrap_or_default();
                Ok(Claim::Granted(SlotLease {
                    holder,
                    at_ms: now_ms,
                    owed_from_ms: before.get_i64("owed_from_ms").ok(),
                    owed_seq: before.get_i64("owed_seq").unwrap_or(0),
                    resume_from: before.get_str("resume_from").ok().map(str::to_owned),
                    seq: before.get_i64("seq").unwrap_or(0),
                    audience: before
                        .get_i64("audience")
                        .ok()
                        .and_then(|a| u64::try_from(a).ok()),
                }))
            }
            // The stream has a schedule and its slot is not due: the upsert's insert collided.
            Err(error) if is_duplicate_key(&error) => {
                let stored = self
                    .collection
                    .find_one(doc! { "_id": stream.as_str() })
                    .await
                    .map_err(server("find_one"))?;
                let due_ms = stored
                    .as_ref()
                    .and_then(|d| d.get_i64("next_due_ms").ok())
                    .unwrap_or(now_ms);
                Ok(Claim::NotDue { due_ms })
            }
            Err(error) => Err(server("find_one_and_update")(error)),
        }
    }

    /// Of `streams`, those whose slot is not open at `now_ms` (their schedule says so now; a
    /// claim decides): a batch marks them owed in one write instead of failing a claim each.
    pub async fn not_due(
        &self,
        streams: &[StreamId],
        now_ms: i64,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let horizon = now_ms.saturating_add(duration_ms(skew_horizon(lease)));
        let filter = doc! {
            "_id": { "$in": ids },
            "next_due_ms": { "$gt": now_ms, "$lte": horizon },
        };
        self.ids_of(filter, None).await
    }

    /// Records that each of `streams` is owed a push of its windows from `oldest_start_ms` on,
    /// in two writes whatever their number: a stream without a schedule yet gets one, open at
    /// once (inserts of streams that have one collide on `_id` and are ignored), then every
    /// stream's mark is set.
    pub async fn mark_owed(
        &self,
        streams: &[String],
        oldest_start_ms: i64,
    ) -> Result<(), StoreError> {
        if streams.is_empty() {
            return Ok(());
        }
        let expires_at = DateTime::from_millis(
            DateTime::now().timestamp_millis() + duration_ms(SCHEDULE_RETENTION),
        );
        let schedules = streams
            .iter()
            .map(|id| doc! { "_id": id, "next_due_ms": 0_i64, "expires_at": expires_at });
        match self.collection.insert_many(schedules).ordered(false).await {
            Ok(_) => {}
            Err(error) if only_duplicate_keys(&error) => {}
            Err(error) => return Err(server("insert_many")(error)),
        }
        self.collection
            .update_many(
                doc! { "_id": { "$in": streams } },
                doc! {
                    "$min": { "owed_from_ms": oldest_start_ms },
                    "$inc": { "owed_seq": 1_i64 },
                    "$set": { "expires_at": expires_at },
                },
            )
            .await
            .map_err(server("update_many"))?;
        Ok(())
    }

    /// Up to `limit` streams that are owed a push and whose slot is open at `now_ms`, the
    /// longest-waiting first: what a sweep pushes.
    pub async fn owed_and_due(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let filter = doc! {
            "owed_from_ms": { "$exists": true },
            "next_due_ms": { "$lte": now_ms },
        };
        self.ids_of(filter, Some(limit)).await
    }

    /// The stream ids of the documents matching `filter` (the earliest due first, at most
    /// `limit` when given).
    async fn ids_of(
        &self,
        filter: Document,
        limit: Option<i64>,
    ) -> Result<Vec<String>, StoreError> {
        let mut find = self.collection.find(filter).projection(doc! { "_id": 1 });
        if let Some(limit) = limit {
            find = find.sort(doc! { "next_due_ms": 1 }).limit(limit);
        }
        find.await
            .map_err(server("find"))?
            .try_filter_map(|d| async move { Ok(d.get_str("_id").ok().map(str::to_owned)) })
            .try_collect()
            .await
            .map_err(server("find"))
    }

    /// Ends a push held by `holder`: records its audience, where the next one resumes, and the
    /// stream's next slot. False when `holder` no longer holds the slot (its lease ran out and
    /// another push took it): nothing is changed then.
    pub async fn finish(
        &self,
        stream: &StreamId,
        holder: &str,
        owed_seq: i64,
        end: &PushEnd,
    ) -> Result<bool, StoreError> {
        let mut set = doc! {
            "audience": i64::try_from(end.audience).unwrap_or(i64::MAX),
            "next_due_ms": end.next_due_ms,
            "seq": end.seq,
        };
        let mut unset = Document::new();
        match &end.resume_from {
            Some(id) => {
                set.insert("resume_from", id);
            }
            None => {
                unset.insert("resume_from", "");
            }
        }
        if let Some(since) = end.still_owed_from_ms {
            return self.end_push(stream, holder, set, unset, Some(since)).await;
        }
        // One write when nobody marked the stream owed meanwhile (the common case): the end,
        // and the owed mark cleared.
        let mut cleared = unset.clone();
        cleared.insert("owed_from_ms", "");
        let result = self
            .collection
            .update_one(
                doc! { "_id": stream.as_str(), "holder": holder, "owed_seq": unchanged(owed_seq) },
                doc! { "$set": set.clone(), "$unset": cleared },
            )
            .await
            .map_err(server("update_one"))?;
        if result.matched_count > 0 {
            return Ok(true);
        }
        // Marked again (or not ours any more): the end only, the mark left for the next push.
        self.end_push(stream, holder, set, unset, None).await
    }

    /// Writes a push's end if `holder` still holds the slot, leaving the owed mark (lowered to
    /// `owed_from_ms` when given).
    async fn end_push(
        &self,
        stream: &StreamId,
        holder: &str,
        set: Document,
        unset: Document,
        owed_from_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let mut update = doc! { "$set": set };
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        if let Some(since) = owed_from_ms {
            update.insert("$min", doc! { "owed_from_ms": since });
        }
        let result = self
            .collection
            .update_one(doc! { "_id": stream.as_str(), "holder": holder }, update)
            .await
            .map_err(server("update_one"))?;
        Ok(result.matched_count > 0)
    }

    /// Clears what `stream` was owed, unless an invocation marked it owed again after the slot
    /// was taken (then the next push makes that one). Until this succeeds, the mark stays: a
    /// push that fails half-way is made again once its lease runs out.
    async fn clear_owed(
        &self,
        stream: &StreamId,
        holder: &str,
        owed_seq: i64,
    ) -> Result<(), StoreError> {
        self.collection
            .update_one(
                doc! { "_id": stream.as_str(), "holder": holder, "owed_seq": unchanged(owed_seq) },
                doc! { "$unset": { "owed_from_ms": "" } },
            )
            .await
            .map_err(server("update_one"))?;
        Ok(())
    }

    /// Gives back a slot `holder` took but had nothing to push with: the stream's slot is open
    /// again at once, and its audience and place are kept.
    pub async fn release(
        &self,
        stream: &StreamId,
        holder: &str,
        owed_seq: i64,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.clear_owed(stream, holder, owed_seq).await?;
        self.collection
            .update_one(
                doc! { "_id": stream.as_str(), "holder": holder },
                doc! { "$set": { "next_due_ms": at_ms } },
            )
            .await
            .map_err(server("update_one"))?;
        Ok(())
    }

    /// The streams pushed since `since_ms` with their last audience: the streams that share
    /// the post budget (one without viewers takes no share).
    pub async fn active_since(&self, since_ms: i64) -> Result<Vec<ActiveStream>, StoreError> {
        self.collection
            .find(doc! { "last_push_ms": { "$gte": since_ms }, "audience": { "$gt": 0_i64 } })
            .projection(doc! { "_id": 1, "audience": 1 })
            .await
            .map_err(server("find"))?
            .try_filter_map(|d| async move {
                Ok(d.get_str("_id").ok().map(|stream| ActiveStream {
                    stream: stream.to_owned(),
                    audience: d
                        .get_i64("audience")
                        .ok()
                        .and_then(|a| u64::try_from(a).ok())
                        .unwrap_or(0),
                }))
            })
            .try_collect()
            .await
            .map_err(server("find"))
    }

    /// Takes the sweeper's turn for `holder` until `until_ms`: the newest sweeper takes over
    /// from an older one, so sweepers started by overlapping schedule ticks never pile up.
    pub async fn take_sweeper_turn(&self, holder: &str, until_ms: i64) -> Result<(), StoreError> {
        self.collection
            .update_one(
                doc! { "_id": SWEEPER_ID },
                doc! { "$set": {
                    "holder": holder,
                    "until_ms": until_ms,
                    "expires_at": DateTime::from_millis(until_ms.saturating_add(duration_ms(SCHEDULE_RETENTION))),
                } },
            )
            .upsert(true)
            .await
            .map_err(server("update_one"))?;
        Ok(())
    }

    /// Whether `holder` still has the sweeper's turn.
    pub async fn holds_sweeper_turn(&self, holder: &str) -> Result<bool, StoreError> {
        let found = self
            .collection
            .find_one(doc! { "_id": SWEEPER_ID, "holder": holder })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(server("find_one"))?;
        Ok(found.is_some())
    }
}

/// Whether every write of a failed `insert_many` collided on `_id` (and nothing else failed).
fn only_duplicate_keys(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        mongodb::error::ErrorKind::InsertMany(failure) => {
            failure.write_concern_error.is_none()
                && failure
                    .write_errors
                    .as_ref()
                    .is_some_and(|errors| errors.iter().all(|e| e.code == 11000))
        }
        _ => is_duplicate_key(error),
    }
}

/// The filter on `owed_seq` that holds while no invocation marked the stream owed since the
/// slot was taken with `owed_seq`.
fn unchanged(owed_seq: i64) -> Document {
    if owed_seq == 0 {
        doc! { "$exists": false }
    } else {
        doc! { "$eq": owed_seq }
    }
}

/// The document that names the running sweeper. Stream ids cannot contain `#`, so it never
/// collides with a stream's schedule, and it has no `next_due_ms`, so no query of streams
/// reads it.
const SWEEPER_ID: &str = "#sweeper";
