//! The MongoDB adapter: connecting with bounded timeouts, the `windows` collection with its
//! unique (stream, window start) key and retention TTL, the `connections` collection, the
//! `pushes` schedule, the `streams` registry, fair use's `viewer_taps`, the
//! `dead_letter_marks`, the `partition_progress` that `final` and recreated topics are decided
//! from, the `finalize_turns` that keep `final` passes from overlapping, the `moment_detectors` and
//! `moments` of `crate::moments`, and the `settings` that hold the window width. Only operations that MongoDB, Atlas and
//! Amazon DocumentDB all support are used: `update` and `findAndModify` with
//! `$inc`/`$max`/`$set`/`$setOnInsert`, `find`, and indexes.

mod apply;
mod connections;
mod dead_letter_marks;
mod final_windows;
mod finalize_turns;
mod moments;
mod partition_progress;
mod push_slots;
mod replay;
mod streams;
mod update_command;
mod viewer_taps;
mod window_width_claim;

pub use apply::{ApplyReport, WriteTimes};
pub use connections::{ConnectionStore, StoredConnection, SyncClaim, WatchingConnection};
pub use dead_letter_marks::DeadLetterMarks;
pub use finalize_turns::{FinalizeTurn, FinalizeTurns};
pub use moments::{MomentStore, StoredDetector, StoredMoment};
pub use partition_progress::PartitionProgressStore;
pub use push_slots::{
    ActiveStream, Claim, FinishedPush, PushEnd, PushSlots, ScheduleView, SlotLease,
};
pub use replay::ReplayWindows;
pub use streams::{RegistryError, StreamStore};
pub use viewer_taps::ViewerTapStore;
pub use window_width_claim::claim_window_width;

use crate::emoji::EmojiName;
use crate::ids::StreamId;
use crate::message::{VersionedMessage, WindowStateRecord};
use crate::window::{EmojiCounts, WindowKey};
use futures::TryStreamExt;
/// The database handle the stores share, for functions that hold one beside them.
pub use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{Acknowledgment, ClientOptions, IndexOptions};
use mongodb::{Client, Collection, IndexModel};
use std::time::Duration;

/// Errors from the MongoDB adapter.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URI does not parse or names no database.
    #[error("invalid MongoDB configuration: {0}")]
    Config(String),
    /// The server did not answer or refused the operation.
    #[error("MongoDB {operation} failed: {source}")]
    Server {
        operation: &'static str,
        #[source]
        source: mongodb::error::Error,
    },
    /// The server did not answer within the time the caller allows (a hung connection, a
    /// failover in progress): the driver has no socket timeout of its own.
    #[error("MongoDB {operation} did not answer within {after:?}")]
    TimedOut {
        operation: &'static str,
        after: Duration,
    },
    /// The server applied a write but could not confirm it at the write concern asked for (a
    /// majority of the replica set unless the URI sets `w`): it may still be rolled back, so it
    /// counts as failed and the batch is retried.
    #[error("MongoDB could not confirm {operation} as durable (code {code}): {message}")]
    NotDurable {
        operation: String,
        code: i32,
        message: String,
    },
    /// The database's windows were counted with another width (see `claim_window_width`).
    #[error(
        "WINDOW_WIDTH_MS is {configured_ms} but this database's windows were counted with {stored_ms} ms windows; a batch redelivered across the change would be counted twice. Set WINDOW_WIDTH_MS back to {stored_ms}, or point MONGODB_DATABASE at a new database to count with the new width"
    )]
    WidthChanged { stored_ms: i64, configured_ms: i64 },
    /// A write was refused for a reason other than a lost race.
    #[error("MongoDB write failed: {0}")]
    Write(String),
    /// A stored document does not have the expected shape.
    #[error("stored document is malformed: {0}")]
    Malformed(String),
    /// Documents this batch read were written by another delivery since, which did not
    /// account for all this batch decided: the batch fails, to be retried against them.
    #[error(
        "{count} {what} changed since this batch read them (another delivery wrote them first); the batch is retried"
    )]
    Raced { what: &'static str, count: usize },
}

