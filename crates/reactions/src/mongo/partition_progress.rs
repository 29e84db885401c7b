//! The `partition_progress` collection: per input partition, how far aggregate has counted (the
//! highest offset whose batch succeeded and the latest record timestamp in it), and which
//! incarnation of the topic those offsets belong to. What `final` is decided from (see
//! `crate::event_time`) and what tells a recreated topic from a redelivery (see
//! `crate::topic_generation`). Written after a batch's windows, so it never runs ahead of them.

use super::{StoreError, update_command::unordered_update};
use crate::event_time::PartitionProgress;
use crate::topic_generation::{AheadRecords, UnlistedAhead};
use crate::window_delta::PartitionKey;
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc};
use mongodb::{Collection, Database};

/// The document id: the partition's key without its generation, so one document follows the
/// partition through the topic's incarnations.
fn id(topic: &str, partition: i32) -> String {
    PartitionKey {
        topic: topic.to_owned(),
        partition,
        generation: 0,
    }
    .field_name()
}

fn parse(document: &Document) -> Result<PartitionProgress, StoreError> {
    let malformed = || StoreError::Malformed(format!("partition progress {document}"));
    let integer = |field: &str| document.get(field).and_then(super::integer);
    Ok(PartitionProgress {
        topic: document
            .get_str("topic")
            .map_err(|_| malformed())?
            .to_owned(),
        partition: integer("partition")
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(malformed)?,
        generation: integer("generation")
            .and_then(|g| u32::try_from(g).ok())
            .ok_or_else(malformed)?,
        offset: integer("offset").ok_or_else(malformed)?,
        max_timestamp_ms: integer("max_timestamp_ms").ok_or_else(malformed)?,
        ahead: AheadRecords {
            listed: match document.get("ahead") {
                None => Vec::new(),
                Some(Bson::Array(entries)) => entries
                    .iter()
                    .map(|entry| {
                        let entry = entry.as_document()?;
                        let field = |name| entry.get(name).and_then(super::integer);
                        Some((field("offset")?, field("timestamp_ms")?))
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(malformed)?,
                Some(_) => return Err(malformed()),
            },
            unlisted: match (
                document.get("ahead_unlisted_from"),
                document.get("ahead_unlisted_to"),
                document.get("ahead_unlisted_ms"),
            ) {
                (None, None, None) => None,
                (Some(from), Some(to), Some(max)) => Some(UnlistedAhead {
                    first_offset: super::integer(from).ok_or_else(malformed)?,
                    last_offset: super::integer(to).ok_or_else(malformed)?,
                    max_timestamp_ms: super::integer(max).ok_or_else(malformed)?,
                }),
                _ => return Err(malformed()),
            },
        },
    })
}

fn ahead_entries(ahead: &AheadRecords) -> Vec<Document> {
    ahead
        .listed
        .iter()
        .map(|(offset, timestamp)| doc! { "offset": offset, "timestamp_ms": timestamp })
        .collect()
}

/// The `partition_progress` collection.
#[derive(Debug, Clone)]
pub struct PartitionProgressStore {
    database: Database,
    collection: Collection<Document>,
}

impl PartitionProgressStore {
    /// The collection name.
    pub const COLLECTION: &'static str = "partition_progress";

    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// The progress of every partition of `topic` counted so far (absent: none of its
    /// records yet).
    /// Read from the primary, like the windows the `final` pass compares it with.
    pub async fn read(&self, topic: &str) -> Result<Vec<PartitionProgress>, StoreError> {
        let documents: Vec<mongodb::bson::Document> = self
            .collection
            .find(doc! { "topic": topic })
            .selection_criteria(super::primary())
            .await
            .map_err(super::server("find"))?
            .try_collect()
            .await
            .map_err(super::server("find"))?;
        documents.iter().map(parse).collect()
    }

    /// Records that the batches described by `counted` succeeded. Within a generation the
    /// offset and timestamp only grow (a redelivered batch lowers nothing); a newer generation
    /// replaces an older one's figures; an older one changes nothing.
    pub async fn advance(
        &self,
        counted: &[PartitionProgress],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if counted.is_empty() {
            return Ok(());
        }
        let updated_at = DateTime::from_millis(now_ms);
        let same_generation = |p: &PartitionProgress| {
            let mut highest = doc! { "offset": p.offset, "max_timestamp_ms": p.max_timestamp_ms };
            let mut update = doc! {
                "$set": { "updated_at": updated_at },
                "$setOnInsert": { "topic": p.topic.as_str(), "partition": p.partition },
            };
            if let Some(unlisted) = p.ahead.unlisted {
                highest.insert("ahead_unlisted_to", unlisted.last_offset);
                highest.insert("ahead_unlisted_ms", unlisted.max_timestamp_ms);
                update.insert(
                    "$min",
                    doc! { "ahead_unlisted_from": unlisted.first_offset },
                );
            }
            if !p.ahead.listed.is_empty() {
                // A union: overlapping deliveries of one batch each add theirs.
                update.insert(
                    "$addToSet",
                    doc! { "ahead": { "$each": ahead_entries(&p.ahead) } },
                );
            }
            update.insert("$max", highest);
            doc! {
                "q": { "_id": id(&p.topic, p.partition), "generation": i64::from(p.generation) },
                "u": update,
                "upsert": true,
                "multi": false,
            }
        };
        let statements: Vec<Document> = counted.iter().map(same_generation).collect();
        let update =
            |statements| unordered_update(&self.database, Self::COLLECTION, statements, "progress");
        // A duplicate key: the document holds another generation (or an insert raced).
        let other = update(statements).await?.duplicates;
        if other.is_empty() {
            return Ok(());
        }
        let newer = |p: &PartitionProgress| {
            let mut figures = doc! {
                "generation": i64::from(p.generation),
                "offset": p.offset,
                "max_timestamp_ms": p.max_timestamp_ms,
                "ahead": ahead_entries(&p.ahead),
                "updated_at": updated_at,
            };
            let mut update = doc! {};
            match p.ahead.unlisted {
                Some(unlisted) => {
                    figures.insert("ahead_unlisted_from", unlisted.first_offset);
                    figures.insert("ahead_unlisted_to", unlisted.last_offset);
                    figures.insert("ahead_unlisted_ms", unlisted.max_timestamp_ms);
                }
                None => {
                    update.insert(
                        "$unset",
                        doc! { "ahead_unlisted_from": "", "ahead_unlisted_to": "", "ahead_unlisted_ms": "" },
                    );
                }
            }
            update.insert("$set", figures);
            doc! {
                "q": { "_id": id(&p.topic, p.partition), "generation": { "$lt": i64::from(p.generation) } },
                "u": update,
                "upsert": false,
                "multi": false,
            }
        };
        update(other.iter().map(|i| newer(&counted[*i])).collect()).await?;
        // Now the document holds this generation (replaced, or written by the racing insert)
        // and `$max` applies, or it holds a newer one and this older figure changes nothing.
        update(
            other
                .iter()
                .map(|i| same_generation(&counted[*i]))
                .collect(),
        )
        .await?;
        Ok(())
    }

    /// Drops the capped records that `counted`'s timestamps have passed: they tell nothing
    /// any more, and the list stays short. Only entries at or below the figure just written
    /// go, so a concurrent delivery's entries are kept whatever the order.
    pub async fn drop_passed_ahead(&self, counted: &[PartitionProgress]) -> Result<(), StoreError> {
        if counted.is_empty() {
            return Ok(());
        }
        let statements = counted
            .iter()
            .map(|p| {
                doc! {
                    "q": { "_id": id(&p.topic, p.partition), "generation": i64::from(p.generation) },
                    "u": { "$pull": { "ahead": { "timestamp_ms": { "$lte": p.max_timestamp_ms } } } },
                    "upsert": false,
                    "multi": false,
                }
            })
            .collect();
        unordered_update(&self.database, Self::COLLECTION, statements, "progress").await?;
        Ok(())
    }
}
