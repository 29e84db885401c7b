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
//! nobody marked the stream again meanwhile. A mark may hold its push back until a given time
//! (`owed_not_before_ms`), so that a push sooner, for a newer state, carries it instead. The
//! holder of a slot is named by a token, so a push whose lease ran out cannot overwrite the
//! schedule of the push that took the slot after it.
//!
//! Slots are taken and given back a wave at a time ([`PushSlots::claim_all`],
//! [`PushSlots::finish_all`]): a few round trips for tens of streams, so hundreds of streams
//! pushed each second cost MongoDB a few operations per wave rather than several per stream.

use super::update_command::unordered_update;
use super::{StoreError, is_duplicate_key, primary, server};
use crate::clock::duration_ms;
use crate::ids::StreamId;
use futures::TryStreamExt;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How long a stream's schedule is kept after its last push.
const SCHEDULE_RETENTION: Duration = Duration::from_secs(24 * 3_600);

/// A stored `next_due_ms` further ahead of this instance's clock than this was set by a clock
/// running ahead (a push never sets its next slot further than its lease): the slot is taken
/// anyway, so such a clock cannot stall a stream.
fn skew_horizon(lease: Duration) -> Duration {
    lease + Duration::from_secs(60)
}

/// A slot taken by [`PushSlots::claim_all`]: what the push owes and where it resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotLease {
    /// The stream whose slot this is.
    pub stream: StreamId,
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
    /// The end of the latest window a batch that marked the stream owed said was final (the
    /// latest of the whole batch, any stream's). aggregate publishes a window's final state
    /// before it marks the stored document final, so a push may read the document in between:
    /// every window of the topic ending by then is complete, whatever its stream (the rule is
    /// the topic's, see `crate::event_time`, and it only moves forward), and is shown final.
    /// Kept after the mark is cleared, since a later push may still read such a document.
    pub final_through_ms: Option<i64>,
}

/// What [`PushSlots::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The slot is ours: push now, then [`PushSlots::finish`].
    Granted(SlotLease),
    /// Another push holds the slot, or the next one starts at `due_ms` (as stored).
    NotDue { due_ms: i64 },
}

/// How a push ended, for [`PushSlots::finish_all`].
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

/// A push that has ended, named by the lease it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedPush<'a> {
    pub lease: &'a SlotLease,
    pub end: PushEnd,
}

/// What a batch's streams' schedules say before it claims their slots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleView {
    /// Streams whose slot is not open now (a claim decides for the others).
    pub not_due: HashSet<String>,
    /// Streams without a schedule yet: [`PushSlots::schedule`] them before claiming.
    pub unscheduled: Vec<String>,
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
    database: Database,
    collection: Collection<Document>,
}

