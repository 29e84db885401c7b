//! Spreading one stream's reactions over several Kafka partitions. A hot stream keyed by its id
//! alone lands on one partition, and Lambda runs one invocation per partition at a time, so one
//! partition's drain rate would cap the stream. With `STREAM_SHARDS` = n, a reaction's key is
//! the stream id for shard 0 and `stream#k` for shard k, the shard picked from the viewer id:
//! a viewer's reactions stay in order on one partition, shard 0 keeps the key of an unsharded
//! stream, and the counts stay exact because every window document keeps its applied offsets
//! per partition. Hashing the keys alone could put several shards of a stream on one partition
//! (three keys over three partitions all share one in one case of nine), so when the topic's
//! partition count is known a sharded stream's records name their partition: consecutive
//! partitions from one that the stream id picks, n shards on min(n, partitions) partitions.

use crate::ids::{StreamId, UserId};

/// How many keys (and so, at most, partitions) one stream's reactions are spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamShards(u16);

impl StreamShards {
    /// The most shards a stream may have; far more than any topic needs.
    pub const MAX: u16 = 256;

    /// `shards` clamped to `1..=MAX`.
    pub fn new(shards: u16) -> Self {
        Self(shards.clamp(1, Self::MAX))
    }

    pub fn get(self) -> u16 {
        self.0
    }

    /// The shard of `user`'s reactions: a stable hash, the same in every process and release,
    /// so a viewer's reactions always share a key.
    pub fn shard_of(self, user: &UserId) -> u16 {
        if self.0 == 1 {
            return 0;
        }
        (stable_hash(user.as_str()) % u64::from(self.0)) as u16
    }

    /// The partition of `user`'s reactions to `stream` on a topic of `partitions` partitions,
    /// or `None` (the key's hash decides) when the stream is not sharded or the count unknown.
    pub fn partition(
        self,
        stream: &StreamId,
        user: &UserId,
        partitions: Option<i32>,
    ) -> Option<i32> {
        let partitions = u64::try_from(partitions?).ok().filter(|n| *n > 0)?;
        if self.0 == 1 {
            return None;
        }
        let first = stable_hash(stream.as_str()) % partitions;
        Some(((first + u64::from(self.shard_of(user))) % partitions) as i32)
    }

    /// The Kafka key of `user`'s reactions to `stream`.
    pub fn key(self, stream: &StreamId, user: &UserId) -> String {
        match self.shard_of(user) {
            0 => stream.as_str().to_owned(),
            shard => format!("{}#{shard}", stream.as_str()),
        }
    }
}

/// FNV-1a: fixed across processes and releases, unlike the standard library's hasher.
pub(crate) fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Default for StreamShards {
    fn default() -> Self {
        Self(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn user(id: &str) -> UserId {
        UserId::parse("user_id", id).unwrap()
    }

    #[test]
    fn one_shard_keeps_the_stream_id_as_the_key() {
        let stream = StreamId::parse("stream_id", "final").unwrap();
        for id in ["a", "viewer-17", "zzz"] {
            assert_eq!(StreamShards::new(1).key(&stream, &user(id)), "final");
        }
    }

    #[test]
    fn viewers_spread_over_every_shard_and_each_keeps_one_key() {
        let stream = StreamId::parse("stream_id", "final").unwrap();
        let shards = StreamShards::new(3);
        let keys: BTreeSet<String> = (0..300)
            .map(|i| shards.key(&stream, &user(&format!("viewer-{i}"))))
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["final".into(), "final#1".into(), "final#2".into()])
        );
        let viewer = user("viewer-42");
        assert_eq!(shards.key(&stream, &viewer), shards.key(&stream, &viewer));
    }

    #[test]
    fn a_sharded_stream_takes_consecutive_partitions_and_one_shard_keeps_key_hashing() {
        let shards = StreamShards::new(3);
        for s in 0..50 {
            let stream = StreamId::parse("stream_id", &format!("match-{s}")).unwrap();
            let partitions: BTreeSet<i32> = (0..300)
                .filter_map(|i| shards.partition(&stream, &user(&format!("viewer-{i}")), Some(3)))
                .collect();
            assert_eq!(partitions, BTreeSet::from([0, 1, 2]), "{stream:?}");
            let on_two: BTreeSet<i32> = (0..300)
                .filter_map(|i| shards.partition(&stream, &user(&format!("viewer-{i}")), Some(2)))
                .collect();
            assert_eq!(on_two, BTreeSet::from([0, 1]));
        }
        let stream = StreamId::parse("stream_id", "final").unwrap();
        assert_eq!(
            StreamShards::new(1).partition(&stream, &user("a"), Some(3)),
            None
        );
        assert_eq!(shards.partition(&stream, &user("a"), None), None);
        assert_eq!(shards.partition(&stream, &user("a"), Some(0)), None);
    }

    #[test]
    fn the_hash_is_fixed_across_releases() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; changing the hash would move viewers' keys.
        assert_eq!(
            StreamShards::new(1000).shard_of(&user("a")),
            (0xaf63_dc4c_8601_ec8c_u64 % 256) as u16
        );
        assert_eq!(StreamShards::new(0).get(), 1);
    }
}
