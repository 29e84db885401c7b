//! The Kafka adapter against a real Kafka-wire broker: topics with several partitions, keyed
//! records acknowledged and read back in per-key order, and a clear error when the broker is down.

use emostream_tests::patience::{PATIENCE, assert_bounded, eventually};
use emostream_tests::topic_admin::add_partitions;
use emostream_tests::{closed_port, servers, unique_name};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use reactions::kafka::{
    AckedProducer, KafkaAdapterError, KafkaSettings, OutgoingRecord, RenewingProducer, TopicSpec,
    ensure_topics, ensure_topics_with, is_unknown_partition,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// Creates a topic with a fresh name and three partitions, and returns its spec.
async fn new_topic(settings: &KafkaSettings, prefix: &str) -> TopicSpec {
    let spec = TopicSpec {
        name: unique_name(prefix),
        partitions: 3,
    };
    ensure_topics(settings, std::slice::from_ref(&spec), PATIENCE)
        .await
        .unwrap();
    spec
}

#[tokio::test]
async fn keyed_records_land_on_one_partition_per_key_in_order() {
    let settings = servers().kafka("kafka-adapter-test");
    let spec = new_topic(&settings, "adapter-keyed").await;
    let topic = spec.name.clone();
    // A second call finds the topic and succeeds: start-up may run it every time.
    ensure_topics(&settings, std::slice::from_ref(&spec), PATIENCE)
        .await
        .unwrap();

    let producer = AckedProducer::new(&settings, PATIENCE).unwrap();
    let keys = ["match-a", "match-b", "match-c", "match-d", "match-e"];
    let records: Vec<OutgoingRecord> = (0..50)
        .map(|i| {
            let key = keys[i % keys.len()];
            let mut record = OutgoingRecord::new(key, format!("{key}:{i}"));
            record
                .headers
                .push(("seq".into(), i.to_string().into_bytes()));
            record
        })
        .collect();
    let delivered = producer
        .produce_all(&topic, &records, PATIENCE)
        .await
        .unwrap();
    assert_eq!(delivered.len(), records.len());

    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", unique_name("adapter-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer.fetch_metadata(Some(&topic), PATIENCE).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 3);
    consumer.subscribe(&[&topic]).unwrap();

    let mut by_key: BTreeMap<String, Vec<(i32, usize)>> = BTreeMap::new();
    let mut received = 0;
    while received < records.len() {
        let message = tokio::time::timeout(PATIENCE, consumer.recv())
            .await
            .expect("all records arrive")
            .unwrap();
        let key = String::from_utf8(message.key().unwrap().to_vec()).unwrap();
        let header = message.headers().unwrap().get(0);
        assert_eq!(header.key, "seq");
        let value = std::str::from_utf8(message.payload().unwrap()).unwrap();
        let (value_key, sequence) = value.split_once(':').unwrap();
        assert_eq!(header.value.unwrap(), sequence.as_bytes());
        assert_eq!(value_key, key);
        by_key
            .entry(key)
            .or_default()
            .push((message.partition(), sequence.parse().unwrap()));
        received += 1;
    }
    assert_eq!(by_key.len(), keys.len());
    let mut partitions_used = std::collections::BTreeSet::new();
    for (key, seen) in &by_key {
        let partition = seen[0].0;
        assert!(
            seen.iter().all(|(p, _)| *p == partition),
            "{key} moved partitions"
        );
        let sequence: Vec<usize> = seen.iter().map(|(_, s)| *s).collect();
        let mut sorted = sequence.clone();
        sorted.sort_unstable();
        assert_eq!(sequence, sorted, "{key} out of order");
        assert_eq!(sequence.len(), 10);
        partitions_used.insert(partition);
    }
    assert!(partitions_used.len() > 1, "keys spread over partitions");
    // The acknowledged positions agree with what was read.
    for (record, delivery) in records.iter().zip(&delivered) {
        let key = std::str::from_utf8(&record.key).unwrap();
        assert_eq!(by_key[key][0].0, delivery.partition);
    }
}

