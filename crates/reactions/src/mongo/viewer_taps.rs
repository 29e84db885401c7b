//! The `viewer_taps` collection: what aggregate keeps per viewer. Fair use's tallies, one
//! document per (stream, window, viewer) with the taps counted so far (see `fair_use`), and the
//! viewer's recent idempotency keys, one document per (stream, viewer) (see `idempotency`);
//! each keeps, per partition, the highest offset it accounts for. aggregate reads a batch's
//! documents of both kinds in one `find` before it writes the windows, and writes them back in
//! one `update` after. Tallies expire with their window, keys [`KEY_MEMORY`] after their last
//! use.

use super::{StoreError, WriteTimes, server};
use crate::fair_use::{Tally, TallyWrite};
use crate::idempotency::{KEY_MEMORY, KeyState, KeyStateWrite, SeenKey, is_key_state_id};
use crate::window::WindowWidth;
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

fn offsets_from(document: &Document) -> Result<BTreeMap<PartitionKey, i64>, StoreError> {
    let mut offsets = BTreeMap::new();
    if let Ok(stored) = document.get_document("offsets") {
        for (name, value) in stored {
            let partition = PartitionKey::from_field_name(name).ok_or_else(|| malformed(name))?;
            let offset = super::integer(value).ok_or_else(|| malformed(name))?;
            offsets.insert(partition, offset);
        }
    }
    Ok(offsets)
}

fn tally_from(document: &Document) -> Result<Tally, StoreError> {
    let counted = document
        .get("counted")
        .and_then(super::integer)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| malformed("counted"))?;
    Ok(Tally {
        counted,
        offsets: offsets_from(document)?,
    })
}

fn key_state_from(document: &Document) -> Result<KeyState, StoreError> {
    let mut keys = Vec::new();
    if let Ok(stored) = document.get_array("keys") {
        for entry in stored {
            let Bson::Document(entry) = entry else {
                return Err(malformed("keys"));
            };
            let number = |name: &str| entry.get(name).and_then(super::integer);
            let items = match entry.get("i") {
                Some(Bson::Binary(binary)) => binary.bytes.clone(),
                _ => return Err(malformed("keys.i")),
            };
            keys.push(SeenKey {
                key: number("k").ok_or_else(|| malformed("keys.k"))?,
                body: number("b").ok_or_else(|| malformed("keys.b"))?,
                items,
            });
        }
    }
    Ok(KeyState {
        offsets: offsets_from(document)?,
        keys,
    })
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

/// What a batch's viewers have stored: tallies and key states, by document id (absent ones have
/// counted nothing yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ViewerState {
    pub tallies: BTreeMap<String, Tally>,
    pub keys: BTreeMap<String, KeyState>,
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

    /// The stored tallies and key states among `ids` (tally and key state ids alike), in one
    /// `find`; none when `ids` is empty.
    pub async fn read(&self, ids: &[String]) -> Result<ViewerState, StoreError> {
        let mut state = ViewerState::default();
        if ids.is_empty() {
            return Ok(state);
        }
        let documents = super::find_all(&self.collection, doc! { "_id": { "$in": ids } }).await?;
        for document in &documents {
            let id = document.get_str("_id").map_err(|_| malformed("_id"))?;
            if is_key_state_id(id) {
                state.keys.insert(id.to_owned(), key_state_from(document)?);
            } else {
                state.tallies.insert(id.to_owned(), tally_from(document)?);
            }
        }
        Ok(state)
    }

    /// Stores a batch's tallies and key states in one unordered `update`, each only over a
    /// document that accounts for less of its partition. One that already accounts for as much
    /// (an earlier or a wider delivery of the same records) fails that condition (its insert
    /// then hits the unique `_id`) and is left as it is. Returns the number of statements sent.
    pub async fn write(
        &self,
        writes: &[TallyWrite],
        keys: &[KeyStateWrite],
        width: WindowWidth,
        times: WriteTimes,
    ) -> Result<usize, StoreError> {
        if writes.is_empty() && keys.is_empty() {
            return Ok(0);
        }
        let retention_ms = crate::clock::duration_ms(times.retention);
        let keys_expire = DateTime::from_millis(
            times
                .now_ms
                .saturating_add(crate::clock::duration_ms(KEY_MEMORY)),
        );
        let key_statements = keys.iter().map(|write| {
            let path = offset_path(&write.partition);
            doc! {
                // As for tallies below: the write reaching furthest into the partition wins.
                "q": { "_id": &write.id, path.clone(): { "$not": { "$gte": write.offset } } },
                "u": { "$set": {
                    "keys": keys_bson(&write.keys),
                    path: write.offset,
                    "expires_at": keys_expire,
                } },
                "upsert": true,
                "multi": false,
            }
        });
        let statements: Vec<Document> = writes
            .iter()
            .map(|write| {
                let path = offset_path(&write.partition);
                let end_ms = write.start_ms.saturating_add(width.millis());
                doc! {
                    // A write only raises the tally's offset for its partition, so of two
                    // overlapping deliveries the one reaching further wins. It accounts for the
                    // other's reactions too: it was computed from the same tally or a newer one,
                    // and reactions a tally already accounts for are not counted again.
                    // Below the write's offset or absent, said without `$or`, which the local
                    // MongoDB-wire server answers by scanning the collection (807 ms against
                    // 5 ms per 60 statements over 40,000 tallies).
                    "q": { "_id": &write.id, path.clone(): { "$not": { "$gte": write.offset } } },
                    "u": { "$set": {
                        "counted": i64::try_from(write.counted).unwrap_or(i64::MAX),
                        path: write.offset,
                        "expires_at": DateTime::from_millis(end_ms.saturating_add(retention_ms)),
                    } },
                    "upsert": true,
                    "multi": false,
                }
            })
            .chain(key_statements)
            .collect();
        let sent = statements.len();
        let update = |statements| {
            super::update_command::unordered_update(
                &self.database,
                Self::COLLECTION,
                statements,
                "viewer tally update",
            )
        };
        let raced = update(statements.clone()).await?.duplicates;
        if !raced.is_empty() {
            // A duplicate key: the tally exists, and either accounts for as much of the
            // partition already, or was inserted by an overlapping delivery since this one
            // read it (MongoDB retries such an upsert only for a plain `_id` filter). Sent
            // again as an update of the existing tally, the condition decides.
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
