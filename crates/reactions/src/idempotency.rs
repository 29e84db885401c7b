//! Retry-safe taps: a client may send an `Idempotency-Key` with each `POST /reactions`, and a
//! retried request with the same key is counted once, whatever became of the first attempt
//! (accepted, 503 with part of it produced, a timeout, a reset connection).
//!
//! ingest stamps each reaction with the key's id, its index in the request and a fingerprint
//! of the whole request; the retry's records are new Kafka records (new offsets, a new `at_ms`).
//! aggregate remembers the viewer's most recent keys on the stream, with the items of each
//! already counted, in the viewer's state beside fair use's counts (see `viewer_state`): the
//! same document, read by the same `find` and written by the same statement, so keys cost no
//! round trip and no statement when fair use is on. A redelivered or overlapping batch is exact
//! for the same reason fair use is. A viewer's reactions to a stream share one Kafka key, hence
//! one partition: whichever of two attempts' records comes first in it is counted, and the
//! other's items are skipped (an attempt given up by ingest may still land after its retry).
//!
//! A key reused with a different body is refused: by ingest with 422 when the first use is
//! already counted, and by aggregate (dead letter `idempotency_key_reused`) when the two race.

use crate::kafka_event::RecordPosition;
use crate::reaction::Reaction;
use crate::validation::{Rule, ValidationError};
use crate::viewer_state::{StateChanges, ViewerState, in_offset_order};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::BTreeMap;
use std::time::Duration;

/// The request header, as the IETF draft "The Idempotency-Key HTTP Header Field" names it.
pub const HEADER: &str = "Idempotency-Key";

/// Longest key accepted, in characters (the draft leaves it to the server; Stripe takes 255).
pub const MAX_KEY_LEN: usize = 255;

/// How many of a viewer's most recent keys per stream are remembered (a key used again is
/// recent again). A retry of an older key would be counted again, so this bounds how far
/// behind a client's retries may fall: the page and the load generator keep one request in
/// flight and retry it before sending the next, so a viewer needs one per tab; 16 leaves room
/// for several tabs and for clients that pipeline.
pub const REMEMBERED_KEYS: usize = 16;

/// How long a viewer's keys on a stream are kept after the viewer's state there was last
/// written (any keyed tap; with fair use on, any tap): the document's expiry. The IETF draft
/// and Stripe keep keys for 24 hours. A client retrying later than that, or after
/// [`REMEMBERED_KEYS`] newer requests, is counted again.
pub const KEY_MEMORY: Duration = Duration::from_secs(24 * 3_600);

/// The most items a keyed request may have (its records' `item` is below this): bounds the
/// bitset a key keeps of its items counted (8 KiB at most). ingest refuses a keyed request with
/// more (`MAX_BATCH_SIZE` is 500 by default).
pub const MAX_KEYED_ITEMS: u32 = 65_536;

/// The reason code of a record dead-lettered because its key was used for another body.
pub const KEY_REUSED: &str = "idempotency_key_reused";

const KEY_CHARSET: &str = "visible ASCII (33 to 126), without '\"' and '\\'";

/// A request's key as the client sent it, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Reads the header's value: a structured-field string (`"…"`, as the draft specifies) or,
    /// leniently, the same characters unquoted (how most clients send a UUID).
    pub fn parse(value: &[u8]) -> Result<Self, ValidationError> {
        let invalid = |rule| ValidationError::new(HEADER, rule);
        let text = std::str::from_utf8(value).map_err(|_| {
            invalid(Rule::BadCharset {
                allowed: KEY_CHARSET,
            })
        })?;
        let text = text.trim();
        let inner = match text.strip_prefix('"') {
            Some(rest) => rest.strip_suffix('"').ok_or_else(|| {
                invalid(Rule::BadCharset {
                    allowed: KEY_CHARSET,
                })
            })?,
            None => text,
        };
        if inner.is_empty() {
            return Err(invalid(Rule::Empty));
        }
        if inner.chars().count() > MAX_KEY_LEN {
            return Err(invalid(Rule::TooLong { max: MAX_KEY_LEN }));
        }
        if !inner
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        {
            return Err(invalid(Rule::BadCharset {
                allowed: KEY_CHARSET,
            }));
        }
        Ok(Self(inner.to_owned()))
    }

    /// The key as sent (without quotes).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What records and the stored state carry instead of the key: 64 bits of its SHA-256.
    /// Two of a viewer's [`REMEMBERED_KEYS`] colliding is a 2^-64 chance.
    pub fn id(&self) -> i64 {
        digest_i64([self.0.as_bytes()])
    }
}

fn digest_i64<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> i64 {
    let mut hasher = sha2::Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// What a reaction carries of its request's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TapKey {
    /// [`IdempotencyKey::id`].
    pub key: i64,
    /// The reaction's index in its request.
    pub item: u32,
    /// [`body_fingerprint`] of the whole request.
    pub body: i64,
}