impl PushSlots {
    /// The collection name.
    pub const COLLECTION: &'static str = "pushes";

    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Creates the TTL index that forgets idle streams, and the indexes of the queries every
    /// batch and sweep make (owed streams whose slot is open; pushes held back until later;
    /// recently pushed streams). Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.collection
            .create_indexes([
                super::expiry_index(),
                super::named_index(doc! { "owed_from_ms": 1, "next_due_ms": 1 }, "owed_due"),
                super::named_index(doc! { "last_push_ms": 1 }, "last_push"),
                super::named_index(doc! { "owed_not_before_ms": 1 }, "owed_not_before"),
            ])
            .await
            .map_err(server("create_indexes"))?;
        Ok(())
    }

    /// Takes the push slot of `stream` if it is due at `now_ms` (see [`PushSlots::claim_all`]);
    /// a stream without a schedule gets one first.
    pub async fn claim(
        &self,
        stream: &StreamId,
        now_ms: i64,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        self.schedule(&[stream.as_str().to_owned()]).await?;
        if let Some(taken) = self
            .claim_all(std::slice::from_ref(stream), now_ms, lease)
            .await?
            .pop()
        {
            return Ok(Claim::Granted(taken));
        }
        let stored = self
            .collection
            .find_one(doc! { "_id": stream.as_str() })
            .selection_criteria(primary())
            .await
            .map_err(server("find_one"))?;
        let due_ms = stored
            .as_ref()
            .and_then(|d| d.get_i64("next_due_ms").ok())
            .unwrap_or(now_ms);
        Ok(Claim::NotDue { due_ms })
    }

    /// Takes, in two round trips whatever their number, the push slot of each of `streams`
    /// that has a schedule and is due at `now_ms` (or was set by a clock far ahead of this
    /// one), for `lease`: no other push of such a stream starts before
    /// [`PushSlots::finish_all`] sets its next slot or the lease runs out (the holder died).
    /// Taking a slot takes what the stream is owed, too: its lease names it. Streams whose slot
    /// is held or not due are left out.
    ///
    /// The slots are taken by one conditional `update_many` naming a fresh holder, then read
    /// back by that holder from the primary (a secondary may not have the update yet: the
    /// slots it misses would stay held, unpushed, for the lease). An owed mark set between the two is read with the lease and made by
    /// this push: the mark's windows were stored before the mark (aggregate stores a window
    /// before it publishes its state), and the push reads the stored windows after the lease.
    pub async fn claim_all(
        &self,
        streams: &[StreamId],
        now_ms: i64,
        lease: Duration,
    ) -> Result<Vec<SlotLease>, StoreError> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let horizon = now_ms.saturating_add(duration_ms(skew_horizon(lease)));
        let holder = format!("{:032x}", rand::random::<u128>());
        let expires_at = now_ms.saturating_add(duration_ms(SCHEDULE_RETENTION));
        let lease_ends_at = now_ms.saturating_add(duration_ms(lease));
        let taken = match self
            .collection
            .update_many(
                doc! {
                    "_id": { "$in": &ids },
                    "$or": [
                        { "next_due_ms": { "$lte": now_ms } },
                        { "next_due_ms": { "$gt": horizon } },
                    ],
                },
                // The push takes what is owed, its hold-back with it: what is owed after it is
                // due when the lease runs out (the holder died), or sooner if a mark made during
                // the push says so (`$min`), so a final state marked then keeps its hold-back.
                doc! {
                    "$set": {
                        "next_due_ms": lease_ends_at,
                        "owed_not_before_ms": lease_ends_at,
                        "last_push_ms": now_ms,
                        "holder": &holder,
                        "expires_at": DateTime::from_millis(expires_at),
                    },
                },
            )
            .await
        {
            Ok(taken) => taken,
            // It may have taken some slots before it failed: they are given back.
            Err(error) => {
                return Err(self
                    .give_back(&ids, &holder, now_ms, server("update_many")(error))
                    .await);
            }
        };
        if taken.modified_count == 0 {
            return Ok(Vec::new());
        }
        let by_id: HashMap<&str, &StreamId> = ids.iter().copied().zip(streams).collect();
        let read = async {
            self.collection
                .find(doc! { "_id": { "$in": &ids }, "holder": &holder })
                .selection_criteria(primary())
                .await?
                .try_collect::<Vec<Document>>()
                .await
        };
        let documents = match read.await {
            Ok(documents) => documents,
            Err(error) => {
                return Err(self
                    .give_back(&ids, &holder, now_ms, server("find")(error))
                    .await);
            }
        };
        Ok(documents
            .iter()
            .filter_map(|stored| {
                let stream = by_id.get(stored.get_str("_id").ok()?)?;
                Some(SlotLease {
                    stream: (*stream).clone(),
                    holder: holder.clone(),
                    at_ms: now_ms,
                    owed_from_ms: stored.get_i64("owed_from_ms").ok(),
                    owed_seq: stored.get_i64("owed_seq").unwrap_or(0),
                    resume_from: stored.get_str("resume_from").ok().map(str::to_owned),
                    seq: stored.get_i64("seq").unwrap_or(0),
                    audience: stored
                        .get_i64("audience")
                        .ok()
                        .and_then(|a| u64::try_from(a).ok()),
                    final_through_ms: stored.get_i64("final_through_ms").ok(),
                })
            })
            .collect())
    }

    /// Gives back whatever slots of `ids` `holder` took (a claim that failed half way), open at
    /// `now_ms`; returns `error`. If that fails too, the leases run out.
    async fn give_back(
        &self,
        ids: &[&str],
        holder: &str,
        now_ms: i64,
        error: StoreError,
    ) -> StoreError {
        let all_of_holder = doc! {
            "q": { "_id": { "$in": ids }, "holder": holder },
            "u": reopened_still_due(now_ms),
            "upsert": false,
            "multi": true,
        };
        if let Err(again) = self
            .update_twice(vec![all_of_holder], "slot reopening")
            .await
        {
            tracing::warn!(error = %again, "could not give back the slots of a failed claim; their leases will run out");
        }
        error
    }

    /// What the schedules of `streams` say at `now_ms`, in one read: which slots are not open
    /// (a batch marks those owed in one write instead of failing a claim each) and which
    /// streams have no schedule yet.
    pub async fn view(
        &self,
        streams: &[StreamId],
        now_ms: i64,
        lease: Duration,
    ) -> Result<ScheduleView, StoreError> {
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let horizon = now_ms.saturating_add(duration_ms(skew_horizon(lease)));
        let documents: Vec<Document> = self
            .collection
            .find(doc! { "_id": { "$in": &ids } })
            .selection_criteria(primary())
            .projection(doc! { "_id": 1, "next_due_ms": 1 })
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        let mut view = ScheduleView::default();
        let mut scheduled = HashSet::new();
        for stored in &documents {
            let Ok(id) = stored.get_str("_id") else {
                continue;
            };
            scheduled.insert(id);
            let due = stored.get_i64("next_due_ms").unwrap_or(0);
            if due > now_ms && due <= horizon {
                view.not_due.insert(id.to_owned());
            }
        }
        view.unscheduled = ids
            .into_iter()
            .filter(|id| !scheduled.contains(id))
            .map(str::to_owned)
            .collect();
        Ok(view)
    }

    /// Gives each of `streams` that has no schedule yet one, open at once, in one write
    /// (inserts of streams that have one collide on `_id` and are ignored).
    pub async fn schedule(&self, streams: &[String]) -> Result<(), StoreError> {
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
            Ok(_) => Ok(()),
            Err(error) if only_duplicate_keys(&error) => Ok(()),
            Err(error) => Err(server("insert_many")(error)),
        }
    }

    /// Records that each of `streams` is owed a push of its windows from `oldest_start_ms` on,
    /// to be made once its slot is open and no sooner than `not_before_ms` (0: as soon as the
    /// slot opens), in two writes whatever their number: a stream without a schedule yet gets
    /// one, open at once (inserts of streams that have one collide on `_id` and are ignored),
    /// then every stream's mark is set. Marks add up to the oldest start of all made since the
    /// stream's last push ended with its mark cleared, and the soonest time of all made since
    /// the last push began; a push made sooner (its slot taken for a
    /// newer state) makes this one too. `final_through_ms`, the end of the latest window the
    /// batch's states say is final, is kept (the largest): the push that makes the mark may read
    /// a window before aggregate has marked its document final, and shows it final all the same
    /// (see [`SlotLease::final_through_ms`]).
    pub async fn mark_owed(
        &self,
        streams: &[String],
        oldest_start_ms: i64,
        not_before_ms: i64,
        final_through_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        if streams.is_empty() {
            return Ok(());
        }
        self.schedule(streams).await?;
        let expires_at = DateTime::from_millis(
            DateTime::now().timestamp_millis() + duration_ms(SCHEDULE_RETENTION),
        );
        let mut update = doc! {
            "$min": { "owed_from_ms": oldest_start_ms, "owed_not_before_ms": not_before_ms },
            "$inc": { "owed_seq": 1_i64 },
            "$set": { "expires_at": expires_at },
        };
        if let Some(end_ms) = final_through_ms {
            update.insert("$max", doc! { "final_through_ms": end_ms });
        }
        self.collection
            .update_many(doc! { "_id": { "$in": streams } }, update)
            .await
            .map_err(server("update_many"))?;
        Ok(())
    }

    /// Up to `limit` streams that are owed a push and whose slot is open at `now_ms` (and whose
    /// push may be made by then), the longest-waiting first: what a sweep pushes.
    pub async fn owed_and_due(&self, now_ms: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let mut filter = doc! {
            "owed_from_ms": { "$exists": true },
            "next_due_ms": { "$lte": now_ms },
        };
        filter.extend(may_push_by(now_ms));
        self.collection
            .find(filter)
            .selection_criteria(primary())
            .projection(doc! { "_id": 1 })
            .sort(doc! { "next_due_ms": 1 })
            .limit(limit)
            .await
            .map_err(server("find"))?
            .try_filter_map(|d| async move { Ok(d.get_str("_id").ok().map(str::to_owned)) })
            .try_collect()
            .await
            .map_err(server("find"))
    }

    /// When, after `now_ms`, the first push owed to a stream may be made (as stored), if any
    /// stream is owed: the sweeper wakes then rather than on its next tick, so a stream whose
    /// every state waits for its slot is not pushed a tick later each time. That is the first
    /// slot to open among streams whose push may be made by now, and the first time a push
    /// held back until later may be made (its slot may open later still: the sweeper then
    /// wakes once for nothing). Only slots opening after `after_ms` count, when given.
    pub async fn next_owed_due(
        &self,
        now_ms: i64,
        after_ms: Option<i64>,
    ) -> Result<Option<i64>, StoreError> {
        let due = match after_ms {
            Some(after) => doc! { "$gt": after },
            None => doc! { "$type": "number" },
        };
        let mut ready = doc! { "owed_from_ms": { "$exists": true }, "next_due_ms": due };
        ready.extend(may_push_by(now_ms));
        let first_slot = self.first_of(ready, "next_due_ms");
        let held_back = doc! {
            "owed_from_ms": { "$exists": true },
            "owed_not_before_ms": { "$gt": now_ms },
        };
        let first_held_back = self.first_of(held_back, "owed_not_before_ms");
        let (first_slot, first_held_back) = futures::try_join!(first_slot, first_held_back)?;
        Ok(first_slot.into_iter().chain(first_held_back).min())
    }

    /// The smallest `field` of the documents matching `filter`, read from the primary.
    async fn first_of(&self, filter: Document, field: &str) -> Result<Option<i64>, StoreError> {
        let first = self
            .collection
            .find_one(filter)
            .selection_criteria(primary())
            .projection(doc! { "_id": 0, field: 1 })
            .sort(doc! { field: 1 })
            .await
            .map_err(server("find_one"))?;
        Ok(first.and_then(|d| d.get_i64(field).ok()))
    }

    /// Ends the push of `lease` (see [`PushSlots::finish_all`]). False when its holder no
    /// longer holds the slot.
    pub async fn finish(&self, lease: &SlotLease, end: PushEnd) -> Result<bool, StoreError> {
        Ok(self.finish_all(&[FinishedPush { lease, end }]).await? > 0)
    }

    /// Ends pushes in one write whatever their number: records each one's audience, where the
    /// next one resumes and the stream's next slot, and clears what the stream was owed unless
    /// the push left part of its audience without the frame (then the mark is lowered to its
    /// `still_owed_from_ms`) or an invocation marked the stream again after the slot was taken
    /// (then the next push makes that one). A push whose holder no longer holds the slot (its
    /// lease ran out and another push took it) changes nothing. Each end also gives up the
    /// holder's token, so at most one statement of a push ever matches and a repeated end
    /// changes nothing. Returns how many pushes still held their slot. Tried twice: the driver
    /// does not retry a raw command.
    pub async fn finish_all(&self, pushes: &[FinishedPush<'_>]) -> Result<u64, StoreError> {
        if pushes.is_empty() {
            return Ok(0);
        }
        let mut statements = Vec::with_capacity(pushes.len() * 2);
        for FinishedPush { lease, end } in pushes {
            let mut set = doc! {
                "audience": i64::try_from(end.audience).unwrap_or(i64::MAX),
                "next_due_ms": end.next_due_ms,
                "seq": end.seq,
            };
            let mut unset = doc! { "holder": "" };
            match &end.resume_from {
                Some(id) => {
                    set.insert("resume_from", id);
                }
                None => {
                    unset.insert("resume_from", "");
                }
            }
            let mut update = doc! { "$set": set, "$unset": unset };
            match end.still_owed_from_ms {
                // The rest of a push cut short is due as soon as the slot opens, whatever a
                // mark made during the push held back.
                Some(since) => {
                    update.insert(
                        "$min",
                        doc! { "owed_from_ms": since, "owed_not_before_ms": 0_i64 },
                    );
                    statements.push(statement(held(lease), update));
                }
                None => statements.extend(clearing_owed(lease, update)),
            }
        }
        let (reply, retried) = self.update_twice(statements, "push end").await?;
        // After a retry the first try may have ended some pushes: the count is not known, and
        // no push is reported lost.
        Ok(if retried {
            pushes.len() as u64
        } else {
            reply.matched
        })
    }

    /// Gives back, in one write, slots taken with nothing to push (what was owed had been
    /// pushed by the slot's previous holder): each stream's slot is open again at once, its
    /// audience and place kept, and its owed mark cleared unless an invocation marked it again
    /// after the slot was taken (then the next push makes that one).
    pub async fn release_all(&self, leases: &[&SlotLease]) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let statements = leases
            .iter()
            .flat_map(|lease| clearing_owed(lease, reopened(lease.at_ms)))
            .collect();
        self.update_twice(statements, "slot release").await?;
        Ok(())
    }

    /// Gives back, in one write, slots taken for pushes that could not be made (their reads
    /// failed): each slot opens again at once, and whatever the stream was owed stays owed.
    pub async fn reopen_all(&self, leases: &[&SlotLease]) -> Result<(), StoreError> {
        if leases.is_empty() {
            return Ok(());
        }
        let statements = leases
            .iter()
            .map(|lease| statement(held(lease), reopened_still_due(lease.at_ms)))
            .collect();
        self.update_twice(statements, "slot reopening").await?;
        Ok(())
    }

    /// Sends holder-guarded `statements` as one unordered `update`, once more if the first try
    /// fails (a statement that already matched gave up its token and matches nothing again);
    /// says whether it was retried. A duplicate key (a unique index other than `_id`) fails it:
    /// that write was not made.
    async fn update_twice(
        &self,
        statements: Vec<Document>,
        what: &str,
    ) -> Result<(super::update_command::UpdateReply, bool), StoreError> {
        let (reply, retried) = match unordered_update(
            &self.database,
            Self::COLLECTION,
            statements.clone(),
            what,
        )
        .await
        {
            Ok(reply) => (reply, false),
            Err(error) => {
                tracing::warn!(%error, what, "retrying a failed write once");
                let reply =
                    unordered_update(&self.database, Self::COLLECTION, statements, what).await?;
                (reply, true)
            }
        };
        no_duplicates(&reply.duplicates, what)?;
        Ok((reply, retried))
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

/// Fails when a statement that upserts nothing hit a duplicate key (a unique index other than
/// `_id`): its write was not made.
fn no_duplicates(duplicates: &[usize], what: &str) -> Result<(), StoreError> {
    match duplicates.len() {
        0 => Ok(()),
        n => Err(StoreError::Write(format!(
            "{what}: {n} statements hit a duplicate key"
        ))),
    }
}

/// One statement of an `update` command.
fn statement(filter: Document, update: Document) -> Document {
    doc! { "q": filter, "u": update, "upsert": false, "multi": false }
}

/// The filter that matches the slot of `lease` while its holder holds it.
fn held(lease: &SlotLease) -> Document {
    doc! { "_id": lease.stream.as_str(), "holder": &lease.holder }
}

/// A slot given back: open at `at_ms`, its holder's token given up.
fn reopened(at_ms: i64) -> Document {
    doc! { "$set": { "next_due_ms": at_ms }, "$unset": { "holder": "" } }
}

/// [`reopened`] for a push that was due and could not be made: what the stream owes is due
/// again at once, whatever a mark made meanwhile held back.
fn reopened_still_due(at_ms: i64) -> Document {
    let mut update = reopened(at_ms);
    update.insert("$min", doc! { "owed_not_before_ms": 0_i64 });
    update
}

/// The two statements that apply `update` (which gives up the holder's token) to the slot of
/// `lease` while its holder holds it: with the owed mark cleared as well when nobody marked
/// the stream owed since the slot was taken, alone (the mark left for the next push) when
/// somebody did. One of them matches, and then, the token given up, not the other.
fn clearing_owed(lease: &SlotLease, update: Document) -> [Document; 2] {
    let mut unmarked = held(lease);
    unmarked.insert("owed_seq", unchanged(lease.owed_seq));
    let mut cleared = update.clone();
    match cleared.get_document_mut("$unset") {
        Ok(unset) => {
            unset.insert("owed_from_ms", "");
            unset.insert("owed_not_before_ms", "");
        }
        Err(_) => {
            cleared.insert(
                "$unset",
                doc! { "owed_from_ms": "", "owed_not_before_ms": "" },
            );
        }
    }
    let mut marked = held(lease);
    marked.insert("owed_seq", changed(lease.owed_seq));
    [statement(unmarked, cleared), statement(marked, update)]
}

/// The filter that holds for owed streams whose push may be made at `now_ms`. Every mark
/// written now has `owed_not_before_ms`: a mark sets it (0 when the push need not wait), a
/// claim sets it to its lease's end, and a push that ends or gives back its slot with the
/// stream still owed lowers it to 0 or leaves a mark's; only clearing the mark removes it.
/// A mark without it (written before the field existed) may be pushed at once.
fn may_push_by(now_ms: i64) -> Document {
    doc! { "owed_not_before_ms": { "$not": { "$gt": now_ms } } }
}

/// The filter on `owed_seq` that holds once an invocation marked the stream owed after the
/// slot was taken with `owed_seq`.
fn changed(owed_seq: i64) -> Document {
    if owed_seq == 0 {
        doc! { "$exists": true }
    } else {
        doc! { "$exists": true, "$ne": owed_seq }
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
