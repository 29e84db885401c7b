//! The `connections` collection: which WebSocket connection watches which stream. notify writes
//! it on `$connect`, `subscribe` and `$disconnect`, and reads it by stream (through an index,
//! never a scan) for every fan-out. Documents expire by TTL shortly after API Gateway's 2-hour
//! connection limit, so a missed `$disconnect` cannot leave a connection behind for long.

use super::{StoreError, server};
use crate::ids::StreamId;
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{DateTime, Document, doc};
use mongodb::{Collection, Database};
use std::time::Duration;

/// One registered connection as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConnection {
    /// API Gateway's connection id.
    pub id: String,
    /// The stream whose window states this connection receives.
    pub stream: StreamId,
    /// When the connection was accepted, ms since the epoch.
    pub connected_at_ms: i64,
}

/// A connection as a fan-out reads it: enough to post to it and to tell a connection that is
/// still completing its handshake from one that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchingConnection {
    pub id: String,
    pub connected_at_ms: i64,
}

/// The answer to a connection's `sync`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncClaim {
    /// The connection may have its snapshot now.
    Granted(StoredConnection),
    /// It had one less than the interval ago; it may ask again in `retry_after_ms`.
    TooSoon { retry_after_ms: i64 },
    /// No such connection (expired, or disconnected meanwhile).
    Unknown,
}

/// The `connections` collection.
#[derive(Debug, Clone)]
pub struct ConnectionStore {
    collection: Collection<Document>,
    ttl: Duration,
}

impl ConnectionStore {
    /// The collection name.
    pub const COLLECTION: &'static str = "connections";

    /// Uses the `connections` collection of `database`; documents expire `ttl` after the
    /// connection was accepted.
    pub fn new(database: &Database, ttl: Duration) -> Self {
        Self {
            collection: database.collection(Self::COLLECTION),
            ttl,
        }
    }