/// A fingerprint of a request's validated reactions in order (stream, viewer, emoji, count;
/// not the time), so a retry of the same taps matches whatever its JSON spacing, field order
/// or emoji spelling (`👏` or `clap`), and any other change does not.
pub fn body_fingerprint(reactions: &[Reaction]) -> i64 {
    let counts: Vec<[u8; 4]> = reactions.iter().map(|r| r.count.to_be_bytes()).collect();
    digest_i64(reactions.iter().zip(&counts).flat_map(|(r, count)| {
        [
            r.stream.as_str().as_bytes(),
            r.user.as_str().as_bytes(),
            r.emoji.as_str().as_bytes(),
            count.as_slice(),
        ]
    }))
}

/// Stamps every reaction of one request with `key`, its index and the request's fingerprint;
/// refuses (naming the header) a request of more than [`MAX_KEYED_ITEMS`] reactions.
pub fn stamp(reactions: &mut [Reaction], key: &IdempotencyKey) -> Result<(), ValidationError> {
    let max = MAX_KEYED_ITEMS as usize;
    if reactions.len() > max {
        let rule = Rule::BatchTooLarge {
            max,
            len: reactions.len(),
        };
        return Err(ValidationError::new(HEADER, rule));
    }
    let body = body_fingerprint(reactions);
    let key = key.id();
    for (index, reaction) in reactions.iter_mut().enumerate() {
        reaction.key = Some(TapKey {
            key,
            item: u32::try_from(index).unwrap_or(u32::MAX),
            body,
        });
    }
    Ok(())
}

/// A request whose key a viewer used, and which of its items are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenKey {
    pub key: i64,
    pub body: i64,
    /// A bitset of the items counted (bit `i % 8` of byte `i / 8`).
    pub items: Vec<u8>,
}

impl SeenKey {
    fn has(&self, item: u32) -> bool {
        let (byte, bit) = (item as usize / 8, item % 8);
        self.items.get(byte).is_some_and(|b| b & (1 << bit) != 0)
    }

    fn set(&mut self, item: u32) {
        let (byte, bit) = (item as usize / 8, item % 8);
        if self.items.len() <= byte {
            self.items.resize(byte + 1, 0);
        }
        self.items[byte] |= 1 << bit;
    }
}

/// Whether `state` holds `key` used for a request other than the one fingerprinted `body`.
pub fn reused_for_another_body(state: &ViewerState, key: i64, body: i64) -> bool {
    state
        .keys
        .iter()
        .any(|seen| seen.key == key && seen.body != body)
}

/// A batch with retries taken out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deduplicated {
    /// The reactions to count. A retried reaction, and one a stored state already accounts for,
    /// stays with a count of 0: it adds nothing but moves its window's offsets like any other.
    pub reactions: Vec<(RecordPosition, Reaction)>,
    /// The viewer states whose keys the batch changed.
    pub changes: StateChanges,
    /// Taps of retried requests already counted, not counted again.
    pub retried_taps: u64,
    /// Reactions whose key an earlier request used with another body: to dead-letter.
    pub reused: Vec<(RecordPosition, Reaction)>,
}

