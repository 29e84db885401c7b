//! Moments against the real Kafka-wire broker and MongoDB-wire server: a scripted spike over a
//! steady baseline makes one moment, proposed while its window counts and confirmed when the
//! window is final, whatever is redelivered, whichever container runs the pass, and after a
//! pass that stopped between writing the moment and moving its stream's detector on.

use emostream_tests::patience::PATIENCE;
use emostream_tests::topic_reader::{read_records, record_count};
use emostream_tests::{servers, unique_name};
use mongodb::bson::{Document, doc};
use rdkafka::Message;
use reactions::kafka::{AckedProducer, OutgoingRecord, TopicSpec, ensure_topics};
use reactions::kafka_event::{RecordPosition, lambda_kafka_event_json, lambda_kafka_record_json};
use reactions::message::{ReactionRecord, VersionedMessage};
use reactions::moments::{Moment, MomentStatus};
use reactions::mongo::{MomentStore, StoredMoment, connect};
use reactions::{EmojiName, MomentRecord, Reaction, StreamId, UserId};
use std::collections::HashMap;

mod common;
use common::*;

/// The default window width (2 s).
const WIDTH: i64 = 2_000;
/// Windows of the baseline before the spike (a minute: past the detector's warm-up).
const BEFORE: i64 = 30;
/// Spike windows, then baseline windows after, in the usual script.
const SPIKE: i64 = 3;
const AFTER: i64 = 8;

/// A container over a new one-partition input topic whose windows are final as soon as they
/// end, with a pass after every batch and no fair-use limit; with the settings, for another.
async fn container() -> (String, HashMap<String, String>, Setup) {
    container_with_lateness("0").await
}

/// [`container`] with the allowed lateness given: windows become final that much after the
/// counted timestamps pass their end, so the detector lags the live windows as on AWS.
async fn container_with_lateness(lateness_ms: &str) -> (String, HashMap<String, String>, Setup) {
    let topic = unique_name("input");
    let database = servers().mongo("moments").database;
    let settings = settings(
        &servers().kafka_brokers,
        &servers().mongodb_uri,
        &database,
        &[
            ("FINALIZE_EVERY_MS", "0"),
            ("ALLOWED_LATENESS_MS", lateness_ms),
            ("INGEST_PRODUCE_TIMEOUT_MS", "0"),
            ("MAX_CLOCK_SKEW_MS", "0"),
            ("MAX_TAPS_PER_VIEWER_PER_WINDOW", "0"),
            ("REACTION_TOPIC", &topic),
        ],
    );
    let setup = build(&settings).await;
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
    };
    ensure_topics(&setup.config.kafka, &[spec], PATIENCE)
        .await
        .unwrap();
    (topic, settings, setup)
}

/// The script: `BEFORE` windows of 40 claps (20 taps/s), `spike` windows of 40 claps and 360
/// fires, `after` windows of 40 claps; one batch per window, ten taps per record, each record
/// stamped by Kafka at its reaction's time.
struct Script {
    topic: String,
    stream: StreamId,
    first_ms: i64,
    spike: i64,
    batches: Vec<Vec<(RecordPosition, Reaction)>>,
}

impl Script {
    /// The usual script: a spike of `SPIKE` windows (none unless `spike`), `AFTER` after.
    fn new(topic: &str, spike: bool) -> Self {
        Self::shaped(topic, if spike { SPIKE } else { 0 }, AFTER)
    }

