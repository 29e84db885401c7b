//! The emostream domain, shared by every function: what a reaction is, how it is validated,
//! how reactions fall into tumbling windows, how counts are downscaled into a swarm, and the
//! Kafka message formats that carry them. The `kafka` and `mongo` features add the adapters
//! to the real backends; the domain itself never touches the network.

pub mod clock;
pub mod config;
pub mod emoji;
pub mod event_channel;
pub mod event_time;
pub mod fair_use;
pub mod idempotency;
pub mod ids;
pub mod kafka_event;
pub mod message;
pub mod metrics;
pub mod moments;
pub mod reaction;
pub mod replay;
pub mod stream_registry;
pub mod stream_shards;
pub mod swarm;
pub mod telemetry;
pub mod topic_generation;
pub mod validation;
pub mod viewer_state;
pub mod window;
pub mod window_delta;

#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mongo")]
pub mod mongo;
#[cfg(feature = "kafka")]
pub mod msk_iam;
#[cfg(feature = "secrets")]
pub mod secrets;
#[cfg(feature = "sigv4")]
pub mod sigv4;
#[cfg(feature = "identity")]
pub mod viewer_identity;

pub use config::{ConfigError, DomainConfig};
pub use emoji::{Emoji, EmojiCatalogue, EmojiName};
pub use ids::{StreamId, UserId};
pub use kafka_event::{DecodedRecord, RecordPosition, decode_kafka_event};
pub use message::{MomentRecord, ReactionRecord, RecordError, WindowStateRecord};
pub use reaction::{Catalogues, RawReaction, Reaction, ReactionLimits, validate_batch};
pub use stream_registry::{StreamEntry, StreamStatus};
pub use stream_shards::StreamShards;
pub use swarm::SwarmRule;
pub use validation::{Rule, ValidationError};
pub use window::{EmojiCounts, WindowCounts, WindowKey, WindowWidth, count_batch};
