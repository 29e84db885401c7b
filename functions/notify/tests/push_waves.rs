//! The wave operations of the push schedule against the real MongoDB-wire server: a wave of
//! slots taken and given back in one write each whatever the number of streams, each push
//! still guarded by its own holder and owed marks; a wave's windows and small audiences read
//! in one query each, with each stream's own bounds, and read stream by stream when a read
//! cannot hold them all.

mod common;

use common::*;
use mongodb::bson::{Document, doc};
use reactions::mongo::{
    FinishedPush, PushEnd, PushSlots, STREAMS_PER_WINDOW_READ, StoreError, WatchingConnection,
    WindowStore, connect,
};
use std::time::Duration;

const LEASE: Duration = Duration::from_secs(30);

async fn database(f: &Fixture) -> mongodb::Database {
    connect(&f.mongo, "notify-test").await.unwrap()
}

fn end(audience: u64, next_due_ms: i64, seq: i64) -> PushEnd {
    PushEnd {
        audience,
        next_due_ms,
        resume_from: None,
        seq,
        still_owed_from_ms: None,
    }
}

#[tokio::test]
async fn a_wave_takes_only_open_scheduled_slots_and_reads_what_each_owes() {
    let f = Fixture::start(&[]).await;
    let database = database(&f).await;
    let slots = PushSlots::new(&database);
    let at = now();
    let pushes = database.collection::<Document>(PushSlots::COLLECTION);
    pushes
        .insert_one(doc! {
            "_id": "open", "next_due_ms": at - 5, "owed_from_ms": 4_000_i64, "owed_seq": 3_i64,
            "resume_from": "c-2", "seq": 5_i64, "audience": 7_i64,
        })
        .await
        .unwrap();
    pushes
        .insert_one(doc! { "_id": "held", "next_due_ms": at + 20_000, "holder": "someone" })
        .await
        .unwrap();
    let wave = [stream("open"), stream("held"), stream("new")];
    let view = slots.view(&wave, at, LEASE).await.unwrap();
    assert_eq!(view.not_due.into_iter().collect::<Vec<_>>(), ["held"]);
    assert_eq!(view.unscheduled, ["new"]);
    // A stream without a schedule is not taken until it has one.
    let taken = slots.claim_all(&wave, at, LEASE).await.unwrap();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let open = &taken[0];
    assert_eq!(open.stream.as_str(), "open");
    assert_eq!(open.owed_from_ms, Some(4_000));
    assert_eq!(open.owed_seq, 3);
    assert_eq!(open.resume_from.as_deref(), Some("c-2"));
    assert_eq!((open.seq, open.audience), (5, Some(7)));
    assert_eq!(open.at_ms, at);
    let stored = stored_slot(&database, "open").await;
    assert_eq!(stored.get_str("holder").unwrap(), open.holder);
    assert_eq!(stored.get_i64("next_due_ms").unwrap(), at + 30_000);
    assert_eq!(
        stored_slot(&database, "held")
            .await
            .get_str("holder")
            .unwrap(),
        "someone"
    );
    slots.schedule(&["new".to_owned()]).await.unwrap();
    let taken = slots.claim_all(&wave, at + 1, LEASE).await.unwrap();
    let names: Vec<&str> = taken.iter().map(|t| t.stream.as_str()).collect();
    assert_eq!(names, ["new"], "the other two are held now");
    assert_eq!((taken[0].seq, taken[0].owed_seq), (0, 0));
    // Scheduling a stream that has a schedule changes nothing.
    slots.schedule(&["open".to_owned()]).await.unwrap();
    assert_eq!(
        stored_slot(&database, "open")
            .await
            .get_str("holder")
            .unwrap(),
        open.holder
    );
}