    fn shaped(topic: &str, spike: i64, after: i64) -> Self {
        let now = reactions::clock::now_ms();
        let windows = BEFORE + spike.max(SPIKE) + after;
        // Ended a little while ago, every window of it.
        let first_ms = now - now.rem_euclid(WIDTH) - (windows + 5) * WIDTH;
        let stream = StreamId::parse("stream", &unique_name("match")).unwrap();
        let mut offset = 0;
        let mut batches = Vec::new();
        for w in 0..windows {
            let spiking = (BEFORE..BEFORE + spike).contains(&w);
            let mut taps = vec![("clap", 4)];
            if spiking {
                taps.push(("fire", 36));
            }
            let mut batch = Vec::new();
            for (emoji, records) in taps {
                for r in 0..records {
                    let position = RecordPosition {
                        topic: topic.to_owned(),
                        partition: 0,
                        offset,
                        generation: 0,
                    };
                    offset += 1;
                    let reaction = Reaction {
                        stream: stream.clone(),
                        user: UserId::parse("user", &format!("viewer-{r}")).unwrap(),
                        emoji: EmojiName::parse(emoji).unwrap(),
                        count: 10,
                        at_ms: first_ms + w * WIDTH + 1 + r,
                        key: None,
                        fair_use_limit: None,
                    };
                    batch.push((position, reaction));
                }
            }
            batches.push(batch);
        }
        Self {
            topic: topic.to_owned(),
            stream,
            first_ms,
            spike,
            batches,
        }
    }

    /// Writes the script to its topic, as ingest would have (each record stamped at its
    /// reaction's time): the partition is then counted to its end only once the last batch is
    /// delivered, and until then its windows become final as the counted timestamps pass them,
    /// one window behind the batch being delivered.
    async fn produce(&self, setup: &Setup) {
        let records: Vec<OutgoingRecord> = self
            .batches
            .iter()
            .flatten()
            .map(|(position, reaction)| {
                assert_eq!(position.partition, 0);
                OutgoingRecord {
                    partition: Some(0),
                    timestamp_ms: Some(reaction.at_ms),
                    ..OutgoingRecord::new(
                        reaction.stream.as_str(),
                        ReactionRecord::from(reaction).encode(),
                    )
                }
            })
            .collect();
        let producer = AckedProducer::new(&setup.config.kafka, PATIENCE).unwrap();
        producer
            .produce_all(&self.topic, &records, PATIENCE)
            .await
            .unwrap();
    }

    fn spike_ms(&self) -> i64 {
        self.first_ms + BEFORE * WIDTH
    }
}

fn event_of(records: &[(RecordPosition, Reaction)]) -> aws_lambda_events::event::kafka::KafkaEvent {
    let json = records
        .iter()
        .map(|(position, reaction)| {
            lambda_kafka_record_json(
                position,
                reaction.at_ms,
                Some(reaction.stream.as_str().as_bytes()),
                Some(&ReactionRecord::from(reaction).encode()),
                &[],
            )
        })
        .collect();
    serde_json::from_value(lambda_kafka_event_json("SelfManagedKafka", "b", json)).unwrap()
}

async fn deliver(setup: &Setup, batch: &[(RecordPosition, Reaction)]) -> aggregate::BatchSummary {
    setup.aggregate.handle(&event_of(batch)).await.unwrap()
}

async fn moments_of(setup: &Setup, stream: &StreamId, withdrawn: bool) -> Vec<StoredMoment> {
    let database = connect(&setup.config.mongo, "moments-test").await.unwrap();
    MomentStore::new(&database)
        .list(stream, withdrawn, 100)
        .await
        .unwrap()
}

/// The moment records on the output topic (every produce has been acknowledged).
async fn moment_records(setup: &Setup) -> Vec<MomentRecord> {
    // Window states and moments share the topic.
    let total = record_count(&setup.config.kafka, &setup.config.output_topic);
    read_records(
        &setup.config.kafka,
        &setup.config.output_topic,
        usize::try_from(total).unwrap(),
        PATIENCE,
    )
    .await
    .iter()
    .filter_map(|m| MomentRecord::decode(m.payload()?).ok())
    .collect()
}

/// The moment the script's spike must make.
fn assert_the_spike(script: &Script, moment: &Moment) {
    let spike = script.spike_ms();
    assert_eq!(moment.detected_from_ms, spike);
    assert_eq!(moment.start_ms, spike - 10_000, "padded 10 s before");
    assert_eq!(
        moment.end_ms,
        spike + script.spike * WIDTH + 5_000,
        "and 5 s after"
    );
    assert_eq!(moment.emoji, "fire");
    assert_eq!(moment.peak_rate, 200.0);
    assert!(moment.ended);
}

