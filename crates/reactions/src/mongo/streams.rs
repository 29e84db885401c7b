//! The `streams` collection: the stream registry. One document per stream, keyed by its id,
//! holding its title, status, emoji catalogue and moderation switches (`reactions_paused`,
//! `fair_use_limit`; absent in documents written before they existed, which read as off).
//! Admins write it (rarely); ingest reads one document per stream per cache period, and the
//! public routes list the live ones through the `status` index.

use super::{StoreError, is_duplicate_key, server};
use crate::emoji::EmojiCatalogue;
use crate::ids::StreamId;
use crate::stream_registry::{
    StreamChanges, StreamEntry, StreamStatus, Transition, TransitionRefused,
};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

/// Why a registry write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No stream with this id (updates and transitions need one).
    #[error("no stream {0:?} is registered")]
    UnknownStream(String),
    /// Creating a stream needs a title.
    #[error("a new stream needs a title")]
    TitleRequired,
    /// The stream's status does not allow the transition.
    #[error(transparent)]
    Refused(#[from] TransitionRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The `streams` collection.
#[derive(Debug, Clone)]
pub struct StreamStore {
    collection: Collection<Document>,
}

fn millis(document: &Document, key: &str) -> Option<i64> {
    match document.get(key) {
        Some(Bson::Int64(value)) => Some(*value),
        Some(Bson::Int32(value)) => Some(i64::from(*value)),
        _ => None,
    }
}

/// A whole number however it was stored: a shell writes `5` as a double.
fn whole_number(document: &Document, key: &str) -> Option<i64> {
    match document.get(key) {
        Some(Bson::Double(value)) if value.fract() == 0.0 && value.abs() < 2f64.powi(53) => {
            Some(*value as i64)
        }
        _ => millis(document, key),
    }
}

fn catalogue_document(catalogue: &EmojiCatalogue) -> Vec<Document> {
    catalogue
        .emojis()
        .iter()
        .map(|e| doc! { "name": e.name.as_str(), "glyph": &e.glyph })
        .collect()
}

/// Reads a stored stream back, refusing documents that would not pass today's rules.
fn entry_from(document: &Document) -> Result<StreamEntry, StoreError> {
    let malformed = |what: &str| StoreError::Malformed(format!("stream document: {what}"));
    let id = document
        .get_str("_id")
        .ok()
        .and_then(|id| StreamId::parse("_id", id).ok())
        .ok_or_else(|| malformed("_id"))?;
    let status = document
        .get_str("status")
        .ok()
        .and_then(StreamStatus::parse)
        .ok_or_else(|| malformed("status"))?;
    let emojis = document
        .get_array("emojis")
        .map_err(|_| malformed("emojis"))?;
    let mut entries = Vec::with_capacity(emojis.len());
    for emoji in emojis {
        let emoji = emoji.as_document().ok_or_else(|| malformed("emojis[]"))?;
        let name = emoji.get_str("name").map_err(|_| malformed("emoji name"))?;
        let glyph = emoji
            .get_str("glyph")
            .map_err(|_| malformed("emoji glyph"))?;
        entries.push((name, glyph));
    }
    let catalogue = EmojiCatalogue::from_entries(entries).map_err(|e| malformed(&e.to_string()))?;
    Ok(StreamEntry {
        id,
        title: document
            .get_str("title")
            .map_err(|_| malformed("title"))?
            .to_owned(),
        status,
        catalogue,
        created_ms: millis(document, "created_ms").ok_or_else(|| malformed("created_ms"))?,
        updated_ms: millis(document, "updated_ms").ok_or_else(|| malformed("updated_ms"))?,
        started_ms: millis(document, "started_ms"),
        ended_ms: millis(document, "ended_ms"),
        reactions_paused: match document.get("reactions_paused") {
            None | Some(Bson::Null) => false,
            Some(Bson::Boolean(paused)) => *paused,
            Some(_) => return Err(malformed("reactions_paused")),
        },
        fair_use_limit: match whole_number(document, "fair_use_limit") {
            None if !matches!(document.get("fair_use_limit"), None | Some(Bson::Null)) => {
                return Err(malformed("fair_use_limit"));
            }
            None => None,
            Some(limit) => Some(
                u32::try_from(limit)
                    .ok()
                    .filter(|l| *l > 0)
                    .ok_or_else(|| malformed("fair_use_limit"))?,
            ),
        },
    })
}

impl StreamStore {
    /// The collection name.
    pub const COLLECTION: &'static str = "streams";
    /// Most streams one listing returns.
    pub const MAX_LISTED: i64 = 500;

    /// Uses the `streams` collection of `database`.
    pub fn new(database: &Database) -> Self {
        Self {
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Creates the `status` index (for the public list of live streams). Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let by_status = super::named_index(doc! { "status": 1, "_id": 1 }, "status");
        self.collection
            .create_index(by_status)
            .await
            .map_err(server("create_index"))?;
        Ok(())
    }

    /// One stream, or `None` if it is not registered.
    pub async fn get(&self, id: &StreamId) -> Result<Option<StreamEntry>, StoreError> {
        let found = self
            .collection
            .find_one(doc! { "_id": id.as_str() })
            .await
            .map_err(server("find"))?;
        found.as_ref().map(entry_from).transpose()
    }

    /// The registered streams, by id; only those with `status` if given. At most
    /// [`StreamStore::MAX_LISTED`].
    pub async fn list(&self, status: Option<StreamStatus>) -> Result<Vec<StreamEntry>, StoreError> {
        let filter = match status {
            Some(status) => doc! { "status": status.as_str() },
            None => doc! {},
        };
        let documents: Vec<Document> = self
            .collection
            .find(filter)
            .sort(doc! { "_id": 1 })
            .limit(Self::MAX_LISTED)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        // One document edited by hand into something unreadable leaves the others listed.
        Ok(documents
            .iter()
            .filter_map(|document| match entry_from(document) {
                Ok(entry) => Some(entry),
                Err(error) => {
                    tracing::warn!(%error, id = ?document.get("_id"), "stream left out of the listing");
                    None
                }
            })
            .collect())
    }

    /// Creates the stream (scheduled, with `default_catalogue` unless `changes` sets one) or
    /// applies `changes` to it. Returns the stream as stored and whether it was created.
    pub async fn put(
        &self,
        id: &StreamId,
        changes: &StreamChanges,
        default_catalogue: &EmojiCatalogue,
        now_ms: i64,
    ) -> Result<(StreamEntry, bool), RegistryError> {
        if let Some(title) = &changes.title {
            let catalogue = changes.catalogue.as_ref().unwrap_or(default_catalogue);
            let mut document = doc! {
                "_id": id.as_str(),
                "title": title,
                "status": StreamStatus::Scheduled.as_str(),
                "emojis": catalogue_document(catalogue),
                "created_ms": now_ms,
                "updated_ms": now_ms,
                "reactions_paused": changes.reactions_paused.unwrap_or(false),
            };
            if let Some(Some(limit)) = changes.fair_use_limit {
                document.insert("fair_use_limit", i64::from(limit));
            }
            match self.collection.insert_one(&document).await {
                Ok(_) => return Ok((entry_from(&document)?, true)),
                Err(error) if is_duplicate_key(&error) => {}
                Err(error) => return Err(server("insert")(error).into()),
            }
        }
        let mut set = doc! { "updated_ms": now_ms };
        if let Some(title) = &changes.title {
            set.insert("title", title);
        }
        if let Some(catalogue) = &changes.catalogue {
            set.insert("emojis", catalogue_document(catalogue));
        }
        if let Some(paused) = changes.reactions_paused {
            set.insert("reactions_paused", paused);
        }
        let mut update = doc! {};
        match changes.fair_use_limit {
            Some(Some(limit)) => {
                set.insert("fair_use_limit", i64::from(limit));
            }
            Some(None) => {
                update.insert("$unset", doc! { "fair_use_limit": "" });
            }
            None => {}
        }
        update.insert("$set", set);
        let updated = self
            .collection
            .find_one_and_update(doc! { "_id": id.as_str() }, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(server("findAndModify"))?;
        match updated {
            Some(document) => Ok((entry_from(&document)?, false)),
            None if changes.title.is_none() => Err(RegistryError::TitleRequired),
            // Inserted by nobody, found by nobody: deleted between the two calls.
            None => Err(RegistryError::UnknownStream(id.as_str().to_owned())),
        }
    }

    /// Starts or ends the stream. The write is conditional on the status it was read with, so
    /// two admins racing cannot skip a rule (the loser reads again).
    pub async fn transition(
        &self,
        id: &StreamId,
        transition: Transition,
        now_ms: i64,
    ) -> Result<StreamEntry, RegistryError> {
        loop {
            let current = self
                .get(id)
                .await?
                .ok_or_else(|| RegistryError::UnknownStream(id.as_str().to_owned()))?;
            let next = current.status.after(transition)?;
            if next == current.status {
                return Ok(current);
            }
            let stamp = match next {
                StreamStatus::Live => "started_ms",
                _ => "ended_ms",
            };
            let updated = self
                .collection
                .find_one_and_update(
                    doc! { "_id": id.as_str(), "status": current.status.as_str() },
                    doc! { "$set": { "status": next.as_str(), "updated_ms": now_ms, stamp: now_ms } },
                )
                .return_document(ReturnDocument::After)
                .await
                .map_err(server("findAndModify"))?;
            if let Some(document) = updated {
                return Ok(entry_from(&document)?);
            }
        }
    }
}