/// Reads from the primary whatever the URI prefers, for reads that must see the writes just
/// made (a slot just taken, the state that asked for a push).
fn primary() -> mongodb::options::SelectionCriteria {
    mongodb::options::SelectionCriteria::ReadPreference(mongodb::options::ReadPreference::Primary)
}

/// A plain index on `keys` named `name`.
fn named_index(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).build())
        .build()
}

/// The TTL index that deletes a document once its `expires_at` has passed.
fn expiry_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "expires_at": 1 })
        .options(
            IndexOptions::builder()
                .expire_after(Duration::ZERO)
                .name("expires_at_ttl".to_owned())
                .build(),
        )
        .build()
}

/// Creates a collection's indexes once per container: at start-up if MongoDB answers, else on
/// the first event that needs them (which then fails, to be retried, while MongoDB is down).
#[derive(Debug, Default)]
pub struct IndexesOnce {
    created: tokio::sync::OnceCell<()>,
    /// A background attempt is running, so another is not started beside it.
    attempting: std::sync::atomic::AtomicBool,
}

impl IndexesOnce {
    /// Runs `create` unless it already succeeded.
    pub async fn ensure<F, Fut>(&self, create: F) -> Result<(), StoreError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        self.created.get_or_try_init(create).await.map(|_| ())
    }

    /// Whether the indexes were created.
    pub fn is_done(&self) -> bool {
        self.created.initialized()
    }

    /// Runs [`IndexesOnce::ensure`] on a task of its own, so an init or an event does not wait
    /// for the MongoDB round trip (an `ensure` meanwhile waits for it); a failure is logged, not
    /// returned. Does nothing once the indexes exist or while an attempt is running, so it may
    /// be called on every event until it succeeds.
    pub fn start_in_background<F, Fut>(self: &std::sync::Arc<Self>, create: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        if self.is_done() || self.attempting.swap(true, Ordering::AcqRel) {
            return;
        }
        let indexes = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            if let Err(error) = indexes.ensure(create).await {
                tracing::warn!(%error, "database not prepared yet; retrying on the next event");
            }
            indexes.attempting.store(false, Ordering::Release);
        });
    }
}

/// Maps a driver error of `operation`. The driver reports a `writeConcernError` of its own
/// write helpers as an error already; it becomes [`StoreError::NotDurable`], as one in a raw
/// command's reply does.
fn server(operation: &'static str) -> impl FnOnce(mongodb::error::Error) -> StoreError {
    move |source| match source.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => StoreError::NotDurable {
            operation: operation.to_owned(),
            code: concern.code,
            message: concern.message.clone(),
        },
        _ => StoreError::Server { operation, source },
    }
}

/// How to reach MongoDB (`MONGODB_URI`, `MONGODB_DATABASE`). Writes use the URI's write
/// concern (`w=`, `journal=`, `wtimeoutMS=`), `w=majority` when it names none, so an
/// acknowledged count survives the loss of the primary, and [`WRITE_CONCERN_TIMEOUT`] when it
/// names no `wtimeoutMS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MongoSettings {
    pub uri: String,
    pub database: String,
}

impl MongoSettings {
    /// Reads `MONGODB_URI` (required) and `MONGODB_DATABASE` (default `emostream`), the same
    /// for every function.
    pub fn from_settings(
        settings: &impl crate::config::Settings,
    ) -> Result<Self, crate::config::ConfigError> {
        Ok(Self {
            uri: crate::config::required(settings, "MONGODB_URI")?,
            database: crate::config::text_or(settings, "MONGODB_DATABASE", "emostream"),
        })
    }
}

