//! The detection rule's unit and property tests.

use super::*;
use proptest::prelude::*;

const WIDTH: i64 = 2_000;

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(e, n)| ((*e).to_owned(), *n)).collect()
}

/// A deterministic noisy rate around `mean` taps per second (a small LCG; roughly
/// Poisson-wide: ± 2√mean).
struct Noise(u64);
impl Noise {
    fn around(&mut self, mean: f64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        let spread = 2.0 * mean.sqrt();
        let rate = (mean + (unit * 2.0 - 1.0) * spread).max(0.0);
        (rate * WIDTH as f64 / 1_000.0).round() as u64
    }
}

/// Feeds `windows` (taps per emoji of each window, from time 0) and returns every change.
fn run(windows: &[BTreeMap<String, u64>]) -> Vec<Moment> {
    let mut detector = MomentDetector::new(MomentRule::DEFAULT);
    windows
        .iter()
        .enumerate()
        .flat_map(|(i, c)| detector.observe(i as i64 * WIDTH, WIDTH, c))
        .collect()
}

fn ended(changes: &[Moment]) -> Vec<Moment> {
    changes.iter().filter(|m| m.ended).cloned().collect()
}

#[test]
fn a_quiet_stream_going_from_nothing_to_a_few_taps_is_no_moment() {
    let mut windows = vec![counts(&[]); 30];
    windows.extend(vec![counts(&[("fire", 6)]); 10]);
    assert!(run(&windows).is_empty());
}

#[test]
fn a_spike_three_times_the_baseline_is_one_moment_labelled_by_the_emoji_that_rose() {
    let mut noise = Noise(7);
    let mut windows: Vec<_> = (0..60)
        .map(|_| counts(&[("clap", noise.around(30.0)), ("fire", noise.around(10.0))]))
        .collect();
    // 6 s at three times the rate, the rise all fire.
    for _ in 0..3 {
        windows.push(counts(&[
            ("clap", noise.around(30.0)),
            ("fire", noise.around(90.0)),
        ]));
    }
    windows.extend(
        (0..20).map(|_| counts(&[("clap", noise.around(30.0)), ("fire", noise.around(10.0))])),
    );
    let changes = run(&windows);
    let first = changes.first().expect("a moment");
    assert_eq!(
        first.detected_from_ms,
        60 * WIDTH,
        "found in the spike's first window"
    );
    assert!(!first.ended);
    let moments = ended(&changes);
    assert_eq!(moments.len(), 1, "{changes:?}");
    let moment = &moments[0];
    assert_eq!(moment.emoji, "fire");
    assert_eq!(moment.start_ms, 60 * WIDTH - 10_000);
    assert_eq!(moment.end_ms, 63 * WIDTH + 5_000);
    assert!(moment.peak_rate >= 100.0);
}

#[test]
fn spikes_close_together_are_one_moment_and_apart_two() {
    let base = || counts(&[("clap", 40)]);
    let spike = || counts(&[("wow", 400)]);
    let mut windows = vec![base(); 30];
    // Two spikes 4 s apart (two quiet windows), then one 12 s later.
    windows.extend([spike(), base(), base(), spike()]);
    windows.extend(vec![base(); 6]);
    windows.push(spike());
    windows.extend(vec![base(); 10]);
    let moments = ended(&run(&windows));
    assert_eq!(moments.len(), 2, "{moments:?}");
    assert_eq!(moments[0].detected_from_ms, 30 * WIDTH);
    assert_eq!(moments[0].end_ms, 34 * WIDTH + 5_000);
    assert_eq!(moments[1].detected_from_ms, 40 * WIDTH);
}

#[test]
fn a_long_celebration_stays_one_moment_and_does_not_become_the_baseline() {
    let mut noise = Noise(3);
    let mut windows: Vec<_> = (0..40)
        .map(|_| counts(&[("clap", noise.around(25.0))]))
        .collect();
    windows.extend((0..60).map(|_| counts(&[("party", noise.around(150.0))])));
    windows.extend((0..30).map(|_| counts(&[("clap", noise.around(25.0))])));
    // The same spike again after the celebration: still a moment of its own.
    windows.extend((0..3).map(|_| counts(&[("party", noise.around(150.0))])));
    windows.extend((0..10).map(|_| counts(&[("clap", noise.around(25.0))])));
    let moments = ended(&run(&windows));
    assert_eq!(moments.len(), 2, "{moments:?}");
    assert_eq!(moments[0].detected_from_ms, 40 * WIDTH);
    assert_eq!(
        moments[0].end_ms,
        100 * WIDTH + 5_000,
        "two minutes, one moment"
    );
    assert_eq!(moments[1].detected_from_ms, 130 * WIDTH);
}