    /// Creates the by-stream index and the expiry TTL index if missing. Idempotent. The
    /// by-stream index orders a stream's connections by id, so a fan-out can start anywhere in
    /// the audience and wrap around without sorting it in memory.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let by_stream = super::named_index(doc! { "stream": 1, "_id": 1 }, "stream_connection");
        self.collection
            .create_indexes([by_stream, super::expiry_index()])
            .await
            .map_err(server("create_indexes"))?;
        Ok(())
    }

    /// Records a new connection (or replaces a record with the same id: a retried `$connect`).
    pub async fn register(
        &self,
        id: &str,
        stream: &StreamId,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let ttl_ms = crate::clock::duration_ms(self.ttl);
        let document = doc! {
            "_id": id,
            "stream": stream.as_str(),
            "connected_at_ms": now_ms,
            "expires_at": DateTime::from_millis(now_ms.saturating_add(ttl_ms)),
        };
        self.collection
            .replace_one(doc! { "_id": id }, document)
            .upsert(true)
            .await
            .map_err(server("replace_one"))?;
        Ok(())
    }

    /// Moves a connection to another stream. False when the connection is not registered
    /// (expired, or disconnected meanwhile).
    pub async fn subscribe(&self, id: &str, stream: &StreamId) -> Result<bool, StoreError> {
        let result = self
            .collection
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "stream": stream.as_str() } },
            )
            .await
            .map_err(server("update_one"))?;
        Ok(result.matched_count == 1)
    }

    /// Reads one connection.
    pub async fn find(&self, id: &str) -> Result<Option<StoredConnection>, StoreError> {
        let found = self
            .collection
            .find_one(doc! { "_id": id })
            .await
            .map_err(server("find_one"))?;
        found.map(|d| parse_connection(&d)).transpose()
    }

    /// Grants a connection's `sync` unless it had one less than `every` ago, and records the
    /// time: a snapshot reads up to 150 windows, so one connection repeating `sync` must not
    /// cost a read of MongoDB per frame. One round trip when granted (as the plain read was).
    pub async fn claim_sync(
        &self,
        id: &str,
        now_ms: i64,
        every: Duration,
    ) -> Result<SyncClaim, StoreError> {
        let every_ms = crate::clock::duration_ms(every);
        let due = now_ms.saturating_sub(every_ms);
        let granted = self
            .collection
            .find_one_and_update(
                doc! { "_id": id, "$or": [
                    { "last_sync_ms": { "$exists": false } },
                    { "last_sync_ms": { "$lte": due } },
                ] },
                doc! { "$set": { "last_sync_ms": now_ms } },
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await
            .map_err(server("findAndModify"))?;
        if let Some(document) = granted {
            return Ok(SyncClaim::Granted(parse_connection(&document)?));
        }
        let found = self
            .collection
            .find_one(doc! { "_id": id })
            .await
            .map_err(server("find_one"))?;
        Ok(match found {
            None => SyncClaim::Unknown,
            Some(document) => {
                let last = document.get_i64("last_sync_ms").unwrap_or(now_ms);
                SyncClaim::TooSoon {
                    retry_after_ms: last.saturating_add(every_ms).saturating_sub(now_ms).max(1),
                }
            }
        })
    }

    /// Forgets one connection. False when it was not registered.
    pub async fn remove(&self, id: &str) -> Result<bool, StoreError> {
        let result = self
            .collection
            .delete_one(doc! { "_id": id })
            .await
            .map_err(server("delete_one"))?;
        Ok(result.deleted_count == 1)
    }

    /// Forgets exactly the given connections (those API Gateway answered 410 for) in one
    /// command; returns how many were registered.
    pub async fn remove_all(&self, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let result = self
            .collection
            .delete_many(doc! { "_id": { "$in": ids } })
            .await
            .map_err(server("delete_many"))?;
        Ok(result.deleted_count)
    }

    /// Every connection watching `stream`, read through the by-stream index with a cursor in
    /// batches of `page` documents, so memory does not grow with the audience. In id order from
    /// `start_at` (when given) to the end, then from the start up to it: a fan-out cut short by
    /// its deadline resumes where it stopped. A document without a string id is yielded as
    /// [`StoreError::Malformed`] (a fan-out skips and counts it).
    pub async fn watching(
        &self,
        stream: &StreamId,
        page: u32,
        start_at: Option<&str>,
    ) -> Result<
        impl futures::Stream<Item = Result<WatchingConnection, StoreError>> + Send + use<>,
        StoreError,
    > {
        let (first, then) = match start_at {
            Some(start) => (
                doc! { "stream": stream.as_str(), "_id": { "$gte": start } },
                Some(doc! { "stream": stream.as_str(), "_id": { "$lt": start } }),
            ),
            None => (doc! { "stream": stream.as_str() }, None),
        };
        let first = self.connections_in(first, page).await?;
        let collection = self.collection.clone();
        let then = futures::stream::iter(then)
            .then(move |filter| {
                let store = Self {
                    collection: collection.clone(),
                    ttl: Duration::ZERO,
                };
                async move { store.connections_in(filter, page).await }
            })
            .try_flatten();
        Ok(first.chain(then))
    }

    /// The whole audience of each of `streams` in one read of at most `limit` connections, in
    /// the order of `streams`, each in id order: a wave of small audiences costs one query
    /// instead of one per stream. A stream whose audience did not fit in the read is `None`
    /// (read it with [`ConnectionStore::watching`]). A document without a string id is
    /// [`StoreError::Malformed`] in its stream's list.
    pub async fn audiences(
        &self,
        streams: &[StreamId],
        limit: u32,
    ) -> Result<Vec<Option<Vec<Result<WatchingConnection, StoreError>>>>, StoreError> {
        let ids: Vec<&str> = streams.iter().map(StreamId::as_str).collect();
        let documents: Vec<Document> = self
            .collection
            .find(doc! { "stream": { "$in": &ids } })
            .projection(doc! { "_id": 1, "stream": 1, "connected_at_ms": 1 })
            .sort(doc! { "stream": 1, "_id": 1 })
            .limit(i64::from(limit))
            .batch_size(limit)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        // Read in (stream, id) order: when the read was cut at `limit`, the streams before the
        // last one it reached are whole, and that one and those after it are not.
        let cut_from = (documents.len() >= limit as usize)
            .then(|| documents.last().and_then(|d| d.get_str("stream").ok()))
            .flatten()
            .map(str::to_owned);
        let mut read: std::collections::HashMap<&str, Vec<Result<WatchingConnection, StoreError>>> =
            ids.iter().map(|id| (*id, Vec::new())).collect();
        for document in documents {
            let Some(list) = document
                .get_str("stream")
                .ok()
                .and_then(|s| read.get_mut(s))
            else {
                continue;
            };
            list.push(watching_connection(document));
        }
        Ok(ids
            .iter()
            .map(|id| match &cut_from {
                Some(cut) if *id >= cut.as_str() => None,
                _ => read.remove(id),
            })
            .collect())
    }

    /// How many connections watch `stream` (through the by-stream index): the audience of a
    /// fan-out that stopped reading it at its deadline.
    pub async fn count_watching(&self, stream: &StreamId) -> Result<u64, StoreError> {
        self.collection
            .count_documents(doc! { "stream": stream.as_str() })
            .await
            .map_err(server("count_documents"))
    }

    async fn connections_in(
        &self,
        filter: Document,
        page: u32,
    ) -> Result<
        impl futures::Stream<Item = Result<WatchingConnection, StoreError>> + Send + use<>,
        StoreError,
    > {
        let cursor = self
            .collection
            .find(filter)
            .projection(doc! { "_id": 1, "connected_at_ms": 1 })
            .sort(doc! { "_id": 1 })
            .batch_size(page)
            .await
            .map_err(server("find"))?;
        Ok(cursor.map(|document| watching_connection(document.map_err(server("find"))?)))
    }

    /// The ids of every connection watching `stream`, through the by-stream index, all at once
    /// (for tests and tools; the fan-out reads [`ConnectionStore::watching`]).
    pub async fn ids_watching(&self, stream: &StreamId) -> Result<Vec<String>, StoreError> {
        self.watching(stream, 1_000, None)
            .await?
            .map_ok(|connection| connection.id)
            .try_collect()
            .await
    }
}

/// A connection as a fan-out reads it, or [`StoreError::Malformed`] without a string id.
fn watching_connection(document: Document) -> Result<WatchingConnection, StoreError> {
    let id = document.get_str("_id").map_err(|_| {
        StoreError::Malformed(format!("connection without a string _id: {document}"))
    })?;
    Ok(WatchingConnection {
        id: id.to_owned(),
        connected_at_ms: document.get_i64("connected_at_ms").unwrap_or(0),
    })
}

fn parse_connection(document: &Document) -> Result<StoredConnection, StoreError> {
    let malformed = |what: &str| StoreError::Malformed(format!("{what} in connection {document}"));
    Ok(StoredConnection {
        id: document
            .get_str("_id")
            .map_err(|_| malformed("bad _id"))?
            .to_owned(),
        stream: document
            .get_str("stream")
            .ok()
            .and_then(|s| StreamId::parse("stream", s).ok())
            .ok_or_else(|| malformed("bad stream"))?,
        connected_at_ms: document
            .get_i64("connected_at_ms")
            .map_err(|_| malformed("bad connected_at_ms"))?,
    })
}
