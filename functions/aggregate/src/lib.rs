//! The aggregate function: triggered by Kafka event source mappings on `emoji-reaction-topic`
//! (MSK `aws:kafka` and `SelfManagedKafka` events alike). For each batch it dead-letters what
//! cannot be counted, applies the rest to MongoDB exactly once, and re-publishes the absolute
//! state of every window the batch touched to `emoji-output-topic`. Any failure returns an
//! error so the event source retries the batch; retries never change a count. Once no retry
//! can add to a window any more, it publishes the window `final` (after a batch, or on the
//! scheduled tick).

pub mod batch;
pub mod config;
pub mod dead_letters;
mod finalize;
pub mod invocation;
pub mod known_progress;
mod moments;
pub mod progress;

use aws_lambda_events::event::kafka::KafkaEvent;
use batch::{AtMsRange, PreparedBatch, prepare_batch, take_expired};
use config::AggregateConfig;
use reactions::clock::{elapsed_ms, now_ms};
use reactions::event_time::timestamp_ceiling;
use reactions::fair_use::cap_batch;
use reactions::idempotency::skip_retries;
use reactions::kafka::{KafkaAdapterError, OutgoingRecord, RenewingProducer};
use reactions::message::{VersionedMessage, WindowStateRecord};
use reactions::metrics::MetricsLine;
use reactions::mongo::{
    DeadLetterMarks, FinalizeTurns, IndexesOnce, MomentStore, StoreError, StoredWindow,
    ViewerTapStore, WindowStore, WriteTimes,
};
use reactions::viewer_state::{self, viewer_state_ids};
use reactions::window_delta::window_deltas;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::{Duration, Instant};

/// Why a topic's partition count could not be had, for errors that name the topic.
const UNKNOWN_TOPIC: &str =
    "the cluster does not know the topic (it does not exist, or no broker answered)";

/// Why a batch failed (and will be retried by the event source).
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{what}: {source}")]
    Kafka {
        what: &'static str,
        #[source]
        source: KafkaAdapterError,
    },
    #[error(transparent)]
    Config(#[from] reactions::ConfigError),
    /// The dead-letter topic is missing or refuses records: the batch cannot move on without
    /// losing them, so it fails and its partition waits (the `DeadLetterFailures` alarm).
    #[error(
        "cannot dead-letter {records} records to topic `{topic}`: {reason}. The batch is retried and its partition stays blocked until the topic exists and accepts records (DEAD_LETTER_TOPIC)"
    )]
    DeadLetterTopic {
        topic: String,
        records: usize,
        reason: String,
    },
    /// Whether windows became final could not be decided (logged; the batch still succeeds).
    #[error("cannot decide which windows are final from topic `{topic}`: {reason}")]
    Finalize { topic: String, reason: String },
    /// The invocation was about to run into Lambda's timeout (a MongoDB or Kafka step that does
    /// not answer): it fails on its own first, so the container stays warm, the error says
    /// why, and the event source's retry is clean (what was written is protected by offsets).
    #[error(
        "the invocation stopped {margin_ms} ms before its Lambda timeout, its work unfinished; the batch is retried"
    )]
    OutOfTime { margin_ms: u64 },
}

/// How long before Lambda's deadline an invocation gives up ([`AggregateError::OutOfTime`]).
pub const STOP_BEFORE_DEADLINE: Duration = Duration::from_secs(2);

/// How long before an invocation gives up a `final` pass after a batch is given up, so the
/// batch, whose counts are written, still succeeds.
const PASS_STOP_MARGIN: Duration = Duration::from_millis(500);

/// What one batch did; also the invocation's response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    pub records: usize,
    pub reactions: usize,
    /// Records that cannot be counted, found in this batch.
    pub dead_lettered: usize,
    /// Of those, the ones an earlier delivery of the batch already produced (not sent again).
    pub dead_letters_already_sent: usize,
    pub windows: usize,
    pub taps_applied: u64,
    pub replays_skipped: usize,
    /// Reactions not counted because their windows had expired (ended more than
    /// `WINDOW_RETENTION_HOURS` ago): never created again with part of their count.
    pub expired_skipped: usize,
    pub states_published: usize,
    /// Round trips to MongoDB in a row: writing and reading the windows (more after a conflict).
    pub mongo_round_trips: usize,
    /// Taps beyond a viewer's fair-use limit, not counted.
    pub taps_over_limit: u64,
    /// Taps of retried requests that an earlier attempt delivered, not counted again (see
    /// `reactions::idempotency`).
    pub retried_taps: u64,
    /// Viewer state statements written: fair use's counts and idempotency keys (one per viewer,
    /// stream and partition the batch touched afresh).
    pub viewer_state_statements: usize,
    /// Windows this batch's pass found final and published as such.
    pub windows_finalized: usize,
    /// Records stamped ahead of the clock by more than `MAX_CLOCK_SKEW_MS`, whose timestamps
    /// the partitions' progress caps (see `reactions::event_time::timestamp_ceiling`).
    pub timestamps_capped: usize,
    /// Provisional moments this batch's windows proposed (see `moments`).
    pub moments_proposed: usize,
}