/// How long a write waits for its write concern (`wtimeoutMS`) when the URI names none.
pub const WRITE_CONCERN_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds a client without contacting the server: the driver connects on first use. For
/// functions whose main path does not need MongoDB, so a MongoDB outage cannot fail their init.
/// Operations fail within a few seconds when the server does not answer, instead of the driver's
/// default 30 s.
pub async fn open(settings: &MongoSettings, app_name: &str) -> Result<Database, StoreError> {
    let mut options = ClientOptions::parse(&settings.uri)
        .await
        .map_err(|e| StoreError::Config(e.to_string()))?;
    options.app_name = Some(app_name.to_owned());
    let concern = options.write_concern.get_or_insert_with(Default::default);
    if concern.w.is_none() {
        concern.w = Some(Acknowledgment::Majority);
    }
    // A majority write that cannot replicate (a secondary down) fails after this instead of
    // waiting without end: aggregate's batch then fails cleanly and is retried.
    if concern.w_timeout.is_none() {
        concern.w_timeout = Some(WRITE_CONCERN_TIMEOUT);
    }
    options.server_selection_timeout = Some(Duration::from_secs(3));
    options.connect_timeout = Some(Duration::from_secs(3));
    let client = Client::with_options(options).map_err(|e| StoreError::Config(e.to_string()))?;
    Ok(client.database(&settings.database))
}

/// How long a read on a request's path may take: a client gets 503 then, instead of the
/// request hanging until its function's timeout. A little longer than server selection, so a
/// server that is down is reported with the driver's own reason.
pub const REQUEST_READ_LIMIT: Duration = Duration::from_millis(3_500);

/// The same for a write on a request's path (the admin routes): longer than the write concern's
/// own limit ([`WRITE_CONCERN_TIMEOUT`]). A write that times out may still have been applied;
/// the admin routes' writes can be repeated.
pub const REQUEST_WRITE_LIMIT: Duration = Duration::from_secs(6);

/// `work`, failed with [`StoreError::TimedOut`] (as its own error type) if it has not finished
/// within `limit`.
pub async fn within<T, E: From<StoreError>>(
    limit: Duration,
    operation: &'static str,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(E::from(StoreError::TimedOut {
            operation,
            after: limit,
        }))
    })
}

/// Builds a client and checks that the server answers.
pub async fn connect(settings: &MongoSettings, app_name: &str) -> Result<Database, StoreError> {
    let database = open(settings, app_name).await?;
    database
        .run_command(doc! { "ping": 1 })
        .await
        .map_err(server("ping"))?;
    Ok(database)
}

/// A stored integer, whichever width the server kept it in (a value written as an `i64` may
/// come back as an `i32`).
fn integer(value: &Bson) -> Option<i64> {
    match value {
        Bson::Int64(v) => Some(*v),
        Bson::Int32(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// Every document of `collection` matching `filter`, read through one cursor.
/// Every document `filter` matches, read from the primary whatever the URI prefers (a
/// DocumentDB connection string often says `secondaryPreferred`): these reads decide what a
/// batch counts, and a secondary's older state would have it count a retry or a cut reaction
/// again before its conditional write found out.
async fn find_all(
    collection: &Collection<Document>,
    filter: Document,
) -> Result<Vec<Document>, StoreError> {
    collection
        .find(filter)
        .selection_criteria(primary())
        .await
        .map_err(server("find"))?
        .try_collect()
        .await
        .map_err(server("find"))
}

/// True for E11000: two upserts raced to insert the same key and one lost.
pub fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        _ => false,
    }
}

/// Windows read back, oldest first, and how many stored documents were skipped because they
/// do not parse.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowList {
    pub windows: Vec<StoredWindow>,
    pub malformed: usize,
}

/// One window document as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWindow {
    pub key: WindowKey,
    pub end_ms: i64,
    pub counts: EmojiCounts,
    pub total: u64,
    /// No retry can add to the window any more (see `crate::event_time`).
    pub is_final: bool,
}

impl StoredWindow {
    /// The absolute state of this window as of `now_ms`, as published on the output topic and
    /// pushed to browsers: one definition, so a late joiner's snapshot and a live update agree.
    pub fn state_record(&self, domain: &crate::DomainConfig, now_ms: i64) -> WindowStateRecord {
        WindowStateRecord {
            v: WindowStateRecord::VERSION,
            stream: self.key.stream.clone(),
            start_ms: self.key.start_ms,
            end_ms: self.end_ms,
            swarm: domain.swarm_rule.downscale(&self.counts),
            counts: self.counts.clone(),
            total: self.total,
            is_final: self.is_final,
            updated_at_ms: now_ms,
        }
    }
}