#[test]
fn a_stream_does_not_start_with_a_moment_and_gaps_are_silence() {
    // Busy from its first window: that is its baseline.
    let windows = vec![counts(&[("clap", 200)]); 20];
    assert!(run(&windows).is_empty());

    // Missing windows are silent ones; a window seen before changes nothing.
    let mut detector = MomentDetector::new(MomentRule::DEFAULT);
    for i in 0..20 {
        assert!(
            detector
                .observe(i * WIDTH, WIDTH, &counts(&[("clap", 40)]))
                .is_empty()
        );
    }
    let before = detector.clone();
    assert!(
        detector
            .observe(5 * WIDTH, WIDTH, &counts(&[("clap", 4_000)]))
            .is_empty()
    );
    assert_eq!(detector, before, "an old window is ignored");
    // A pause shorter than the horizon is silence: taps at the old rate after it are no
    // moment. Ten minutes later, a stream that had gone quiet starts over.
    let soon = 20 * WIDTH + 20_000;
    assert!(
        detector
            .observe(soon, WIDTH, &counts(&[("clap", 40)]))
            .is_empty()
    );
    let later = soon + WIDTH + 600_000;
    assert!(
        detector
            .observe(later, WIDTH, &counts(&[("clap", 40)]))
            .is_empty()
    );
    assert_eq!(detector.next_start_ms(), Some(later + WIDTH));
}

#[test]
fn one_viewer_at_the_fair_use_limit_is_no_moment() {
    let mut windows = vec![counts(&[("clap", 2)]); 30];
    windows.extend(vec![counts(&[("fire", 40)]); 10]);
    assert!(run(&windows).is_empty());
}

#[test]
fn a_moment_ends_when_its_stream_goes_quiet_without_another_tap() {
    let mut detector = MomentDetector::new(MomentRule::DEFAULT);
    for i in 0..30 {
        detector.observe(i * WIDTH, WIDTH, &counts(&[("clap", 60)]));
    }
    let started = detector.observe(30 * WIDTH, WIDTH, &counts(&[("wow", 600)]));
    assert_eq!(started.len(), 1);
    assert!(!started[0].ended);
    // Final and empty up to 4 s after the spike: within the merge gap, still open.
    assert!(detector.advance_to(33 * WIDTH, WIDTH).is_empty());
    let ended = detector.advance_to(34 * WIDTH + 1_000, WIDTH);
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(ended[0].ended);
    assert_eq!(ended[0].end_ms, 31 * WIDTH + 5_000);
    assert_eq!(detector.next_start_ms(), Some(34 * WIDTH));
    // Windows already taken as silent are not taken again.
    assert!(
        detector
            .observe(32 * WIDTH, WIDTH, &counts(&[("wow", 600)]))
            .is_empty()
    );
}