/// What a container does once before its first write: the indexes, and the claim on the
/// database's window width (a changed `WINDOW_WIDTH_MS` is refused here, so no batch is
/// counted with two widths).
struct DatabasePreparation {
    database: reactions::mongo::Database,
    width: reactions::WindowWidth,
}

impl DatabasePreparation {
    async fn run(self) -> Result<(), StoreError> {
        WindowStore::new(&self.database).ensure_indexes().await?;
        ViewerTapStore::new(&self.database).ensure_indexes().await?;
        MomentStore::new(&self.database).ensure_indexes().await?;
        reactions::mongo::claim_window_width(&self.database, self.width).await
    }
}

/// The function's long-lived state, built once per container.
pub struct Aggregate {
    config: AggregateConfig,
    store: WindowStore,
    viewer_states: ViewerTapStore,
    dead_letter_marks: DeadLetterMarks,
    /// Streams' moment detectors and their moments (see `moments`).
    moments: MomentStore,
    /// Detectors as recently read for proposing moments (see `moments`).
    detector_cache: moments::DetectorCache,
    progress: known_progress::KnownProgress,
    /// Which container's `final` pass runs now (see `finalize`).
    finalize_turns: FinalizeTurns,
    database: reactions::mongo::Database,
    producer: RenewingProducer,
    indexes: Arc<IndexesOnce>,
    /// When this container last looked for windows that became final (see `finalize`).
    last_finalize_ms: AtomicI64,
}

impl Aggregate {
    /// Builds the clients and starts, in the background, creating the indexes and warming the
    /// producer up, so the init waits for no server. The event that Lambda delivers right
    /// after init is fetched meanwhile, and its first write waits for the index creation still
    /// in flight (the unique `(stream, start_ms)` index must exist before any window is
    /// inserted). MongoDB being down does not fail the init: the first batch retries the
    /// indexes and fails (to be retried) if still down.
    pub async fn new(config: AggregateConfig) -> Result<Self, AggregateError> {
        let database = reactions::mongo::open(&config.mongo, "emostream-aggregate").await?;
        let producer = RenewingProducer::new(&config.kafka, config.produce_timeout, Duration::ZERO)
            .map_err(|source| AggregateError::Kafka {
                what: "building the producer",
                source,
            })?
            .warming_up_on(&config.output_topic);
        let aggregate = Self {
            store: WindowStore::new(&database),
            viewer_states: ViewerTapStore::new(&database),
            dead_letter_marks: DeadLetterMarks::new(&database),
            moments: MomentStore::new(&database),
            detector_cache: Default::default(),
            progress: known_progress::KnownProgress::new(&database),
            finalize_turns: FinalizeTurns::new(&database),
            database,
            producer,
            config,
            indexes: Arc::default(),
            last_finalize_ms: AtomicI64::new(i64::MIN),
        };
        let prepare = aggregate.database_preparation();
        aggregate.indexes.start_in_background(move || prepare.run());
        aggregate.producer.start_warm_up();
        Ok(aggregate)
    }

    fn database_preparation(&self) -> DatabasePreparation {
        DatabasePreparation {
            database: self.database.clone(),
            width: self.config.domain.window_width,
        }
    }