#[tokio::test]
async fn a_spike_is_proposed_while_counting_and_confirmed_once_whatever_is_redelivered() {
    let (topic, settings, first) = container().await;
    let script = Script::new(&topic, true);
    script.produce(&first).await;
    let mut proposed = 0;
    for (w, batch) in script.batches.iter().enumerate() {
        let summary = deliver(&first, batch).await;
        let finalized = usize::from(w > 0);
        assert_eq!(
            summary.windows_finalized, finalized,
            "the window before {w} final in its pass"
        );
        proposed += summary.moments_proposed;
        // Redelivered: the spike's batches and their neighbours, to this container and another.
        if (BEFORE - 1..=BEFORE + SPIKE).contains(&(w as i64)) {
            let again = deliver(&first, batch).await;
            assert_eq!((again.taps_applied, again.moments_proposed), (0, 0));
        }
    }
    assert_eq!(proposed, 1, "the spike's first window proposes it, once");
    let second = build(&settings).await;
    for batch in &script.batches[BEFORE as usize - 2..] {
        let again = deliver(&second, batch).await;
        assert_eq!((again.taps_applied, again.moments_proposed), (0, 0));
    }
    second.aggregate.finalize_tick().await.unwrap();
    first.aggregate.finalize_tick().await.unwrap();

    let stored = moments_of(&first, &script.stream, true).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].status, MomentStatus::Confirmed);
    assert_the_spike(&script, &stored[0].moment);

    // Published: the provisional moment, then its changes as the final windows made them
    // (each window's pass once: the redeliveries and the second container published none).
    let published = moment_records(&first).await;
    assert!(published.iter().all(|r| r.stream == script.stream));
    assert_eq!(published[0].status, MomentStatus::Provisional);
    assert_eq!(published[0].moment.detected_from_ms, script.spike_ms());
    let last = published.iter().max_by_key(|r| r.revision).unwrap();
    assert_eq!(last.status, MomentStatus::Confirmed);
    assert_the_spike(&script, &last.moment);
    let ended: Vec<_> = published.iter().filter(|r| r.moment.ended).collect();
    assert_eq!(ended.len(), 1, "the moment ended once: {published:?}");
}

#[tokio::test]
async fn a_pass_stopped_before_moving_the_detector_on_makes_the_same_moment_again() {
    let (topic, _, setup) = container().await;
    let script = Script::new(&topic, true);
    script.produce(&setup).await;
    let database = connect(&setup.config.mongo, "moments-test").await.unwrap();
    let detectors = database.collection::<Document>(MomentStore::DETECTORS);
    let windows = database.collection::<Document>("windows");
    let spike_end = (BEFORE + SPIKE) as usize;
    for batch in &script.batches[..BEFORE as usize] {
        deliver(&setup, batch).await;
    }
    let before_spike = detectors
        .find_one(doc! { "_id": script.stream.as_str() })
        .await
        .unwrap()
        .unwrap();
    for batch in &script.batches[BEFORE as usize..spike_end + 3] {
        deliver(&setup, batch).await;
    }
    // The detector as the pass read it before the spike's windows, and those windows not yet
    // marked final: as if the pass that confirmed the moment stopped right after writing it.
    detectors
        .replace_one(doc! { "_id": script.stream.as_str() }, before_spike.clone())
        .await
        .unwrap();
    let next_start = before_spike.get_i64("rev").unwrap();
    assert!(next_start < script.spike_ms());
    windows
        .update_many(
            doc! { "stream": script.stream.as_str(), "start_ms": { "$gte": next_start } },
            doc! { "$set": { "final": false, "open": true } },
        )
        .await
        .unwrap();
    assert_eq!(moments_of(&setup, &script.stream, true).await.len(), 1);

    // The next pass redoes the spike's windows: the same moment, still one, then it ends.
    for batch in &script.batches[spike_end + 3..] {
        deliver(&setup, batch).await;
    }
    setup.aggregate.finalize_tick().await.unwrap();
    let stored = moments_of(&setup, &script.stream, true).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].status, MomentStatus::Confirmed);
    assert_the_spike(&script, &stored[0].moment);

    // An older change written late (a stale pass) does not undo a newer one.
    let store = MomentStore::new(&database);
    let mut stale = stored[0].moment.clone();
    stale.ended = false;
    stale.end_ms -= WIDTH;
    let times = reactions::mongo::WriteTimes {
        now_ms: reactions::clock::now_ms(),
        retention: setup.config.retention,
    };
    store
        .confirm(
            &script.stream,
            &stale,
            stored[0].revision - WIDTH,
            times.now_ms,
            times,
        )
        .await
        .unwrap();
    let kept = moments_of(&setup, &script.stream, true).await;
    assert_the_spike(&script, &kept[0].moment);
    assert_eq!(kept[0].revision, stored[0].revision);
}