#[test]
fn a_window_still_counting_is_a_provisional_moment_once_its_taps_so_far_are_a_spike() {
    let base = || counts(&[("clap", 60)]);
    let mut detector = MomentDetector::new(MomentRule::DEFAULT);
    for i in 0..30 {
        assert!(detector.observe(i * WIDTH, WIDTH, &base()).is_empty());
    }
    let live = 30 * WIDTH;
    // Nothing before the detector's next window, nor while the taps so far are ordinary.
    assert_eq!(
        detector.provisional(29 * WIDTH, WIDTH, &counts(&[("wow", 900)])),
        None
    );
    assert_eq!(
        detector.provisional(live, WIDTH, &counts(&[("clap", 70)])),
        None
    );
    // Part of the window's taps in, already far above: the moment the final window makes.
    let so_far = counts(&[("clap", 30), ("wow", 200)]);
    let provisional = detector.provisional(live, WIDTH, &so_far).expect("a spike");
    let confirmed = detector.observe(live, WIDTH, &counts(&[("clap", 60), ("wow", 500)]));
    assert_eq!(confirmed.len(), 1);
    assert_eq!(provisional.detected_from_ms, confirmed[0].detected_from_ms);
    assert_eq!(
        (provisional.emoji.as_str(), provisional.start_ms),
        ("wow", confirmed[0].start_ms)
    );
    assert!(detector.has_open_moment());
    // While the moment is open, no window proposes another, near or far (the detector
    // lags the live windows by more than the merge gap).
    for later in [live + 2 * WIDTH, live + 6 * WIDTH] {
        let spike = counts(&[("wow", 500)]);
        assert_eq!(detector.provisional(later, WIDTH, &spike), None);
    }
    // A detector that saw no window yet has no baseline to stand out from.
    let fresh = MomentDetector::new(MomentRule::DEFAULT);
    assert_eq!(
        fresh.provisional(live, WIDTH, &counts(&[("wow", 5_000)])),
        None
    );
}

#[test]
fn a_spike_at_the_bottom_of_a_falling_baseline_is_found_and_a_slow_rise_is_none() {
    let mut noise = Noise(11);
    // Two minutes falling from 60 to 25 taps a second, a minute flat, then 6 s at three
    // times: a minute-long mean would still stand near 35 with the fall in its variance.
    let mut windows: Vec<_> = (0..60)
        .map(|i| counts(&[("clap", noise.around(60.0 - 35.0 * i as f64 / 60.0))]))
        .collect();
    windows.extend((0..30).map(|_| counts(&[("clap", noise.around(25.0))])));
    windows.extend((0..3).map(|_| counts(&[("clap", noise.around(75.0))])));
    windows.extend((0..10).map(|_| counts(&[("clap", noise.around(25.0))])));
    let moments = ended(&run(&windows));
    assert_eq!(moments.len(), 1, "{moments:?}");
    assert_eq!(moments[0].detected_from_ms, 90 * WIDTH);

    // An audience growing fourfold over two minutes is followed, not a moment.
    let windows: Vec<_> = (0..120)
        .map(|i| counts(&[("clap", noise.around(25.0 + 75.0 * i as f64 / 60.0))]))
        .collect();
    assert!(run(&windows).is_empty());
}

/// Feeds `detector` the windows `range` (by index) of `emoji` around `rate` taps a second.
fn feed(
    detector: &mut MomentDetector,
    range: std::ops::Range<i64>,
    emoji: &str,
    rate: f64,
    noise: &mut Noise,
) -> Vec<Moment> {
    range
        .flat_map(|i| detector.observe(i * WIDTH, WIDTH, &counts(&[(emoji, noise.around(rate))])))
        .collect()
}

#[test]
fn taps_resuming_after_a_pause_are_no_moment_but_a_spike_after_them_is() {
    let mut noise = Noise(7);
    // 40 taps/s, reactions paused for 30 s (no window stored), then 40 again and, a minute
    // later, four times that for 6 s.
    let mut detector = MomentDetector::new(MomentRule::DEFAULT);
    let mut moments = feed(&mut detector, 0..60, "clap", 40.0, &mut noise);
    moments.extend(feed(&mut detector, 75..76, "clap", 40.0, &mut noise));
    assert_eq!(
        detector.baseline.seen_s, 2.0,
        "the pause started the stream over"
    );
    moments.extend(feed(&mut detector, 76..105, "clap", 40.0, &mut noise));
    assert!(moments.is_empty(), "{moments:?}");
    moments.extend(feed(&mut detector, 105..108, "wow", 160.0, &mut noise));
    moments.extend(detector.advance_to(120 * WIDTH, WIDTH));
    let moments = latest_of_each(moments);
    assert_eq!(moments.len(), 1, "{moments:?}");
    assert_eq!(moments[0].detected_from_ms, 105 * WIDTH);
    // A pause shorter than the level's horizon (6 s) is fed as silence, and is no moment
    // either when the taps come back at the rate they left.
    let mut detector = MomentDetector::new(MomentRule::DEFAULT);
    let mut moments = feed(&mut detector, 0..60, "clap", 40.0, &mut noise);
    moments.extend(feed(&mut detector, 63..64, "clap", 40.0, &mut noise));
    assert_eq!(detector.baseline.seen_s, 128.0, "no restart");
    moments.extend(feed(&mut detector, 64..90, "clap", 40.0, &mut noise));
    assert!(moments.is_empty(), "{moments:?}");
}