/// The `windows` collection: one document per stream and window.
#[derive(Debug, Clone)]
pub struct WindowStore {
    database: Database,
    collection: Collection<Document>,
}

/// Streams whose windows one query of a push wave reads (see
/// [`WindowStore::newest_windows_of`]): an `$or` of a few ranges costs about one range each,
/// and the local stack's server spent a constant 130 ms on one of 256 (2 ms on 16).
pub const STREAMS_PER_WINDOW_READ: usize = 16;

impl WindowStore {
    /// The collection name.
    pub const COLLECTION: &'static str = "windows";

    /// Uses the `windows` collection of `database`.
    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Creates the unique (stream, start) index and the retention TTL index if missing.
    /// Idempotent: run at every start-up.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique_window = IndexModel::builder()
            .keys(doc! { "stream": 1, "start_ms": 1 })
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("stream_start_unique".to_owned())
                    .build(),
            )
            .build();
        self.collection
            .create_indexes([unique_window, expiry_index(), final_windows::open_index()])
            .await
            .map_err(server("create_indexes"))?;
        Ok(())
    }

    fn filter(key: &WindowKey) -> Document {
        doc! { "stream": key.stream.as_str(), "start_ms": key.start_ms }
    }

    /// Reads up to `limit` windows of `stream` in ascending start order: those starting at or
    /// after `since_ms` when given, otherwise the latest ones (what a late joiner needs).
    /// A document that does not parse is skipped and counted, so one bad document never blocks
    /// a reader.
    pub async fn list_windows(
        &self,
        stream: &StreamId,
        since_ms: Option<i64>,
        limit: u32,
    ) -> Result<WindowList, StoreError> {
        let mut filter = doc! { "stream": stream.as_str() };
        let direction = match since_ms {
            Some(since) => {
                filter.insert("start_ms", doc! { "$gte": since });
                1
            }
            None => -1,
        };
        self.query_windows(filter, direction, limit).await
    }

    /// For each `(stream, since_ms)` of `wants`, the newest `limit` windows of the stream that
    /// start at or after `since_ms`, in ascending start order, in the order of `wants`: what a
    /// wave of pushes carries (the newest matter most; the oldest are the first a frame drops).
    /// One read per [`STREAMS_PER_WINDOW_READ`] streams, all at once; only when those streams
    /// together owe more windows than their read returns does each get a read of its own.
    pub async fn newest_windows_of(
        &self,
        wants: &[(StreamId, i64)],
        limit: u32,
    ) -> Result<Vec<WindowList>, StoreError> {
        let reads = wants
            .chunks(STREAMS_PER_WINDOW_READ)
            .map(|some| self.newest_windows_of_some(some, limit));
        let lists = futures::future::try_join_all(reads).await?;
        Ok(lists.into_iter().flatten().collect())
    }

    /// [`WindowStore::newest_windows_of`] for a few streams, in one read: an `$or` of each
    /// stream's own range, which the unique (stream, start) index serves whatever the
    /// collection holds. (One `stream: {$in}` with the oldest start of all was measured to
    /// cost in proportion to the streams' whole history on the local stack's server: 25 ms for
    /// 256 streams at 20,000 stored windows, 65 ms at 60,000.)
    async fn newest_windows_of_some(
        &self,
        wants: &[(StreamId, i64)],
        limit: u32,
    ) -> Result<Vec<WindowList>, StoreError> {
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        let read_at_most = u64::from(limit).saturating_mul(wants.len() as u64);
        let ranges: Vec<Document> = wants
            .iter()
            .map(
                |(stream, since)| doc! { "stream": stream.as_str(), "start_ms": { "$gte": since } },
            )
            .collect();
        let filter = doc! { "$or": ranges };
        let documents = self
            .window_documents(filter, -1, i64::try_from(read_at_most).unwrap_or(i64::MAX))
            .await?;
        if documents.len() as u64 >= read_at_most && wants.len() > 1 {
            // Some windows may be left out: each stream reads its own, all at once.
            return futures::future::try_join_all(wants.iter().map(|(stream, since)| {
                let filter = doc! { "stream": stream.as_str(), "start_ms": { "$gte": since } };
                self.query_windows(filter, -1, limit)
            }))
            .await;
        }
        let place: std::collections::HashMap<&str, usize> = wants
            .iter()
            .enumerate()
            .map(|(i, (stream, _))| (stream.as_str(), i))
            .collect();
        let mut lists = vec![WindowList::default(); wants.len()];
        for document in &documents {
            // Newest first: a stream's first `limit` at or after its own `since` are kept.
            let Some(&at) = document.get_str("stream").ok().and_then(|s| place.get(s)) else {
                continue;
            };
            let list = &mut lists[at];
            match parse_window(document) {
                Ok(window) if window.key.start_ms < wants[at].1 => {}
                Ok(_) if list.windows.len() >= limit as usize => {}
                Ok(window) => list.windows.push(window),
                Err(error) => {
                    tracing::warn!(%error, "skipping a stored window that does not parse");
                    list.malformed += 1;
                }
            }
        }
        for list in &mut lists {
            list.windows.reverse();
        }
        Ok(lists)
    }

    async fn query_windows(
        &self,
        filter: Document,
        direction: i32,
        limit: u32,
    ) -> Result<WindowList, StoreError> {
        let documents = self
            .window_documents(filter, direction, i64::from(limit))
            .await?;
        let mut list = WindowList::default();
        for document in &documents {
            match parse_window(document) {
                Ok(window) => list.windows.push(window),
                Err(error) => {
                    tracing::warn!(%error, "skipping a stored window that does not parse");
                    list.malformed += 1;
                }
            }
        }
        if direction < 0 {
            list.windows.reverse();
        }
        Ok(list)
    }

    async fn window_documents(
        &self,
        filter: Document,
        direction: i32,
        limit: i64,
    ) -> Result<Vec<Document>, StoreError> {
        // From the primary whatever the URI prefers: a push or snapshot must not show a count
        // older than the state that asked for it.
        self.collection
            .find(filter)
            .selection_criteria(primary())
            .sort(doc! { "start_ms": direction })
            .limit(limit)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))
    }

    /// Reads one window, if stored.
    pub async fn find_window(&self, key: &WindowKey) -> Result<Option<StoredWindow>, StoreError> {
        let found = self
            .collection
            .find_one(Self::filter(key))
            .await
            .map_err(server("find_one"))?;
        found.map(|d| parse_window(&d)).transpose()
    }
}