/// The local stack bounds its topics by size (the local broker's cost grows with what it holds):
/// the settings reach the broker, and the broker deletes the oldest records past the bound.
#[tokio::test]
async fn a_topic_created_with_a_size_bound_keeps_only_its_newest_records() {
    let settings = servers().kafka("kafka-retention-test");
    let spec = TopicSpec {
        name: unique_name("adapter-retention"),
        partitions: 1,
    };
    let bound = [("retention.bytes", "262144"), ("segment.bytes", "65536")];
    ensure_topics_with(&settings, std::slice::from_ref(&spec), &bound, PATIENCE)
        .await
        .unwrap();

    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        settings.client_config().create().unwrap();
    let described = admin
        .describe_configs(
            &[rdkafka::admin::ResourceSpecifier::Topic(&spec.name)],
            &rdkafka::admin::AdminOptions::new().request_timeout(Some(PATIENCE)),
        )
        .await
        .unwrap();
    let config = described.into_iter().next().unwrap().unwrap();
    for (key, value) in bound {
        let entry = config
            .get(key)
            .unwrap_or_else(|| panic!("{key} not described"));
        assert_eq!(entry.value.as_deref(), Some(value), "{key}");
    }

    // Records of 1 KB, 64 at a time: a segment rolls only between produce requests, and a
    // broker may check its retention when records arrive, so production goes on, round after
    // round, until the oldest records are gone and what is kept is near the bound.
    let producer = AckedProducer::new(&settings, PATIENCE).unwrap();
    let rounds = std::sync::atomic::AtomicI64::new(0);
    let (low, high) = eventually("the oldest records deleted past the bound", || {
        let producer = producer.clone();
        let topic = spec.name.clone();
        let rounds = &rounds;
        async move {
            // At most 4 MB in all (sixteen times the bound), so a broker that ignores the bound
            // fails the test without filling up the broker the other tests share.
            let round = rounds.load(std::sync::atomic::Ordering::Relaxed);
            if round < 64 {
                let records: Vec<OutgoingRecord> = (0..64)
                    .map(|i| OutgoingRecord::new(format!("k{round}-{i}"), vec![b'r'; 1024]))
                    .collect();
                producer
                    .produce_all(&topic, &records, PATIENCE)
                    .await
                    .map_err(|e| e.to_string())?;
                rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let ends = producer
                .log_ends(&topic, &[0], PATIENCE)
                .await
                .map_err(|e| e.to_string())?;
            let (_, low, high) = ends[0];
            // About the bound and one segment is 320 records of 1 KB; twice that leaves room
            // for the broker's per-record overhead and the records of one retention check.
            match low > 0 && high - low <= 640 {
                true => Ok((low, high)),
                false => Err(format!("offsets {low}..{high}")),
            }
        }
    })
    .await;
    // Nothing new is lost: the newest record is still there to read, and the bound is not
    // taken for "delete everything".
    assert!(high - low >= 128, "kept only {} records", high - low);
    let consumer: StreamConsumer = settings
        .client_config()
        .set("group.id", unique_name("retention-group"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut newest = rdkafka::TopicPartitionList::new();
    newest
        .add_partition_offset(&spec.name, 0, rdkafka::Offset::Offset(high - 1))
        .unwrap();
    consumer.assign(&newest).unwrap();
    let message = tokio::time::timeout(PATIENCE, consumer.recv())
        .await
        .expect("the newest record is read")
        .unwrap();
    assert_eq!(message.offset(), high - 1);
    assert_eq!(message.payload().map(<[u8]>::len), Some(1024));
}

#[tokio::test]
async fn a_producer_sees_partitions_added_when_it_asks_afresh_or_after_forgetting() {
    let settings = servers().kafka("kafka-adapter-test");
    let topic = new_topic(&settings, "grown").await;
    let producer = AckedProducer::new(&settings, PATIENCE).unwrap();
    assert_eq!(
        producer.partition_count(&topic.name, PATIENCE).await,
        Some(3)
    );
    add_partitions(&settings, &topic.name, 5).await;
    // The remembered count stands for a while (a request does not pay a metadata round trip)...
    assert_eq!(
        producer.partition_count(&topic.name, PATIENCE).await,
        Some(3)
    );
    // ... a decision that needs the truth asks the broker ...
    assert_eq!(
        producer.fresh_partition_count(&topic.name, PATIENCE).await,
        Some(5)
    );
    // ... and a forgotten count is fetched again (after a failed produce).
    producer.forget_partition_count(&topic.name);
    assert_eq!(
        producer.partition_count(&topic.name, PATIENCE).await,
        Some(5)
    );
    // A record sent to an added partition lands there.
    let record = OutgoingRecord {
        partition: Some(4),
        ..OutgoingRecord::new("k", "on the new partition")
    };
    let delivered = producer
        .produce_all(&topic.name, &[record], PATIENCE)
        .await
        .unwrap();
    assert_eq!(delivered[0].partition, 4);
    // A record for a partition the topic does not have fails as one, which makes ingest read
    // the count again.
    let beyond = OutgoingRecord {
        partition: Some(7),
        ..OutgoingRecord::new("k", "nowhere")
    };
    let refused = producer
        .produce_all(&topic.name, &[beyond], PATIENCE)
        .await
        .unwrap_err();
    assert!(is_unknown_partition(&refused), "{refused}");
}

#[tokio::test]
async fn an_unreachable_broker_is_a_timeout_not_a_hang() {
    let settings = KafkaSettings::new(format!("127.0.0.1:{}", closed_port()), "down-test");
    const TIMEOUT: Duration = Duration::from_millis(800);
    let producer = AckedProducer::new(&settings, TIMEOUT).unwrap();
    let started = std::time::Instant::now();
    let result = producer
        .produce_all("anything", &[OutgoingRecord::new("k", "v")], TIMEOUT)
        .await;
    assert!(
        matches!(result, Err(KafkaAdapterError::Timeout(_))),
        "{result:?}"
    );
    assert_bounded(started.elapsed(), TIMEOUT, "a produce to a down broker");

    let admin = ensure_topics(
        &settings,
        &[TopicSpec {
            name: "t".into(),
            partitions: 1,
        }],
        TIMEOUT,
    )
    .await;
    assert!(admin.is_err());
}

/// Prints how long a new producer's first record takes to be acknowledged, cold and after
/// [`AckedProducer::warm_up`] (`make figures` shows it); both must be acknowledged.
#[tokio::test]
async fn first_acknowledgement_cold_and_after_warm_up() {
    let settings = servers().kafka("first-ack-test");
    let topic = new_topic(&settings, "adapter-first-ack").await.name;
    let limit = PATIENCE;
    for warmed in [false, true] {
        let producer = AckedProducer::new(&settings, limit).unwrap();
        let started = std::time::Instant::now();
        if warmed {
            producer.warm_up(&topic, limit).await;
        }
        let warm_up = started.elapsed();
        let first = std::time::Instant::now();
        let delivered = producer
            .produce_all(&topic, &[OutgoingRecord::new("k", "first")], limit)
            .await
            .unwrap();
        assert_eq!(delivered.len(), 1);
        println!(
            "first record acknowledged after {:.1} ms ({})",
            first.elapsed().as_secs_f64() * 1e3,
            if warmed {
                format!("warmed up in {:.1} ms", warm_up.as_secs_f64() * 1e3)
            } else {
                "cold producer".to_owned()
            }
        );
    }
}

/// A producer whose broker lost its sequence state (a restarted or replaced broker:
/// `OutOfOrderSequenceNumber`) turns fatal and from then on fails every record. The renewing
/// producer replaces it after the failed produce, and producing goes on; a broker restarted
/// under a producing one is recovered from the same way, whether or not it turned fatal.
#[tokio::test]
async fn a_fatal_producer_is_replaced_and_production_goes_on_after_a_broker_restart() {
    let mut broker = emostream_tests::broker_process::BrokerProcess::start();
    let settings = KafkaSettings::new(broker.address(), "renewing-test");
    let topic = unique_name("renewing");
    let spec = TopicSpec {
        name: topic.clone(),
        partitions: 1,
    };
    ensure_topics(&settings, &[spec], PATIENCE).await.unwrap();
    let producers =
        RenewingProducer::new(&settings, Duration::from_secs(2), Duration::ZERO).unwrap();
    let record = |n: usize| OutgoingRecord::new("k", format!("record {n}"));
    let first: Vec<OutgoingRecord> = (0..20).map(record).collect();
    let producer = producers.current();
    producer
        .produce_all(&topic, &first, PATIENCE)
        .await
        .unwrap();
    assert!(
        !producers.renew_if_fatal(&producer).unwrap(),
        "not fatal: kept"
    );

    producer.make_fatal_for_tests();
    let failed = producer.produce_all(&topic, &[record(20)], PATIENCE).await;
    assert!(failed.is_err(), "a fatal producer delivers nothing");
    assert!(producers.renew_if_fatal(&producer).unwrap(), "replaced");
    assert!(
        !producers.renew_if_fatal(&producer).unwrap(),
        "replaced once"
    );
    producers
        .current()
        .produce_all(&topic, &[record(21)], PATIENCE)
        .await
        .unwrap();
    // Producing through the renewing producer, as the functions do, replaces it by itself.
    let producer = producers.current();
    producer.make_fatal_for_tests();
    let failed = producers
        .produce_all(&producer, &topic, &[record(22)], PATIENCE)
        .await;
    assert!(failed.is_err(), "a fatal producer delivers nothing");
    assert!(
        producers.current().fatal_error().is_none(),
        "replaced after the failed produce"
    );

    broker.restart();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut n = 23;
    loop {
        n += 1;
        let sent = producers
            .produce_all(
                &producers.current(),
                &topic,
                &[record(n)],
                Duration::from_secs(2),
            )
            .await;
        if sent.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no produce succeeded after the restart"
        );
    }
}