#[tokio::test]
async fn a_wave_ends_in_one_write_each_push_by_its_own_holder() {
    let f = Fixture::start(&[]).await;
    let database = database(&f).await;
    let slots = PushSlots::new(&database);
    let names = [
        "plain",
        "marked",
        "lost",
        "short",
        "idle",
        "idle-marked",
        "failed",
    ];
    let owed: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    slots.mark_owed(&owed, 2_000, 0, None).await.unwrap();
    let at = now();
    let wave: Vec<_> = names.iter().map(|n| stream(n)).collect();
    let mut taken = slots
        .claim_all(&wave, at, Duration::from_millis(100))
        .await
        .unwrap();
    taken.sort_by(|a, b| {
        let place = |s: &str| names.iter().position(|n| *n == s);
        place(a.stream.as_str()).cmp(&place(b.stream.as_str()))
    });
    assert_eq!(taken.len(), names.len());
    assert!(
        taken
            .iter()
            .all(|t| t.owed_seq == 1 && t.owed_from_ms == Some(2_000))
    );
    // While the pushes are under way: two streams are marked owed again, and one lease runs out
    // and another push takes that slot.
    slots
        .mark_owed(
            &["marked".to_owned(), "idle-marked".to_owned()],
            6_000,
            0,
            None,
        )
        .await
        .unwrap();
    let thief = slots
        .claim_all(&[stream("lost")], at + 200, LEASE)
        .await
        .unwrap();
    assert_eq!(thief.len(), 1);
    let mut short = end(4, at + 1_000, 1);
    short.still_owed_from_ms = Some(1_000);
    short.resume_from = Some("c-9".to_owned());
    let ends = [
        FinishedPush {
            lease: &taken[0],
            end: end(2, at + 1_000, 1),
        },
        FinishedPush {
            lease: &taken[1],
            end: end(3, at + 1_000, 1),
        },
        FinishedPush {
            lease: &taken[2],
            end: end(9, at + 1_000, 1),
        },
        FinishedPush {
            lease: &taken[3],
            end: short,
        },
    ];
    assert_eq!(
        slots.finish_all(&ends).await.unwrap(),
        3,
        "one slot was lost"
    );
    // Ending them again changes nothing: each end gave up its holder's token.
    assert_eq!(slots.finish_all(&ends).await.unwrap(), 0);
    let plain = stored_slot(&database, "plain").await;
    assert!(plain.get_i64("owed_from_ms").is_err(), "{plain}");
    assert_eq!(plain.get_i64("audience").unwrap(), 2);
    assert_eq!(plain.get_i64("next_due_ms").unwrap(), at + 1_000);
    let marked = stored_slot(&database, "marked").await;
    assert_eq!(marked.get_i64("owed_from_ms").unwrap(), 2_000, "{marked}");
    assert_eq!(marked.get_i64("audience").unwrap(), 3);
    let lost = stored_slot(&database, "lost").await;
    assert!(lost.get_i64("audience").is_err(), "{lost}");
    assert_eq!(lost.get_str("holder").unwrap(), thief[0].holder);
    assert_eq!(lost.get_i64("owed_from_ms").unwrap(), 2_000);
    let short = stored_slot(&database, "short").await;
    assert_eq!(short.get_i64("owed_from_ms").unwrap(), 1_000, "{short}");
    assert_eq!(short.get_str("resume_from").unwrap(), "c-9");
    assert_eq!(short.get_i64("audience").unwrap(), 4);
    // Slots taken with nothing to push open again at once; a mark set meanwhile stays.
    slots.release_all(&[&taken[4], &taken[5]]).await.unwrap();
    let idle = stored_slot(&database, "idle").await;
    assert_eq!(idle.get_i64("next_due_ms").unwrap(), at);
    assert!(idle.get_i64("owed_from_ms").is_err(), "{idle}");
    let idle_marked = stored_slot(&database, "idle-marked").await;
    assert_eq!(idle_marked.get_i64("next_due_ms").unwrap(), at);
    assert_eq!(idle_marked.get_i64("owed_from_ms").unwrap(), 2_000);
    // A slot taken for a push that could not be made opens again, still owed.
    slots.reopen_all(&[&taken[6]]).await.unwrap();
    let failed = stored_slot(&database, "failed").await;
    assert_eq!(failed.get_i64("next_due_ms").unwrap(), at);
    assert_eq!(failed.get_i64("owed_from_ms").unwrap(), 2_000, "{failed}");
    assert!(failed.get_str("holder").is_err(), "{failed}");
    assert_eq!(slots.finish_all(&[]).await.unwrap(), 0);
}

