//! Made-up but realistic input: a partition's log of reactions, spread over streams, emojis and
//! several windows, for the exactly-once tests of the store and of the aggregate function.

use reactions::kafka_event::RecordPosition;
use reactions::{EmojiName, Reaction, StreamId, UserId};
use std::time::Duration;

/// The retention for windows a test writes. Fixture windows lie in the past (some at the
/// epoch), so a century keeps their `expires_at` in the future: MongoDB's TTL sweep (once a
/// minute) must not delete them while a test runs.
pub const FIXTURE_RETENTION: Duration = Duration::from_secs(100 * 365 * 24 * 3_600);

/// [`FIXTURE_RETENTION`] in hours, for `WINDOW_RETENTION_HOURS`.
pub const FIXTURE_RETENTION_HOURS: &str = "876000";

/// `len` reactions at offsets 1000.. of `topic`/`partition`, over `streams` streams named
/// `live-N`, four emojis, 1 to 3 taps each, timed from `base_ms` over three 2 s windows.
pub fn reaction_log(
    topic: &str,
    partition: i32,
    len: usize,
    streams: usize,
    base_ms: i64,
) -> Vec<(RecordPosition, Reaction)> {
    let emojis = ["fire", "clap", "joy", "heart"];
    (0..len)
        .map(|i| {
            let position = RecordPosition {
                topic: topic.into(),
                partition,
                offset: 1_000 + i as i64,
                generation: 0,
            };
            let reaction = Reaction {
                stream: StreamId::parse("stream", &format!("live-{}", i % streams))
                    .expect("valid stream id"),
                user: UserId::parse("user", &format!("viewer-{i}")).expect("valid user id"),
                emoji: EmojiName::parse(emojis[i % emojis.len()]).expect("valid emoji"),
                count: 1 + (i % 3) as u32,
                at_ms: base_ms + (i as i64 * 53) % 6_000,
                key: None,
                fair_use_limit: None,
            };
            (position, reaction)
        })
        .collect()
}

/// Registers `ids` as live streams with `catalogue` in the registry of `mongo`'s database, as
/// an admin would, so ingest takes reactions to them.
pub async fn register_live_streams(
    mongo: &reactions::mongo::MongoSettings,
    ids: &[&str],
    catalogue: &reactions::EmojiCatalogue,
) {
    use reactions::stream_registry::{StreamChanges, Transition};
    let database = reactions::mongo::connect(mongo, "test-registry")
        .await
        .expect("MongoDB answers");
    let store = reactions::mongo::StreamStore::new(&database);
    for id in ids {
        let stream = StreamId::parse("id", id).expect("valid stream id");
        let changes = StreamChanges {
            title: Some(format!("Stream {id}")),
            catalogue: Some(catalogue.clone()),
            ..StreamChanges::default()
        };
        let now = reactions::clock::now_ms();
        store
            .put(&stream, &changes, catalogue, now)
            .await
            .expect("stream registered");
        store
            .transition(&stream, Transition::Start, now)
            .await
            .expect("stream started");
    }
}
