//! Whose turn it is to run the `final` pass over an input topic. Every aggregate container
//! runs the pass after its batches (at most once per `FINALIZE_EVERY_MS`), so with several
//! containers passes overlap: each read the same open windows and published their final states
//! again (measured with 500 streams: one pass in five published its few hundred final states
//! two or three times, a burst notify had to drain for nothing). A pass now runs only while its
//! container holds the topic's turn, one document of the `finalize_turns` collection, taken
//! when nobody holds it or its holder's lease has run out, and given back when the pass ends.
//! A container that dies during its pass keeps the turn until its lease runs out; the windows
//! it did not mark final are published by the next pass. A pass that outlives its lease may
//! overlap the next one, which publishes some final states twice: harmless, as before.

use super::{StoreError, is_duplicate_key, server};
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};

/// The `finalize_turns` collection: one document per input topic.
#[derive(Debug, Clone)]
pub struct FinalizeTurns {
    collection: Collection<Document>,
}

/// A turn taken by one pass, to give back when the pass ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalizeTurn {
    topic: String,
    holder: String,
}

impl FinalizeTurns {
    /// The collection name.
    pub const COLLECTION: &'static str = "finalize_turns";

    pub fn new(database: &Database) -> Self {
        Self {
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Takes `topic`'s turn until `until_ms`, unless another pass holds it past `now_ms`
    /// (then `None`: that pass publishes what this one would have).
    pub async fn take(
        &self,
        topic: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<FinalizeTurn>, StoreError> {
        let holder = format!("{:032x}", rand::random::<u128>());
        // A held turn does not match, so the upsert inserts a second document with the
        // topic's id, which the server refuses as a duplicate key: taken by someone else.
        let taken = self
            .collection
            .update_one(
                doc! { "_id": topic, "until_ms": { "$lte": now_ms } },
                doc! { "$set": { "holder": &holder, "until_ms": until_ms } },
            )
            .upsert(true)
            .await;
        match taken {
            Ok(_) => Ok(Some(FinalizeTurn {
                topic: topic.to_owned(),
                holder,
            })),
            Err(error) if is_duplicate_key(&error) => Ok(None),
            Err(error) => Err(server("update_one")(error)),
        }
    }

    /// Gives the turn back, if `turn` still holds it, so the next pass need not wait for the
    /// lease to run out.
    pub async fn give_back(&self, turn: &FinalizeTurn) -> Result<(), StoreError> {
        self.collection
            .update_one(
                doc! { "_id": &turn.topic, "holder": &turn.holder },
                doc! { "$set": { "until_ms": i64::MIN } },
            )
            .await
            .map_err(server("update_one"))?;
        Ok(())
    }
}