#[tokio::test]
async fn a_waves_windows_are_read_at_once_each_stream_within_its_own_bounds() {
    let f = Fixture::start(&[]).await;
    let t = 1_800_000_000_000;
    let mut states = Vec::new();
    for n in 0..10 {
        states.push(state("many", t + n * 2_000, &[("fire", n as u64 + 1)], 1));
    }
    for n in 0..3 {
        states.push(state("few", t + n * 2_000, &[("fire", 1)], 1));
    }
    states.push(state("other", t, &[("fire", 1)], 1));
    store_states(&f.mongo, &states).await;
    let windows = WindowStore::new(&database(&f).await);
    let starts = |list: &reactions::mongo::WindowList| -> Vec<i64> {
        list.windows.iter().map(|w| w.key.start_ms - t).collect()
    };
    // One read (14 windows at most, 13 stored): each stream keeps its newest three at or after
    // its own start.
    let wants = [
        (stream("many"), t + 4 * 2_000),
        (stream("few"), t + 2_000),
        (stream("other"), t + 2_000),
        (stream("none"), t),
        (stream("empty"), t),
    ];
    let read = windows.newest_windows_of(&wants, 3).await.unwrap();
    assert_eq!(read.len(), 5);
    assert_eq!(
        starts(&read[0]),
        [14_000, 16_000, 18_000],
        "the newest, oldest first"
    );
    assert_eq!(
        starts(&read[1]),
        [2_000, 4_000],
        "none before its own start"
    );
    assert!(read[2].windows.is_empty(), "none before its own start");
    assert!(read[3].windows.is_empty());
    // Two a stream for two streams: "many" alone fills the read, so each is read on its own.
    let read = windows
        .newest_windows_of(&[(stream("many"), t), (stream("few"), t)], 2)
        .await
        .unwrap();
    assert_eq!(starts(&read[0]), [16_000, 18_000]);
    assert_eq!(starts(&read[1]), [2_000, 4_000]);
    assert!(windows.newest_windows_of(&[], 3).await.unwrap().is_empty());

    // A wave of more streams than one read takes: each read's streams in their own place, the
    // read that "many" fills stream by stream, the others at once.
    let mut wants: Vec<_> = (0..2 * STREAMS_PER_WINDOW_READ)
        .map(|n| (stream(&format!("absent-{n}")), t))
        .collect();
    wants.insert(3, (stream("few"), t + 2_000));
    wants.push((stream("many"), t));
    wants.push((stream("other"), t));
    let read = windows.newest_windows_of(&wants, 2).await.unwrap();
    assert_eq!(read.len(), wants.len());
    assert_eq!(starts(&read[3]), [2_000, 4_000]);
    assert_eq!(starts(&read[wants.len() - 2]), [16_000, 18_000]);
    assert_eq!(starts(&read[wants.len() - 1]), [0]);
    let filled: usize = read.iter().map(|list| list.windows.len()).sum();
    assert_eq!(filled, 5, "nothing of the absent streams");
}