/// The (stream, start) key of a stored window document.
fn window_key(document: &Document) -> Result<WindowKey, StoreError> {
    let malformed = |what: &str| StoreError::Malformed(format!("{what} in {document}"));
    let stream = document
        .get_str("stream")
        .ok()
        .and_then(|s| StreamId::parse("stream", s).ok())
        .ok_or_else(|| malformed("bad stream"))?;
    let start_ms = document
        .get_i64("start_ms")
        .map_err(|_| malformed("bad start_ms"))?;
    Ok(WindowKey { stream, start_ms })
}

fn parse_window(document: &Document) -> Result<StoredWindow, StoreError> {
    let malformed = |what: &str| StoreError::Malformed(format!("{what} in {document}"));
    let key = window_key(document)?;
    let end_ms = document
        .get_i64("end_ms")
        .map_err(|_| malformed("bad end_ms"))?;
    let total = document
        .get_i64("total")
        .map_err(|_| malformed("bad total"))?;
    let mut counts = EmojiCounts::new();
    if let Ok(stored) = document.get_document("counts") {
        for (name, value) in stored {
            let emoji = EmojiName::parse(name).map_err(|_| malformed("bad emoji name"))?;
            let n = value.as_i64().ok_or_else(|| malformed("bad count"))?;
            counts.insert(
                emoji,
                u64::try_from(n).map_err(|_| malformed("negative count"))?,
            );
        }
    }
    Ok(StoredWindow {
        key,
        end_ms,
        counts,
        total: u64::try_from(total).map_err(|_| malformed("negative total"))?,
        is_final: document.get_bool("final").unwrap_or(false),
    })
}