    /// Waits for the database to be prepared (once per container; see [`DatabasePreparation`]).
    /// The preparation is built only when it still has to run, not on every batch.
    async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.indexes
            .ensure(|| self.database_preparation().run())
            .await
    }

    /// The absolute state record of a stored window, as of `now_ms`.
    pub fn state_record(&self, window: &StoredWindow, now_ms: i64) -> WindowStateRecord {
        window.state_record(&self.config.domain, now_ms)
    }

    /// The records that publish `windows`' states on the output topic, keyed by stream (after a
    /// batch, and when windows become final).
    fn state_records(&self, windows: &[StoredWindow], now_ms: i64) -> Vec<OutgoingRecord> {
        windows
            .iter()
            .map(|w| {
                OutgoingRecord::new(w.key.stream.as_str(), self.state_record(w, now_ms).encode())
            })
            .collect()
    }

    async fn produce(
        &self,
        topic: &str,
        records: &[OutgoingRecord],
        what: &'static str,
    ) -> Result<(), AggregateError> {
        if records.is_empty() {
            return Ok(());
        }
        self.producer
            .produce_all(
                &self.producer.current(),
                topic,
                records,
                self.config.produce_timeout,
            )
            .await
            .map(|_| ())
            .map_err(|source| AggregateError::Kafka { what, source })
    }

    /// Produces the dead letters an earlier delivery of the batch did not, then marks them
    /// sent. Returns how many were already sent.
    async fn dead_letter(&self, found: &[batch::DeadLetter]) -> Result<usize, AggregateError> {
        if found.is_empty() {
            return Ok(0);
        }
        let marks = self
            .dead_letter_marks
            .read(&dead_letters::partitions(found))
            .await?;
        let (letters, highest) = dead_letters::unsent(found, &marks);
        if letters.is_empty() {
            return Ok(found.len());
        }
        let topic = &self.config.dead_letter_topic;
        let refused = |reason: String| {
            MetricsLine::new("aggregate")
                .count("DeadLetterFailures", 1)
                .emit();
            AggregateError::DeadLetterTopic {
                topic: topic.clone(),
                records: letters.len(),
                reason,
            }
        };
        // A missing topic would hold each record for the whole produce timeout before failing
        // with a less helpful error; the partition count is cached once the topic is found.
        let producer = self.producer.current();
        if producer
            .partition_count(topic, self.config.produce_timeout)
            .await
            .is_none()
        {
            return Err(refused(UNKNOWN_TOPIC.into()));
        }
        let records: Vec<OutgoingRecord> = letters.iter().map(|d| d.to_record()).collect();
        self.producer
            .produce_all(&producer, topic, &records, self.config.produce_timeout)
            .await
            .map_err(|error| refused(error.to_string()))?;
        self.dead_letter_marks.advance(&highest).await?;
        Ok(found.len() - letters.len())
    }

    /// Publishes the windows that became final, if a pass is due. A failure is logged and
    /// counted (`FinalizeFailures`), not returned: the batch's counts are written.
    /// A pass still running at `stop` (its partitions' ends slow to come) is given up the same
    /// way, so it cannot fail the batch.
    async fn finalize_after(
        &self,
        batch: &known_progress::BatchProgress,
        stop: Option<Instant>,
    ) -> usize {
        let Some(topic) = batch.counted.first().map(|p| p.topic.clone()) else {
            return 0;
        };
        let pass = self.finalize_if_due(&topic);
        // Ahead of the invocation's own stop, which would fail the batch.
        let outcome = match stop.map(|stop| stop.checked_sub(PASS_STOP_MARGIN).unwrap_or(stop)) {
            Some(stop) => match tokio::time::timeout_at(stop.into(), pass).await {
                Ok(outcome) => outcome,
                Err(_) => Err(AggregateError::Finalize {
                    topic: topic.clone(),
                    reason: "the pass was still running when the invocation's time ran out".into(),
                }),
            },
            None => pass.await,
        };
        match outcome {
            Ok(finalized) => finalized,
            Err(error) => {
                finalize::failed(&error);
                0
            }
        }
    }

    /// Handles one invocation, a batch or the scheduled finalize tick, and fails it
    /// [`STOP_BEFORE_DEADLINE`] before Lambda's `deadline` if it has not finished: no MongoDB or
    /// Kafka step can hold it until Lambda kills the process. A `final` pass starts only with
    /// time left for it (see [`Aggregate::handle_before`]).
    pub async fn invoke(
        &self,
        invocation: &invocation::Invocation,
        deadline: Instant,
    ) -> Result<invocation::Response, AggregateError> {
        let stop = deadline
            .checked_sub(STOP_BEFORE_DEADLINE)
            .unwrap_or(deadline);
        let work = async {
            match invocation {
                invocation::Invocation::Batch(event) => self
                    .handle_before(event, Some(stop))
                    .await
                    .map(invocation::Response::Batch),
                invocation::Invocation::Tick(_) => self
                    .finalize_tick_before(Some(stop))
                    .await
                    .map(invocation::Response::Tick),
            }
        };
        match tokio::time::timeout_at(stop.into(), work).await {
            Ok(outcome) => outcome,
            Err(_) => {
                MetricsLine::new("aggregate")
                    .count("InvocationsOutOfTime", 1)
                    .emit();
                Err(AggregateError::OutOfTime {
                    margin_ms: u64::try_from(STOP_BEFORE_DEADLINE.as_millis()).unwrap_or(0),
                })
            }
        }
    }

    /// How far before a viewer's newest window fair use keeps counting its windows: the latest
    /// a new record's `at_ms` can be (the allowed lateness and clock skew), and a window.
    fn fair_use_horizon_ms(&self) -> i64 {
        self.config
            .allowed_lateness_ms
            .saturating_add(self.config.max_clock_skew_ms)
            .saturating_add(self.config.domain.window_width.millis())
    }

    /// Whether a `final` pass started now could finish before `stop`: it may hold its turn
    /// for as long as its lease (see `finalize`), so it needs that much.
    pub(crate) fn time_for_a_pass(&self, stop: Option<Instant>) -> bool {
        stop.is_none_or(|stop| stop.saturating_duration_since(Instant::now()) >= self.turn_lease())
    }

    /// Handles one batch. Order matters for "nothing lost": dead letters first, then the
    /// counts, then the states and the partitions' progress (which `final` and a recreated
    /// topic are judged by); an error anywhere fails the batch and the retry redoes each step,
    /// with the counts protected by their offsets. A `final` pass follows when one is due.
    pub async fn handle(&self, event: &KafkaEvent) -> Result<BatchSummary, AggregateError> {
        self.handle_before(event, None).await
    }

    /// [`Aggregate::handle`], with the `final` pass left to a later batch or tick when less time
    /// than a pass may take is left before `stop`: the counts are written, and a pass cut short
    /// by Lambda's timeout would fail a batch that succeeded.
    pub async fn handle_before(
        &self,
        event: &KafkaEvent,
        stop: Option<Instant>,
    ) -> Result<BatchSummary, AggregateError> {
        let started = Instant::now();
        self.ensure_indexes().await?;
        let range = AtMsRange {
            lateness_ms: self.config.allowed_lateness_ms,
            skew_ms: self.config.max_clock_skew_ms,
        };
        let mut batch = prepare_batch(event, range);
        let now = now_ms();
        let times = WriteTimes {
            now_ms: now,
            retention: self.config.retention,
        };
        let width = self.config.domain.window_width;
        let expired = take_expired(&mut batch.reactions, width, self.config.retention, now);
        if expired > 0 {
            tracing::warn!(
                expired,
                retention_hours = self.config.retention.as_secs() / 3_600,
                "reactions to windows past their retention skipped: their windows are not created again"
            );
        }
        let write_started = Instant::now();
        // The partitions' progress, and the viewers' stored states (fair use's counts and their
        // idempotency keys), read at once. Retries are taken out and the rest capped against
        // the states, the windows written, then the states (the order that makes a redelivery
        // exact; see `reactions::viewer_state`).
        let limit = self.config.max_taps_per_viewer;
        let ids = viewer_state_ids(
            batch
                .reactions
                .iter()
                .map(|(_, r)| r)
                .filter(|r| limit > 0 || r.key.is_some() || r.fair_use_limit.is_some()),
        );
        let ceiling = timestamp_ceiling(now, self.config.max_clock_skew_ms);
        let (progress, stored) = tokio::join!(
            self.progress.of_batch(&batch.record_times, ceiling),
            self.viewer_states.read(&ids)
        );
        let (progress, stored) = (progress?, stored?);
        for (before, now) in &progress.restarted {
            tracing::warn!(
                topic = %now.topic,
                partition = now.partition,
                generation = now.generation,
                counted_offset = before.offset,
                "the partition's offsets restarted below what was counted, with later timestamps: the topic was recreated; counting its records afresh"
            );
        }
        if progress.capped > 0 {
            tracing::warn!(
                records = progress.capped,
                max_clock_skew_ms = self.config.max_clock_skew_ms,
                "records stamped ahead of the clock by more than the allowed skew: their timestamps are capped at it in the partitions' progress"
            );
        }
        progress::assign_generations(&mut batch, &progress.counted);
        let PreparedBatch {
            records,
            reactions,
            mut dead_letters,
            record_times,
        } = batch;
        let reaction_count = reactions.len();
        let deduplicated = skip_retries(reactions, &stored);
        dead_letters.extend(
            deduplicated
                .reused
                .iter()
                .map(|(position, reaction)| batch::DeadLetter::key_reused(position, reaction)),
        );
        for dead in &dead_letters {
            tracing::warn!(
                topic = %dead.position.topic,
                partition = dead.position.partition,
                offset = dead.position.offset,
                reason = dead.reason,
                "dead-lettering record: {}",
                dead.error
            );
        }
        let dead_letters_already_sent = self.dead_letter(&dead_letters).await?;
        let capped = cap_batch(
            deduplicated.reactions,
            width,
            limit,
            self.fair_use_horizon_ms(),
            &stored,
        );
        let state_writes = viewer_state::writes(&stored, deduplicated.changes, capped.changes);
        let deltas = window_deltas(capped.reactions.iter().map(|(p, r)| (p, r)), width);
        let (report, windows) = self.store.apply_and_read(&deltas, width, times).await?;
        let state_statements = match self.viewer_states.write(&state_writes, times).await {
            Err(raced @ StoreError::Raced { .. }) => {
                MetricsLine::new("aggregate")
                    .count("ViewerStateRaces", 1)
                    .emit();
                return Err(raced.into());
            }
            written => written?,
        };
        // The reads go out together; `write` skips the round trip when it has nothing to do.
        let state_round_trips = usize::from(!ids.is_empty() || !record_times.is_empty())
            + usize::from(state_statements > 0);
        let write_ms = elapsed_ms(write_started);

        let states = self.state_records(&windows, now);
        // The progress is recorded while the states go out: it says what is counted, which the
        // windows already hold. A failed publish fails the batch all the same.
        let publish_started = Instant::now();
        let (published, recorded, moments_proposed) = tokio::join!(
            self.produce(
                &self.config.output_topic,
                &states,
                "publishing window states",
            ),
            self.progress.advance(&progress, now),
            self.propose_moments(&windows, times)
        );
        published?;
        recorded?;
        let publish_ms = elapsed_ms(publish_started);
        let windows_finalized = if self.time_for_a_pass(stop) {
            self.finalize_after(&progress, stop).await
        } else {
            tracing::warn!(
                "no final pass after this batch: too little of the invocation's time is left; a later batch or the tick runs it"
            );
            0
        };

        let summary = BatchSummary {
            records,
            reactions: reaction_count,
            dead_lettered: dead_letters.len(),
            dead_letters_already_sent,
            windows: deltas.len(),
            taps_applied: report.taps_applied,
            replays_skipped: report.replays_skipped,
            expired_skipped: expired,
            states_published: states.len(),
            mongo_round_trips: report.round_trips + state_round_trips,
            taps_over_limit: capped.taps_over_limit,
            retried_taps: deduplicated.retried_taps,
            viewer_state_statements: state_statements,
            windows_finalized,
            timestamps_capped: progress.capped,
            moments_proposed,
        };
        tracing::info!(
            records,
            reactions = summary.reactions,
            dead_lettered = summary.dead_lettered,
            windows = summary.windows,
            conflicts = report.conflicts,
            replays_skipped = report.replays_skipped,
            taps_applied = report.taps_applied,
            mongo_round_trips = summary.mongo_round_trips,
            window_statements = report.windows,
            viewer_state_statements = state_statements,
            taps_over_limit = summary.taps_over_limit,
            retried_taps = summary.retried_taps,
            windows_finalized,
            mongo_ms = write_ms,
            publish_ms,
            batch_ms = elapsed_ms(started),
            "batch applied"
        );
        MetricsLine::new("aggregate")
            .count("Records", records as u64)
            .count("DeadLettered", summary.dead_lettered as u64)
            .count("Windows", summary.windows as u64)
            .count("TapsApplied", report.taps_applied)
            .count("Conflicts", report.conflicts as u64)
            .count("ReplaysSkipped", report.replays_skipped as u64)
            .count("ExpiredSkipped", expired as u64)
            .count("MongoRoundTrips", summary.mongo_round_trips as u64)
            .count("ViewerStateStatements", state_statements as u64)
            .count("TapsOverLimit", summary.taps_over_limit)
            .count("RetriedTaps", summary.retried_taps)
            .count("WindowsFinalized", windows_finalized as u64)
            .count("TimestampsCapped", progress.capped as u64)
            .count("MomentsProposed", moments_proposed as u64)
            .millis("MongoLatency", write_ms)
            .millis("PublishLatency", publish_ms)
            .millis("BatchLatency", elapsed_ms(started))
            .emit();
        Ok(summary)
    }
}
