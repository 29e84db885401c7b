//! The `viewer_taps` collection: each viewer's state on each stream (see `viewer_state`), one
//! document per (stream, viewer): fair use's taps counted per recent window, the viewer's
//! recent idempotency keys and, per partition, the highest offset the state accounts for.
//! aggregate reads a batch's states in one `find` before it writes the windows, and writes them
//! back in one `update` after; ingest reads them to refuse a reused key. A document expires
//! [`KEY_MEMORY`] after its last write.

use super::{StoreError, WriteTimes, server};
use crate::idempotency::{KEY_MEMORY, SeenKey};
use crate::viewer_state::{ViewerState, ViewerStateWrite};
use crate::window_delta::PartitionKey;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::{Collection, Database};
use std::collections::BTreeMap;

/// The `viewer_taps` collection.
#[derive(Debug, Clone)]
pub struct ViewerTapStore {
    database: Database,
    collection: Collection<Document>,
}

fn offset_path(partition: &PartitionKey) -> String {
    format!("offsets.{}", partition.field_name())
}

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(format!("viewer_taps document: {what}"))
}

fn state_from(document: &Document) -> Result<ViewerState, StoreError> {
    let mut state = ViewerState::default();
    if let Ok(stored) = document.get_document("offsets") {
        for (name, value) in stored {
            let partition = PartitionKey::from_field_name(name).ok_or_else(|| malformed(name))?;
            let offset = super::integer(value).ok_or_else(|| malformed(name))?;
            state.offsets.insert(partition, offset);
        }
    }
    if let Ok(stored) = document.get_document("windows") {
        for (start, counted) in stored {
            let start: i64 = start.parse().map_err(|_| malformed("windows"))?;
            let counted = super::integer(counted)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| malformed("windows"))?;
            state.windows.insert(start, counted);
        }
    }
    if let Ok(stored) = document.get_array("keys") {
        for entry in stored {
            let Bson::Document(entry) = entry else {
                return Err(malformed("keys"));
            };
            let number = |name: &str| entry.get(name).and_then(super::integer);
            let Some(Bson::Binary(items)) = entry.get("i") else {
                return Err(malformed("keys.i"));
            };
            state.keys.push(SeenKey {
                key: number("k").ok_or_else(|| malformed("keys.k"))?,
                body: number("b").ok_or_else(|| malformed("keys.b"))?,
                items: items.bytes.clone(),
            });
        }
    }
    Ok(state)
}

fn windows_bson(windows: &BTreeMap<i64, u64>) -> Document {
    windows
        .iter()
        .map(|(start, counted)| {
            (
                start.to_string(),
                Bson::Int64(i64::try_from(*counted).unwrap_or(i64::MAX)),
            )
        })
        .collect()
}

fn keys_bson(keys: &[SeenKey]) -> Vec<Bson> {
    keys.iter()
        .map(|seen| {
            Bson::Document(doc! {
                "k": seen.key,
                "b": seen.body,
                "i": Binary { subtype: BinarySubtype::Generic, bytes: seen.items.clone() },
            })
        })
        .collect()
}

impl ViewerTapStore {
    /// The collection name.
    pub const COLLECTION: &'static str = "viewer_taps";

    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Creates the expiry TTL index if missing. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.collection
            .create_index(super::expiry_index())
            .await
            .map_err(server("create_index"))?;
        Ok(())
    }

    /// The stored states among `ids`, in one `find` (none when `ids` is empty; absent ones
    /// have counted nothing yet).
    pub async fn read(&self, ids: &[String]) -> Result<BTreeMap<String, ViewerState>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let documents = super::find_all(&self.collection, doc! { "_id": { "$in": ids } }).await?;
        documents
            .iter()
            .map(|document| {
                let id = document.get_str("_id").map_err(|_| malformed("_id"))?;
                Ok((id.to_owned(), state_from(document)?))
            })
            .collect()
    }

    /// Stores a batch's states in one unordered `update`, each only over a state that accounts
    /// for less of its partition. One that already accounts for as much (an earlier or a wider
    /// delivery of the same records) fails that condition (its insert then hits the unique
    /// `_id`) and is left as it is. Returns the number of statements sent.
    pub async fn write(
        &self,
        writes: &[ViewerStateWrite],
        times: WriteTimes,
    ) -> Result<usize, StoreError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let expires_at = DateTime::from_millis(
            times
                .now_ms
                .saturating_add(crate::clock::duration_ms(KEY_MEMORY)),
        );
        let statements: Vec<Document> = writes
            .iter()
            .map(|write| {
                let path = offset_path(&write.partition);
                doc! {
                    // A write only raises the state's offset for its partition, so of two
                    // overlapping deliveries the one reaching further wins. It accounts for the
                    // other's reactions too: it was computed from the same state or a newer one,
                    // and reactions a state already accounts for are not counted again.
                    // Below the write's offset or absent, said without `$or`, which the local
                    // MongoDB-wire server answers by scanning the collection (807 ms against
                    // 5 ms per 60 statements over 40,000 documents).
                    "q": { "_id": &write.id, path.clone(): { "$not": { "$gte": write.offset } } },
                    "u": { "$set": {
                        "windows": windows_bson(&write.state.windows),
                        "keys": keys_bson(&write.state.keys),
                        path: write.offset,
                        "expires_at": expires_at,
                    } },
                    "upsert": true,
                    "multi": false,
                }
            })
            .collect();
        let sent = statements.len();
        let update = |statements| {
            super::update_command::unordered_update(
                &self.database,
                Self::COLLECTION,
                statements,
                "viewer state update",
            )
        };
        let raced = update(statements.clone()).await?.duplicates;
        if !raced.is_empty() {
            // A duplicate key: the state exists, and either accounts for as much of the
            // partition already, or was inserted by an overlapping delivery since this one
            // read it (MongoDB retries such an upsert only for a plain `_id` filter). Sent
            // again as an update of the existing state, the condition decides.
            let again: Vec<Document> = raced
                .into_iter()
                .map(|index| {
                    let mut statement = statements[index].clone();
                    statement.insert("upsert", false);
                    statement
                })
                .collect();
            update(again).await?;
        }
        Ok(sent)
    }
}