#[tokio::test]
async fn a_provisional_moment_the_final_windows_do_not_make_is_withdrawn() {
    let (topic, _, setup) = container().await;
    let script = Script::new(&topic, false);
    script.produce(&setup).await;
    for batch in &script.batches[..BEFORE as usize] {
        deliver(&setup, batch).await;
    }
    // Proposed from a window still counting (as a container whose detector lagged would),
    // then the window comes in at the baseline.
    let database = connect(&setup.config.mongo, "moments-test").await.unwrap();
    let store = MomentStore::new(&database);
    let phantom = Moment {
        detected_from_ms: script.spike_ms(),
        start_ms: script.spike_ms() - 10_000,
        end_ms: script.spike_ms() + WIDTH + 5_000,
        peak_rate: 90.0,
        emoji: "clap".to_owned(),
        ended: false,
    };
    let times = reactions::mongo::WriteTimes {
        now_ms: reactions::clock::now_ms(),
        retention: setup.config.retention,
    };
    assert!(
        store
            .propose(&script.stream, &phantom, times)
            .await
            .unwrap()
    );
    assert!(
        !store
            .propose(&script.stream, &phantom, times)
            .await
            .unwrap(),
        "proposed once"
    );
    // Its window comes in at the baseline, and is final once the next one is counted.
    for batch in &script.batches[BEFORE as usize..BEFORE as usize + 2] {
        deliver(&setup, batch).await;
    }
    let stored = moments_of(&setup, &script.stream, true).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, MomentStatus::Withdrawn);
    assert!(moments_of(&setup, &script.stream, false).await.is_empty());
    let published = moment_records(&setup).await;
    assert_eq!(published.len(), 1);
    assert_eq!(
        (published[0].status, published[0].moment.detected_from_ms),
        (MomentStatus::Withdrawn, script.spike_ms())
    );
}

#[tokio::test]
async fn a_moment_found_a_window_before_its_provisional_one_keeps_when_it_was_first_seen() {
    let (topic, _, setup) = container().await;
    let script = Script::new(&topic, true);
    script.produce(&setup).await;
    for batch in &script.batches[..BEFORE as usize] {
        deliver(&setup, batch).await;
    }
    // The live windows stood out a window after the spike began (a container whose detector
    // saw the first spike window's taps too late, say), and that moment was shown a while ago.
    let database = connect(&setup.config.mongo, "moments-test").await.unwrap();
    let store = MomentStore::new(&database);
    let later = script.spike_ms() + WIDTH;
    let proposed = Moment {
        detected_from_ms: later,
        start_ms: later - 10_000,
        end_ms: later + WIDTH + 5_000,
        peak_rate: 200.0,
        emoji: "fire".to_owned(),
        ended: false,
    };
    let shown_at = reactions::clock::now_ms() - 3_000;
    let times = reactions::mongo::WriteTimes {
        now_ms: shown_at,
        retention: setup.config.retention,
    };
    assert!(
        store
            .propose(&script.stream, &proposed, times)
            .await
            .unwrap()
    );
    for batch in &script.batches[BEFORE as usize..] {
        deliver(&setup, batch).await;
    }
    let stored = moments_of(&setup, &script.stream, true).await;
    let confirmed: Vec<_> = stored
        .iter()
        .filter(|m| m.status == MomentStatus::Confirmed)
        .collect();
    assert_eq!(confirmed.len(), 1, "{stored:?}");
    assert_the_spike(&script, &confirmed[0].moment);
    assert_eq!(
        confirmed[0].first_seen_ms, shown_at,
        "first seen when the provisional moment standing for it was"
    );
    let replaced = stored
        .iter()
        .find(|m| m.moment.detected_from_ms == later)
        .expect("the provisional moment is kept, withdrawn");
    assert_eq!(replaced.status, MomentStatus::Withdrawn);
}

