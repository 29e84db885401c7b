//! The `viewer_taps` collection: fair use's tallies, one document per (stream, window, viewer)
//! with the taps counted so far and, per partition, the highest offset accounted for (see
//! `fair_use`). aggregate reads a batch's tallies in one `find` before it writes the windows,
//! and writes them back in one `update` after; documents expire with their window.

use super::{StoreError, WriteTimes, server};
use crate::fair_use::{Tally, TallyWrite};
use crate::window::WindowWidth;
use crate::window_delta::PartitionKey;
use mongodb::bson::{DateTime, Document, doc};
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

fn tally_from(document: &Document) -> Result<(String, Tally), StoreError> {
    let malformed = |what: &str| StoreError::Malformed(format!("viewer_taps document: {what}"));
    let id = document.get_str("_id").map_err(|_| malformed("_id"))?;
    let counted = document
        .get("counted")
        .and_then(super::integer)
        .and_then(|v| u64::try_from(v).ok())
        .ok_or_else(|| malformed("counted"))?;
    let mut offsets = BTreeMap::new();
    if let Ok(stored) = document.get_document("offsets") {
        for (name, value) in stored {
            let partition = PartitionKey::from_field_name(name).ok_or_else(|| malformed(name))?;
            let offset = super::integer(value).ok_or_else(|| malformed(name))?;
            offsets.insert(partition, offset);
        }
    }
    Ok((id.to_owned(), Tally { counted, offsets }))
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

    /// The stored tallies among `ids` (absent ids have counted nothing yet).
    pub async fn read(&self, ids: &[String]) -> Result<BTreeMap<String, Tally>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let documents = super::find_all(&self.collection, doc! { "_id": { "$in": ids } }).await?;
        documents.iter().map(tally_from).collect()
    }

    /// Stores a batch's tallies in one unordered `update`, each only over a tally that
    /// accounts for less of its partition. A tally that already accounts for as much (an
    /// earlier or a wider delivery of the same records) fails that condition (its insert then
    /// hits the unique `_id`) and is left as it is. Returns the number of statements sent.
    pub async fn write(
        &self,
        writes: &[TallyWrite],
        width: WindowWidth,
        times: WriteTimes,
    ) -> Result<usize, StoreError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let retention_ms = crate::clock::duration_ms(times.retention);
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
