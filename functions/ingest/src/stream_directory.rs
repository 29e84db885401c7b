//! The container's view of the stream registry: each stream is read from MongoDB at most once
//! per `STREAM_CACHE_TTL_MS`, whether it exists or not, so a steady `POST /reactions` costs no
//! MongoDB round trip and a flood of made-up stream ids costs at most one read per id per
//! period. Concurrent requests for the same id share one read. The price is that a change (a
//! stream going live, a new catalogue) reaches each container within one period.

use reactions::mongo::{REQUEST_READ_LIMIT, StoreError, StreamStore, within};
use reactions::{StreamEntry, StreamId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Where streams are read from: the `streams` collection, or a counting stand-in in unit tests.
pub trait StreamLookup: Send + Sync {
    /// The registered stream, or `None`.
    fn lookup(
        &self,
        id: &StreamId,
    ) -> impl Future<Output = Result<Option<StreamEntry>, StoreError>> + Send;
}

impl StreamLookup for StreamStore {
    async fn lookup(&self, id: &StreamId) -> Result<Option<StreamEntry>, StoreError> {
        within(
            REQUEST_READ_LIMIT,
            "reading the stream registry",
            self.get(id),
        )
        .await
    }
}

/// Most ids held at once. Past it, expired ids are dropped, then everything: a flood of random
/// ids cannot grow a container's memory without bound.
pub const MAX_CACHED_STREAMS: usize = 100_000;

/// One id's cached answer (`None` inside: not registered), filled by the first request that
/// needs it.
#[derive(Debug)]
struct Slot {
    born: Instant,
    answer: OnceCell<Option<Arc<StreamEntry>>>,
}

/// The cache.
#[derive(Debug)]
pub struct StreamDirectory<L> {
    lookup: L,
    ttl: Duration,
    slots: Mutex<HashMap<StreamId, Arc<Slot>>>,
    reads: AtomicU64,
}

impl<L: StreamLookup> StreamDirectory<L> {
    /// A cache over `lookup` whose answers live for `ttl`.
    pub fn new(lookup: L, ttl: Duration) -> Self {
        Self {
            lookup,
            ttl,
            slots: Mutex::new(HashMap::new()),
            reads: AtomicU64::new(0),
        }
    }

    /// How many reads reached the registry since start-up (a metric, and what tests bound).
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn slot(&self, id: &StreamId) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(id).filter(|s| s.born.elapsed() < self.ttl) {
            return Arc::clone(slot);
        }
        if slots.len() >= MAX_CACHED_STREAMS {
            slots.retain(|_, slot| slot.born.elapsed() < self.ttl);
            if slots.len() >= MAX_CACHED_STREAMS {
                slots.clear();
            }
        }
        let slot = Arc::new(Slot {
            born: Instant::now(),
            answer: OnceCell::new(),
        });
        slots.insert(id.clone(), Arc::clone(&slot));
        slot
    }

    /// The stream as the registry held it at most one period ago. A failed read is not cached:
    /// the next request tries again.
    pub async fn get(&self, id: &StreamId) -> Result<Option<Arc<StreamEntry>>, StoreError> {
        let slot = self.slot(id);
        slot.answer
            .get_or_try_init(|| async {
                self.reads.fetch_add(1, Ordering::Relaxed);
                Ok(self.lookup.lookup(id).await?.map(Arc::new))
            })
            .await
            .cloned()
    }

    /// Forgets `id`, so this container's next request reads it again (after an admin change
    /// made through this container).
    pub fn forget(&self, id: &StreamId) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactions::{EmojiCatalogue, StreamStatus};
    use std::sync::atomic::AtomicBool;

    /// Knows one stream, counts nothing itself (the directory counts), and can be made to fail.
    struct OneStream {
        failing: AtomicBool,
    }

    impl StreamLookup for OneStream {
        async fn lookup(&self, id: &StreamId) -> Result<Option<StreamEntry>, StoreError> {
            tokio::task::yield_now().await;
            if self.failing.load(Ordering::Relaxed) {
                return Err(StoreError::Write("down".into()));
            }
            Ok((id.as_str() == "known").then(|| StreamEntry {
                id: id.clone(),
                title: "Known".into(),
                status: StreamStatus::Live,
                catalogue: EmojiCatalogue::default(),
                created_ms: 0,
                updated_ms: 0,
                started_ms: None,
                ended_ms: None,
                reactions_paused: false,
                fair_use_limit: None,
            }))
        }
    }

    fn id(text: &str) -> StreamId {
        StreamId::parse("id", text).unwrap()
    }

    fn directory(ttl: Duration) -> StreamDirectory<OneStream> {
        StreamDirectory::new(
            OneStream {
                failing: AtomicBool::new(false),
            },
            ttl,
        )
    }

    #[tokio::test]
    async fn known_and_unknown_ids_are_read_once_per_period() {
        let directory = directory(Duration::from_secs(3_600));
        for _ in 0..100 {
            assert!(directory.get(&id("known")).await.unwrap().is_some());
            assert!(directory.get(&id("unknown")).await.unwrap().is_none());
        }
        assert_eq!(directory.reads(), 2);
        directory.forget(&id("known"));
        directory.get(&id("known")).await.unwrap();
        assert_eq!(directory.reads(), 3);
    }

    #[tokio::test]
    async fn concurrent_requests_for_one_id_share_a_read() {
        let directory = Arc::new(directory(Duration::from_secs(3_600)));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let directory = Arc::clone(&directory);
                tokio::spawn(async move { directory.get(&id("ghost")).await.unwrap() })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_none());
        }
        assert_eq!(directory.reads(), 1);
    }

    #[tokio::test]
    async fn answers_expire_and_failures_are_not_cached() {
        let directory = directory(Duration::ZERO);
        directory.get(&id("known")).await.unwrap();
        directory.get(&id("known")).await.unwrap();
        assert_eq!(directory.reads(), 2, "a zero period caches nothing");

        let directory = self::directory(Duration::from_secs(3_600));
        directory.lookup.failing.store(true, Ordering::Relaxed);
        assert!(directory.get(&id("known")).await.is_err());
        directory.lookup.failing.store(false, Ordering::Relaxed);
        assert!(directory.get(&id("known")).await.unwrap().is_some());
    }
}