#[tokio::test]
async fn a_waves_audiences_are_read_at_once_and_those_cut_by_the_limit_are_left_out() {
    let f = Fixture::start(&[]).await;
    let store = f.connections().await;
    for (stream_id, n) in [("a", 3), ("b", 2), ("c", 4)] {
        for i in 0..n {
            store
                .register(&format!("{stream_id}-{i}"), &stream(stream_id), now())
                .await
                .unwrap();
        }
    }
    database(&f)
        .await
        .collection::<Document>("connections")
        .insert_one(doc! { "_id": 42_i64, "stream": "a", "connected_at_ms": now() })
        .await
        .unwrap();
    let ids = |read: &Option<Vec<Result<WatchingConnection, StoreError>>>| -> Option<Vec<String>> {
        read.as_ref().map(|list| {
            list.iter()
                .map(|c| match c {
                    Ok(c) => c.id.clone(),
                    Err(StoreError::Malformed(_)) => "malformed".to_owned(),
                    Err(other) => panic!("{other}"),
                })
                .collect()
        })
    };
    let wave = [stream("c"), stream("a"), stream("b"), stream("empty")];
    let whole = store.audiences(&wave, 100).await.unwrap();
    assert_eq!(ids(&whole[0]).unwrap(), ["c-0", "c-1", "c-2", "c-3"]);
    let mut a = ids(&whole[1]).unwrap();
    a.sort();
    assert_eq!(a, ["a-0", "a-1", "a-2", "malformed"]);
    assert_eq!(ids(&whole[2]).unwrap(), ["b-0", "b-1"]);
    assert_eq!(ids(&whole[3]).unwrap(), Vec::<String>::new());
    // Five connections: all of "a", and one of "b". "b" and what comes after it are left out.
    let cut = store.audiences(&wave, 5).await.unwrap();
    assert_eq!(ids(&cut[1]).map(|a| a.len()), Some(4));
    assert_eq!(ids(&cut[0]), None);
    assert_eq!(ids(&cut[2]), None);
    assert_eq!(ids(&cut[3]), None);
}

#[tokio::test]
async fn the_sweeper_learns_when_the_first_owed_slot_opens() {
    let f = Fixture::start(&[]).await;
    let database = database(&f).await;
    let slots = PushSlots::new(&database);
    assert_eq!(slots.next_owed_due(0, None).await.unwrap(), None);
    let pushes = database.collection::<Document>(PushSlots::COLLECTION);
    pushes
        .insert_many([
            doc! { "_id": "quiet", "next_due_ms": 1_000_i64 },
            doc! { "_id": "later", "next_due_ms": 5_000_i64, "owed_from_ms": 0_i64, "owed_not_before_ms": 0_i64 },
            // A mark written before `owed_not_before_ms` existed is due as well.
            doc! { "_id": "sooner", "next_due_ms": 3_000_i64, "owed_from_ms": 0_i64 },
        ])
        .await
        .unwrap();
    assert_eq!(
        slots.next_owed_due(0, None).await.unwrap(),
        Some(3_000),
        "owed streams only"
    );
    assert_eq!(
        slots.next_owed_due(0, Some(3_000)).await.unwrap(),
        Some(5_000)
    );
    assert_eq!(slots.next_owed_due(0, Some(5_000)).await.unwrap(), None);
}

