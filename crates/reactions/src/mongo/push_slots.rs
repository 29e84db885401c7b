//! The `pushes` collection: when each stream may next be pushed to its viewers. One document per
//! stream holds `next_due_ms`; a notify instance takes the next push slot with a compare-and-set
//! on the value it read, so however many instances handle a stream's states at once (several
//! partitions, a retried batch beside a new one, a restarted container), at most one push per
//! stream starts per interval, and the schedule survives restarts. Comparing the stored value
//! rather than clocks keeps instances with skewed clocks from taking slots twice; a wait is
//! capped, so a clock far ahead cannot stall a stream.

use super::{StoreError, is_duplicate_key, server};
use crate::clock::duration_ms;
use crate::ids::StreamId;
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};
use std::time::Duration;

/// How long a stream's schedule is kept after its last push.
const SCHEDULE_RETENTION: Duration = Duration::from_secs(24 * 3_600);

/// What [`PushSlots::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The slot is ours: push now, then [`PushSlots::finish`].
    Granted,
    /// The next slot starts at `due_ms` (as stored): wait and claim again.
    NotBefore { due_ms: i64 },
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

    /// Creates the TTL index that forgets idle streams. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.collection
            .create_indexes([super::expiry_index()])
            .await
            .map_err(server("create_indexes"))?;
        Ok(())
    }

    /// Takes the push slot of `stream` if it is due at `now_ms`, or if `seen_due_ms` (what an
    /// earlier claim returned) is still the stored value: a caller that waited for that slot
    /// takes it whatever its own clock says. The slot is held for `lease`: no other push of the
    /// stream starts before [`PushSlots::finish`] sets the next slot or the lease runs out (the
    /// instance died mid-push).
    pub async fn claim(
        &self,
        stream: &StreamId,
        now_ms: i64,
        seen_due_ms: Option<i64>,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        let due = match seen_due_ms {
            Some(seen) => {
                doc! { "$or": [{ "next_due_ms": { "$lte": now_ms } }, { "next_due_ms": seen }] }
            }
            None => doc! { "next_due_ms": { "$lte": now_ms } },
        };
        let mut filter = doc! { "_id": stream.as_str() };
        filter.extend(due);
        let expires_at = now_ms.saturating_add(duration_ms(SCHEDULE_RETENTION));
        let update = doc! {
            "$set": {
                "next_due_ms": now_ms.saturating_add(duration_ms(lease)),
                "last_push_ms": now_ms,
                "expires_at": DateTime::from_millis(expires_at),
            },
        };
        match self
            .collection
            .update_one(filter, update)
            .upsert(true)
            .await
        {
            Ok(_) => Ok(Claim::Granted),
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
                Ok(Claim::NotBefore { due_ms })
            }
            Err(error) => Err(server("update_one")(error)),
        }
    }

    /// Ends a push: records how many connections it reached and sets the stream's next slot.
    pub async fn finish(
        &self,
        stream: &StreamId,
        audience: u64,
        next_due_ms: i64,
    ) -> Result<(), StoreError> {
        self.collection
            .update_one(
                doc! { "_id": stream.as_str() },
                doc! { "$set": {
                    "audience": i64::try_from(audience).unwrap_or(i64::MAX),
                    "next_due_ms": next_due_ms,
                } },
            )
            .await
            .map_err(server("update_one"))?;
        Ok(())
    }

    /// Streams pushed since `since_ms`: the streams that share the post budget.
    pub async fn active_since(&self, since_ms: i64) -> Result<u64, StoreError> {
        self.collection
            .count_documents(doc! { "last_push_ms": { "$gte": since_ms } })
            .await
            .map_err(server("count_documents"))
    }
}
