//! Tumbling event-time windows. Every reaction belongs to exactly one window of its stream,
//! chosen by its server timestamp, so counts are reproducible from the log alone: replaying the
//! same records always lands the same taps in the same windows.

use crate::emoji::EmojiName;
use crate::ids::StreamId;
use crate::reaction::Reaction;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The width of a window. Short enough for a lively swarm, long enough that one update per
/// window per connection stays within API Gateway's quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowWidth(i64);

/// Why a window width was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window width must be between 100 ms and 1 hour, got {0} ms")]
pub struct BadWindowWidth(pub i64);

impl WindowWidth {
    /// Two seconds: the default.
    pub const DEFAULT: WindowWidth = WindowWidth(2_000);

    /// A width of `ms` milliseconds, within 100 ms and one hour.
    pub fn from_millis(ms: i64) -> Result<Self, BadWindowWidth> {
        if (100..=3_600_000).contains(&ms) {
            Ok(Self(ms))
        } else {
            Err(BadWindowWidth(ms))
        }
    }

    /// The width in milliseconds.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// The start of the window holding `at_ms` (floor division, correct before 1970 too).
    pub fn start_of(self, at_ms: i64) -> i64 {
        // Saturates at the start of time, where the window below has no representable start.
        at_ms.saturating_sub(at_ms.rem_euclid(self.0))
    }
}

impl Default for WindowWidth {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One window of one stream: the unit of storage (one MongoDB document) and of updates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    /// The stream.
    pub stream: StreamId,
    /// Window start, milliseconds since the epoch, a multiple of the width.
    pub start_ms: i64,
}

impl WindowKey {
    /// The window of `width` that holds a reaction on `stream` at `at_ms`.
    pub fn containing(stream: StreamId, at_ms: i64, width: WindowWidth) -> Self {
        Self {
            stream,
            start_ms: width.start_of(at_ms),
        }
    }

    /// Exclusive end of the window. Saturates: a record's `at_ms` comes from outside this
    /// process, and one near `i64::MAX` must not wrap its window's end into the past (which
    /// would make it final at once) or panic.
    pub fn end_ms(&self, width: WindowWidth) -> i64 {
        self.start_ms.saturating_add(width.millis())
    }
}

/// Taps per emoji. A BTreeMap so that serialisation is deterministic.
pub type EmojiCounts = BTreeMap<EmojiName, u64>;

/// Taps per emoji per window: what one batch contributes.
pub type WindowCounts = BTreeMap<WindowKey, EmojiCounts>;

/// Sum of every emoji's count.
pub fn total(counts: &EmojiCounts) -> u64 {
    counts.values().sum()
}

/// Counts a batch of reactions into per-window, per-emoji totals. Windows are closed under
/// addition, so counting a batch in parts and merging gives the same result as counting it whole.
pub fn count_batch<'a>(
    reactions: impl IntoIterator<Item = &'a Reaction>,
    width: WindowWidth,
) -> WindowCounts {
    let mut windows = WindowCounts::new();
    for reaction in reactions {
        let key = WindowKey::containing(reaction.stream.clone(), reaction.at_ms, width);
        *windows
            .entry(key)
            .or_default()
            .entry(reaction.emoji.clone())
            .or_default() += u64::from(reaction.count);
    }
    windows
}

/// Adds `more` into `into`.
pub fn merge(into: &mut WindowCounts, more: WindowCounts) {
    for (key, counts) in more {
        let target = into.entry(key).or_default();
        for (emoji, n) in counts {
            *target.entry(emoji).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::UserId;
    use proptest::prelude::*;

    fn reaction(stream: &str, emoji: &str, count: u32, at_ms: i64) -> Reaction {
        Reaction {
            stream: StreamId::parse("s", stream).unwrap(),
            user: UserId::parse("u", "viewer").unwrap(),
            emoji: EmojiName::parse(emoji).unwrap(),
            count,
            at_ms,
            key: None,
            fair_use_limit: None,
        }
    }

    #[test]
    fn the_last_window_of_time_ends_at_the_end_of_time() {
        let width = WindowWidth::DEFAULT;
        let last = WindowKey::containing(StreamId::parse("s", "s").unwrap(), i64::MAX, width);
        assert!(last.start_ms > i64::MAX - width.millis());
        assert_eq!(last.end_ms(width), i64::MAX);
        let first = WindowKey::containing(StreamId::parse("s", "s").unwrap(), i64::MIN, width);
        assert_eq!(first.end_ms(width), first.start_ms + width.millis());
    }

    #[test]
    fn windows_tumble_on_width_boundaries() {
        let w = WindowWidth::DEFAULT;
        assert_eq!(w.start_of(0), 0);
        assert_eq!(w.start_of(1_999), 0);
        assert_eq!(w.start_of(2_000), 2_000);
        assert_eq!(w.start_of(-1), -2_000);
        let key = WindowKey::containing(StreamId::parse("s", "a").unwrap(), 5_500, w);
        assert_eq!((key.start_ms, key.end_ms(w)), (4_000, 6_000));
    }

    #[test]
    fn width_is_bounded() {
        assert!(WindowWidth::from_millis(99).is_err());
        assert!(WindowWidth::from_millis(0).is_err());
        assert!(WindowWidth::from_millis(3_600_001).is_err());
        assert_eq!(WindowWidth::from_millis(500).unwrap().millis(), 500);
    }

    #[test]
    fn a_batch_counts_per_stream_window_and_emoji() {
        let batch = [
            reaction("a", "fire", 1, 100),
            reaction("a", "fire", 3, 1_999),
            reaction("a", "clap", 2, 1_000),
            reaction("a", "fire", 1, 2_000),
            reaction("b", "fire", 5, 100),
        ];
        let windows = count_batch(&batch, WindowWidth::DEFAULT);
        assert_eq!(windows.len(), 3);
        let a0 = &windows[&WindowKey {
            stream: StreamId::parse("s", "a").unwrap(),
            start_ms: 0,
        }];
        assert_eq!(a0[&EmojiName::parse("fire").unwrap()], 4);
        assert_eq!(a0[&EmojiName::parse("clap").unwrap()], 2);
        assert_eq!(total(a0), 6);
        let grand: u64 = windows.values().map(total).sum();
        assert_eq!(grand, 12);
    }

    proptest! {
        #[test]
        fn counting_in_parts_equals_counting_whole(
            items in proptest::collection::vec((0..3u8, 0..3u8, 1..50u32, 0..20_000i64), 0..200),
            split in 0..200usize,
        ) {
            let streams = ["a", "b", "c"];
            let emojis = ["fire", "clap", "joy"];
            let batch: Vec<_> = items
                .iter()
                .map(|(s, e, c, t)| reaction(streams[*s as usize], emojis[*e as usize], *c, *t))
                .collect();
            let split = split.min(batch.len());
            let whole = count_batch(&batch, WindowWidth::DEFAULT);
            let mut parts = count_batch(&batch[..split], WindowWidth::DEFAULT);
            merge(&mut parts, count_batch(&batch[split..], WindowWidth::DEFAULT));
            prop_assert_eq!(&whole, &parts);
            let expected: u64 = items.iter().map(|(_, _, c, _)| u64::from(*c)).sum();
            prop_assert_eq!(whole.values().map(total).sum::<u64>(), expected);
        }
    }
}
