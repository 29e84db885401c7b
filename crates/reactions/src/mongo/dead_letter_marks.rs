//! The `dead_letter_marks` collection: per input partition, the highest offset whose dead
//! letter has been produced. A batch that fails after its dead letters were produced (MongoDB
//! or the output topic down) comes back whole; the marks keep its dead letters from being
//! produced again. Only a crash between producing them and advancing the mark can repeat one.

use super::{StoreError, update_command::unordered_update};
use crate::window_delta::PartitionKey;
use mongodb::bson::{Document, doc};
use mongodb::{Collection, Database};
use std::collections::BTreeMap;

/// The `dead_letter_marks` collection.
#[derive(Debug, Clone)]
pub struct DeadLetterMarks {
    database: Database,
    collection: Collection<Document>,
}

impl DeadLetterMarks {
    /// The collection name.
    pub const COLLECTION: &'static str = "dead_letter_marks";

    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// The marks of `partitions` (absent: nothing dead-lettered there yet).
    pub async fn read(
        &self,
        partitions: &[PartitionKey],
    ) -> Result<BTreeMap<PartitionKey, i64>, StoreError> {
        if partitions.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ids: Vec<String> = partitions.iter().map(PartitionKey::field_name).collect();
        let documents = super::find_all(&self.collection, doc! { "_id": { "$in": ids } }).await?;
        documents
            .iter()
            .map(|document| {
                let malformed = || StoreError::Malformed(format!("dead letter mark {document}"));
                let partition = document
                    .get_str("_id")
                    .ok()
                    .and_then(PartitionKey::from_field_name)
                    .ok_or_else(malformed)?;
                let offset = document
                    .get("offset")
                    .and_then(super::integer)
                    .ok_or_else(malformed)?;
                Ok((partition, offset))
            })
            .collect()
    }

    /// Raises the marks to `highest` (never lowers one), in one unordered `update`.
    pub async fn advance(&self, highest: &BTreeMap<PartitionKey, i64>) -> Result<(), StoreError> {
        let statement = |(partition, offset): (&PartitionKey, &i64)| {
            doc! {
                "q": { "_id": partition.field_name() },
                "u": { "$max": { "offset": *offset } },
                "upsert": true,
                "multi": false,
            }
        };
        let statements: Vec<Document> = highest.iter().map(statement).collect();
        if statements.is_empty() {
            return Ok(());
        }
        let raced = unordered_update(
            &self.database,
            Self::COLLECTION,
            statements.clone(),
            "dead letter mark",
        )
        .await?
        .duplicates;
        if raced.is_empty() {
            return Ok(());
        }
        // An insert lost to another writer's: the document exists now, so `$max` applies.
        let again: Vec<Document> = raced
            .into_iter()
            .map(|index| statements[index].clone())
            .collect();
        let lost = unordered_update(&self.database, Self::COLLECTION, again, "dead letter mark")
            .await?
            .duplicates;
        match lost.is_empty() {
            true => Ok(()),
            false => Err(StoreError::Write(
                "dead letter mark: insert raced twice".into(),
            )),
        }
    }
}
