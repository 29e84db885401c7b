//! Spreading one stream's reactions over several Kafka partitions. A hot stream keyed by its id
//! alone lands on one partition, and Lambda runs one invocation per partition at a time, so one
//! partition's drain rate would cap the stream. With `STREAM_SHARDS` = n, a reaction's key is
//! the stream id for shard 0 and `stream#k` for shard k, the shard picked from the viewer id:
//! a viewer's reactions stay in order on one partition, shard 0 keeps the key of an unsharded
//! stream, and the counts stay exact because every window document keeps its applied offsets
//! per partition.

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

    /// The shard of `user`'s reactions: a stable hash (FNV-1a), the same in every process and
    /// release, so a viewer's reactions always share a key.
    pub fn shard_of(self, user: &UserId) -> u16 {
        if self.0 == 1 {
            return 0;
        }
        let hash = user
            .as_str()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            });
        (hash % u64::from(self.0)) as u16
    }

    /// The Kafka key of `user`'s reactions to `stream`.
    pub fn key(self, stream: &StreamId, user: &UserId) -> String {
        match self.shard_of(user) {
            0 => stream.as_str().to_owned(),
            shard => format!("{}#{shard}", stream.as_str()),
        }
    }
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
    fn the_hash_is_fixed_across_releases() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; changing the hash would move viewers' keys.
        assert_eq!(
            StreamShards::new(1000).shard_of(&user("a")),
            (0xaf63_dc4c_8601_ec8c_u64 % 256) as u16
        );
        assert_eq!(StreamShards::new(0).get(), 1);
    }
}