#[tokio::test]
async fn a_long_celebration_is_proposed_once_though_the_detector_lags_the_live_windows() {
    // Lateness as on AWS: a window is final 5 s after the counted timestamps pass its end, so
    // the detector is two to three windows behind the window a batch proposes from, more than
    // the merge gap.
    let (topic, _, setup) = container_with_lateness("5000").await;
    let script = Script::shaped(&topic, 30, 8);
    script.produce(&setup).await;
    let mut proposed = 0;
    for batch in &script.batches {
        proposed += deliver(&setup, batch).await.moments_proposed;
    }
    setup.aggregate.finalize_tick().await.unwrap();
    assert_eq!(
        proposed, 1,
        "one minute of spike windows proposed one moment"
    );
    let stored = moments_of(&setup, &script.stream, true).await;
    assert_eq!(
        stored.len(),
        1,
        "nothing proposed and withdrawn: {stored:?}"
    );
    assert_eq!(stored[0].status, MomentStatus::Confirmed);
    assert_the_spike(&script, &stored[0].moment);
    // Viewers got it proposed, confirmed and ended: not a change per window it grew by.
    let published = moment_records(&setup).await;
    let statuses: Vec<(MomentStatus, bool)> = published
        .iter()
        .map(|r| (r.status, r.moment.ended))
        .collect();
    assert_eq!(
        statuses,
        [
            (MomentStatus::Provisional, false),
            (MomentStatus::Confirmed, false),
            (MomentStatus::Confirmed, true)
        ]
    );
}

#[tokio::test]
async fn a_stream_that_goes_quiet_in_a_moment_ends_it_and_orphans_are_withdrawn() {
    let (topic, _, setup) = container().await;
    // The spike is the stream's last taps.
    let script = Script::shaped(&topic, SPIKE, 0);
    script.produce(&setup).await;
    for batch in &script.batches[..(BEFORE + SPIKE) as usize] {
        deliver(&setup, batch).await;
    }
    let open = moments_of(&setup, &script.stream, true).await;
    assert_eq!(open.len(), 1);
    assert!(!open[0].moment.ended, "still open: no window came after it");
    // A provisional moment of a stream that took no window since (a proposal that raced the
    // pass that passed it) is withdrawn once its windows are a minute behind.
    let database = connect(&setup.config.mongo, "moments-test").await.unwrap();
    let store = MomentStore::new(&database);
    let quiet = StreamId::parse("stream", &unique_name("quiet")).unwrap();
    let orphan = Moment {
        detected_from_ms: script.first_ms,
        start_ms: script.first_ms - 10_000,
        end_ms: script.first_ms + 7_000,
        peak_rate: 50.0,
        emoji: "clap".into(),
        ended: false,
    };
    let times = reactions::mongo::WriteTimes {
        now_ms: reactions::clock::now_ms(),
        retention: setup.config.retention,
    };
    assert!(store.propose(&quiet, &orphan, times).await.unwrap());
    // No batch comes: the tick moves the quiet stream on (its partition is counted to its end).
    setup.aggregate.finalize_tick().await.unwrap();
    let ended = moments_of(&setup, &script.stream, true).await;
    assert_eq!(ended.len(), 1);
    assert_the_spike(&script, &ended[0].moment);
    let orphaned = moments_of(&setup, &quiet, true).await;
    assert_eq!(orphaned.len(), 1);
    assert_eq!(orphaned[0].status, MomentStatus::Withdrawn);
    let published = moment_records(&setup).await;
    assert!(
        published
            .iter()
            .any(|r| r.stream == quiet && r.status == MomentStatus::Withdrawn),
        "{published:?}"
    );
}