#[tokio::test]
async fn a_held_back_push_waits_for_its_time_unless_a_newer_state_is_owed() {
    let f = Fixture::start(&[]).await;
    let database = database(&f).await;
    let slots = PushSlots::new(&database);
    slots.ensure_indexes().await.unwrap();
    let pushes = database.collection::<Document>(PushSlots::COLLECTION);
    pushes
        .insert_many([
            doc! { "_id": "settled", "next_due_ms": 1_000_i64 },
            doc! { "_id": "live", "next_due_ms": 3_000_i64 },
        ])
        .await
        .unwrap();
    // A final state alone: owed, its push held back until 8,000 although its slot opens at
    // 1,000.
    slots
        .mark_owed(&["settled".to_owned()], 0, 8_000, None)
        .await
        .unwrap();
    assert!(slots.owed_and_due(7_999, 10).await.unwrap().is_empty());
    assert_eq!(slots.owed_and_due(8_000, 10).await.unwrap(), ["settled"]);
    assert_eq!(slots.next_owed_due(5_000, None).await.unwrap(), Some(8_000));
    // A live stream's slot opening sooner is the first due; once the hold-back is over, the
    // held-back stream's open slot is.
    slots
        .mark_owed(&["live".to_owned()], 0, 0, None)
        .await
        .unwrap();
    assert_eq!(slots.next_owed_due(5_000, None).await.unwrap(), Some(3_000));
    assert_eq!(slots.next_owed_due(8_000, None).await.unwrap(), Some(1_000));
    assert_eq!(
        slots.next_owed_due(8_000, Some(1_000)).await.unwrap(),
        Some(3_000)
    );

    // A newer state of the held-back stream is owed at once: the mark keeps the sooner time.
    slots
        .mark_owed(&["settled".to_owned()], 0, 0, None)
        .await
        .unwrap();
    slots
        .mark_owed(&["settled".to_owned()], 0, 9_000, None)
        .await
        .unwrap();
    assert_eq!(
        slots.owed_and_due(5_000, 10).await.unwrap(),
        ["settled", "live"]
    );

    // The push ends: the mark and its time are cleared together.
    let s = stream("settled");
    let lease = slots
        .claim_all(std::slice::from_ref(&s), 5_000, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .expect("the slot is open");
    let end = PushEnd {
        audience: 1,
        next_due_ms: 6_000,
        resume_from: None,
        seq: lease.seq + 1,
        still_owed_from_ms: None,
    };
    assert!(slots.finish(&lease, end).await.unwrap());
    let stored = pushes
        .find_one(doc! { "_id": "settled" })
        .await
        .unwrap()
        .unwrap();
    assert!(stored.get("owed_from_ms").is_none(), "{stored}");
    assert!(stored.get("owed_not_before_ms").is_none(), "{stored}");
    assert_eq!(slots.owed_and_due(20_000, 10).await.unwrap(), ["live"]);
}

#[tokio::test]
async fn a_final_state_marked_during_a_push_does_not_hold_back_what_the_push_left_owed() {
    let f = Fixture::start(&[]).await;
    let database = database(&f).await;
    let slots = PushSlots::new(&database);
    slots.ensure_indexes().await.unwrap();
    let (cut, failed, done) = (stream("cut"), stream("failed"), stream("done"));
    let ids = [cut.clone(), failed.clone(), done.clone(), stream("died")];
    let names: Vec<String> = ids.iter().map(|s| s.as_str().to_owned()).collect();
    slots.mark_owed(&names, 0, 0, None).await.unwrap();
    let leases = slots.claim_all(&ids, 1_000, LEASE).await.unwrap();
    assert_eq!(leases.len(), 4);
    let lease = |s: &reactions::StreamId| leases.iter().find(|l| &l.stream == s).unwrap();
    // What is owed is taken with the slots: nothing is due while the pushes hold them, and the
    // streams are due when the lease runs out (their holders died).
    assert!(slots.owed_and_due(30_999, 10).await.unwrap().is_empty());
    // Final states alone arrive during the pushes: owed, held back until 9,000.
    slots.mark_owed(&names, 0, 9_000, None).await.unwrap();

    // One push is cut short by its deadline, another's reads fail, the third ends.
    let mut cut_short = end(5, 2_000, lease(&cut).seq + 1);
    cut_short.still_owed_from_ms = Some(0);
    slots
        .finish_all(&[
            FinishedPush {
                lease: lease(&cut),
                end: cut_short,
            },
            FinishedPush {
                lease: lease(&done),
                end: end(5, 2_000, lease(&done).seq + 1),
            },
        ])
        .await
        .unwrap();
    slots.reopen_all(&[lease(&failed)]).await.unwrap();
    // The viewers the cut push missed and the failed push's are served when the slots open,
    // not an interval later; the push that ended leaves the final states held back.
    let due_by = |at_ms| {
        let slots = &slots;
        async move {
            let mut due = slots.owed_and_due(at_ms, 10).await.unwrap();
            due.sort();
            due
        }
    };
    assert_eq!(due_by(2_000).await, ["cut", "failed"]);
    assert_eq!(due_by(9_000).await, ["cut", "done", "failed"]);
    // The push whose holder died is due when its lease runs out.
    assert_eq!(due_by(30_999).await, ["cut", "done", "failed"]);
    assert_eq!(due_by(31_000).await, ["cut", "died", "done", "failed"]);
    assert_eq!(
        slots.next_owed_due(2_000, Some(2_000)).await.unwrap(),
        Some(9_000)
    );
}