#[test]
fn a_silence_split_by_the_tick_is_the_same_silence() {
    // 40 taps/s, a spike, then a silence of 12 s (six windows) and the taps again: wherever
    // the tick moves the detector on within the silence, the detector and its moments are
    // the same as with no tick.
    let mut noise = Noise(3);
    let mut windows: Vec<(i64, BTreeMap<String, u64>)> = (0..60)
        .map(|i| (i, counts(&[("clap", noise.around(40.0))])))
        .collect();
    windows.extend((60..63).map(|i| (i, counts(&[("wow", noise.around(200.0))]))));
    windows.extend((69..100).map(|i| (i, counts(&[("clap", noise.around(40.0))]))));
    let run_with_tick = |tick: Option<i64>| {
        let mut detector = MomentDetector::new(MomentRule::DEFAULT);
        let mut moments = Vec::new();
        for (i, window) in &windows {
            if *i == 69
                && let Some(tick) = tick
            {
                moments.extend(detector.advance_to(tick * WIDTH, WIDTH));
            }
            moments.extend(detector.observe(i * WIDTH, WIDTH, window));
        }
        (detector, latest_of_each(moments))
    };
    let (untouched, moments) = run_with_tick(None);
    assert_eq!(moments.len(), 1, "{moments:?}");
    assert!(moments[0].ended);
    assert_eq!(
        untouched.baseline.seen_s, 62.0,
        "the silence started the stream over"
    );
    for tick in 63..=69 {
        assert_eq!(
            run_with_tick(Some(tick)),
            (untouched.clone(), moments.clone()),
            "tick at {tick}"
        );
    }
}

#[test]
fn a_detector_stored_before_the_level_had_its_own_horizon_keeps_the_minute() {
    let mut stored = serde_json::to_value(MomentDetector::new(MomentRule::DEFAULT)).unwrap();
    stored["rule"]
        .as_object_mut()
        .unwrap()
        .remove("level_horizon_s");
    stored["rule"]
        .as_object_mut()
        .unwrap()
        .remove("restarts_after_silence");
    let detector: MomentDetector = serde_json::from_value(stored).unwrap();
    assert_eq!(detector.rule.level_horizon_s, 60.0);
    assert!(!detector.rule.restarts_after_silence);
    assert_eq!(detector.rule.horizon_s, MomentRule::DEFAULT.horizon_s);
}

#[test]
fn a_flat_noisy_hour_has_no_moment() {
    for seed in 1..=5 {
        let mut noise = Noise(seed);
        for mean in [5.0, 50.0, 500.0] {
            let windows: Vec<_> = (0..1_800)
                .map(|_| counts(&[("clap", noise.around(mean))]))
                .collect();
            assert!(run(&windows).is_empty(), "seed {seed}, {mean}/s");
        }
    }
}

proptest! {
    /// The same windows give the same moments, whether one detector sees them all or the
    /// work is handed over (the state stored and read back) at any window, and whatever
    /// windows are delivered again.
    #[test]
    fn moments_depend_only_on_the_windows(
        rates in proptest::collection::vec(0u64..600, 1..120),
        hand_over in 0usize..120,
        repeat in proptest::collection::vec(0usize..120, 0..10),
    ) {
        let windows: Vec<_> = rates.iter().map(|n| counts(&[("clap", *n)])).collect();
        let whole = run(&windows);
        let mut detector = MomentDetector::new(MomentRule::DEFAULT);
        let mut changes = Vec::new();
        for (i, window) in windows.iter().enumerate() {
            if i == hand_over {
                let stored = serde_json::to_value(&detector).unwrap();
                detector = serde_json::from_value(stored).unwrap();
            }
            changes.extend(detector.observe(i as i64 * WIDTH, WIDTH, window));
            for &again in repeat.iter().filter(|&&r| r <= i) {
                changes.extend(detector.observe(again as i64 * WIDTH, WIDTH, &windows[again]));
            }
        }
        prop_assert_eq!(changes, whole);
    }
}