/// Takes out of `reactions` (one batch, any order) the items of retried requests already
/// counted, given the `stored` viewer states by id, in offset order.
pub fn skip_retries(
    mut reactions: Vec<(RecordPosition, Reaction)>,
    stored: &BTreeMap<String, ViewerState>,
) -> Deduplicated {
    in_offset_order(&mut reactions);
    let mut out = Deduplicated::default();
    for (position, mut reaction) in reactions {
        let Some(tap) = reaction.key else {
            out.reactions.push((position, reaction));
            continue;
        };
        let Some(state) = out.changes.deciding(&position, &reaction, stored) else {
            // Counted, skipped or dead-lettered by an earlier delivery of this record.
            reaction.count = 0;
            out.reactions.push((position, reaction));
            continue;
        };
        let keys = &mut state.keys;
        match keys.iter().position(|seen| seen.key == tap.key) {
            Some(at) if keys[at].body != tap.body => {
                out.reused.push((position, reaction));
                continue;
            }
            Some(at) => {
                // A key used again is recent again: a client still retrying it keeps it.
                let mut seen = keys.remove(at);
                if seen.has(tap.item) {
                    out.retried_taps += u64::from(reaction.count);
                    reaction.count = 0;
                } else {
                    seen.set(tap.item);
                }
                keys.push(seen);
            }
            None => {
                let mut seen = SeenKey {
                    key: tap.key,
                    body: tap.body,
                    items: Vec::new(),
                };
                seen.set(tap.item);
                keys.push(seen);
                let excess = keys.len().saturating_sub(REMEMBERED_KEYS);
                keys.drain(..excess);
            }
        }
        out.reactions.push((position, reaction));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emoji::EmojiName;
    use crate::ids::{StreamId, UserId};
    use crate::viewer_state::viewer_state_id;
    use proptest::prelude::*;

    fn key(text: &str) -> IdempotencyKey {
        IdempotencyKey::parse(text.as_bytes()).unwrap()
    }

    fn request(user: &str, emojis: &[(&str, u32)], with: &str) -> Vec<Reaction> {
        let mut reactions: Vec<Reaction> = emojis
            .iter()
            .map(|(emoji, count)| Reaction {
                stream: StreamId::parse("s", "match").unwrap(),
                user: UserId::parse("u", user).unwrap(),
                emoji: EmojiName::parse(emoji).unwrap(),
                count: *count,
                at_ms: 0,
                key: None,
                fair_use_limit: None,
            })
            .collect();
        stamp(&mut reactions, &key(with)).unwrap();
        reactions
    }

    fn at(
        offsets: std::ops::RangeFrom<i64>,
        reactions: Vec<Reaction>,
    ) -> Vec<(RecordPosition, Reaction)> {
        offsets
            .zip(reactions)
            .map(|(offset, reaction)| {
                let position = RecordPosition {
                    topic: "reactions".into(),
                    partition: 0,
                    offset,
                    generation: 0,
                };
                (position, reaction)
            })
            .collect()
    }

    /// Stores what `done` changed, as aggregate does (with fair use off).
    fn store(stored: &mut BTreeMap<String, ViewerState>, done: &Deduplicated) {
        let writes =
            crate::viewer_state::writes(stored, done.changes.clone(), StateChanges::default());
        crate::viewer_state::store(stored, &writes);
    }

    fn counts(reactions: &[(RecordPosition, Reaction)]) -> Vec<u32> {
        reactions.iter().map(|(_, r)| r.count).collect()
    }

    #[test]
    fn keys_are_quoted_or_bare_visible_ascii() {
        assert_eq!(key("\"a1:7\"").as_str(), "a1:7");
        assert_eq!(key(" 3f2c-11ee ").as_str(), "3f2c-11ee");
        let rule = |value: &str| IdempotencyKey::parse(value.as_bytes()).unwrap_err().rule;
        assert_eq!(rule(""), Rule::Empty);
        assert_eq!(rule("\"\""), Rule::Empty);
        assert_eq!(rule(&"k".repeat(256)), Rule::TooLong { max: MAX_KEY_LEN });
        assert!(matches!(rule("\"open"), Rule::BadCharset { .. }));
        assert!(matches!(rule("two words"), Rule::BadCharset { .. }));
        assert!(matches!(rule("é"), Rule::BadCharset { .. }));
        let field = IdempotencyKey::parse(b"").unwrap_err().field;
        assert_eq!(field, HEADER);
        assert_ne!(key("a").id(), key("b").id());
        assert_eq!(key("\"a\"").id(), key("a").id());
    }

    #[test]
    fn the_fingerprint_covers_every_item_in_order_but_not_the_time() {
        let one = request("v", &[("fire", 2), ("clap", 1)], "k");
        let mut later = one.clone();
        later.iter_mut().for_each(|r| r.at_ms = 99);
        assert_eq!(body_fingerprint(&one), body_fingerprint(&later));
        let swapped = request("v", &[("clap", 1), ("fire", 2)], "k");
        let more = request("v", &[("fire", 3), ("clap", 1)], "k");
        let other_viewer = request("w", &[("fire", 2), ("clap", 1)], "k");
        for other in [&swapped, &more, &other_viewer] {
            assert_ne!(body_fingerprint(&one), body_fingerprint(other));
        }
        assert_eq!(one[1].key.unwrap().item, 1);
        // A keyed request's items are bounded (their bitset would grow with them).
        let mut huge = vec![one[0].clone(); MAX_KEYED_ITEMS as usize + 1];
        let refused = stamp(&mut huge, &key("k")).unwrap_err();
        assert_eq!(refused.field, HEADER);
        assert!(matches!(refused.rule, Rule::BatchTooLarge { .. }));
    }

    #[test]
    fn a_retry_counts_only_the_items_its_first_attempt_did_not_deliver() {
        let mut stored = BTreeMap::new();
        let first = request("v", &[("fire", 2), ("clap", 1), ("joy", 4)], "s:1");
        // The first attempt delivered items 0 and 2 only; the retry delivers all three.
        let delivered = vec![first[0].clone(), first[2].clone()];
        let batch = at(0.., delivered);
        let done = skip_retries(batch, &stored);
        assert_eq!(counts(&done.reactions), [2, 4]);
        store(&mut stored, &done);
        let retry = skip_retries(at(2.., first.clone()), &stored);
        assert_eq!(counts(&retry.reactions), [0, 1, 0]);
        assert_eq!(retry.retried_taps, 6);
        store(&mut stored, &retry);
        // The whole log redelivered from the start changes nothing.
        let mut log = at(0.., vec![first[0].clone(), first[2].clone()]);
        log.extend(at(2.., first));
        let again = skip_retries(log, &stored);
        assert!(again.reactions.iter().all(|(_, r)| r.count == 0));
        assert!(again.changes.offsets.is_empty());
    }

    #[test]
    fn a_key_used_for_another_body_is_set_aside_and_unkeyed_taps_pass() {
        let mut reactions = at(0.., request("v", &[("fire", 2)], "k"));
        reactions.extend(at(1.., request("v", &[("fire", 5)], "k")));
        let mut plain = request("v", &[("fire", 7)], "x");
        plain[0].key = None;
        reactions.extend(at(2.., plain));
        let done = skip_retries(reactions, &BTreeMap::new());
        assert_eq!(counts(&done.reactions), [2, 7]);
        assert_eq!(done.reused.len(), 1);
        assert_eq!(done.reused[0].0.offset, 1);
        let mut stored = BTreeMap::new();
        store(&mut stored, &done);
        let state =
            &stored[&viewer_state_id(&done.reactions[0].1.stream, &done.reactions[0].1.user)];
        let first = done.reactions[0].1.key.unwrap();
        assert!(reused_for_another_body(state, first.key, first.body ^ 1));
        assert!(!reused_for_another_body(state, first.key, first.body));
    }

    #[test]
    fn only_the_most_recent_keys_are_remembered_and_a_key_used_again_is_recent() {
        let mut log = Vec::new();
        for n in 0..REMEMBERED_KEYS {
            log.extend(request("v", &[("fire", 1)], &format!("s:{n}")));
        }
        // The oldest key is sent again (a retry still going on), then one more new key comes.
        log.extend(request("v", &[("fire", 1)], "s:0"));
        log.extend(request(
            "v",
            &[("fire", 1)],
            &format!("s:{REMEMBERED_KEYS}"),
        ));
        let done = skip_retries(at(0.., log), &BTreeMap::new());
        assert_eq!(done.changes.states.len(), 1);
        let keys = &done.changes.states["match/v"].keys;
        assert_eq!(keys.len(), REMEMBERED_KEYS);
        assert_eq!(keys[0].key, key("s:2").id(), "s:1 was the least recent");
        assert!(keys.iter().any(|seen| seen.key == key("s:0").id()));
        assert_eq!(done.retried_taps, 1);
    }

    proptest! {
        /// However retries interleave with other requests and however the log is cut into
        /// batches or redelivered, each request's items count once: the taps counted are those
        /// of the distinct requests.
        #[test]
        fn every_request_counts_once_however_retried_and_redelivered(
            requests in proptest::collection::vec(
                (0usize..2, proptest::collection::vec(1u32..9, 1..4)), 1..12),
            sends in proptest::collection::vec((0usize..12, any::<bool>()), 1..40),
            cuts in proptest::collection::vec(1usize..6, 1..10),
            redeliver in proptest::collection::vec(any::<bool>(), 10),
        ) {
            // Each request is sent once, then retried as `sends` says, whole or its first item.
            let bodies: Vec<Vec<Reaction>> = requests
                .iter()
                .enumerate()
                .map(|(n, (viewer, counts))| {
                    let emojis: Vec<(&str, u32)> = counts.iter().map(|c| ("fire", *c)).collect();
                    request(&format!("v{viewer}"), &emojis, &format!("s:{n}"))
                })
                .collect();
            let mut log: Vec<Reaction> = bodies.iter().flatten().cloned().collect();
            for (which, partial) in &sends {
                let body = &bodies[which % bodies.len()];
                let items = if *partial { &body[..1] } else { &body[..] };
                log.extend(items.iter().cloned());
            }
            let expected: u64 = bodies.iter().flatten().map(|r| u64::from(r.count)).sum();
            let log = at(0.., log);
            let mut stored = BTreeMap::new();
            let mut window_offset = -1;
            let mut counted = 0u64;
            let (mut start, mut round, mut redelivery) = (0, 0, false);
            while start < log.len() {
                let end = (start + cuts[round % cuts.len()]).min(log.len());
                let done = skip_retries(log[start..end].to_vec(), &stored);
                prop_assert!(done.reused.is_empty());
                for (position, reaction) in &done.reactions {
                    if position.offset > window_offset {
                        window_offset = position.offset;
                        counted += u64::from(reaction.count);
                    }
                }
                round += 1;
                // A batch crashes at most once before its states are written, then comes again.
                redelivery = !redelivery && redeliver[round % redeliver.len()];
                if redelivery {
                    continue;
                }
                store(&mut stored, &done);
                start = end;
            }
            prop_assert_eq!(counted, expected);
        }
    }
}
