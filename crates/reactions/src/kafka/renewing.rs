//! A producer that replaces itself after a fatal error. librdkafka's idempotent producer turns
//! fatal when the broker lost its sequence state (a broker restarted or replaced, a partition's
//! leader moved with unreplicated state: `OutOfOrderSequenceNumber`), and from then on fails
//! every record: a warm container would fail every request or batch until Lambda recycled it.
//! The functions hold this instead and produce through [`RenewingProducer::produce_all`], which
//! replaces a producer that turned fatal.

use super::{AckedProducer, Delivered, KafkaAdapterError, KafkaSettings, OutgoingRecord};
use std::sync::RwLock;
use std::time::Duration;

/// The function's producer, built again after a fatal error.
pub struct RenewingProducer {
    settings: KafkaSettings,
    delivery_timeout: Duration,
    linger: Duration,
    /// The topic a new producer warms up on (see [`AckedProducer::start_warm_up`]).
    warm_up_topic: Option<String>,
    current: RwLock<AckedProducer>,
}

impl RenewingProducer {
    /// Builds the first producer (see [`AckedProducer::with_linger`]).
    pub fn new(
        settings: &KafkaSettings,
        delivery_timeout: Duration,
        linger: Duration,
    ) -> Result<Self, KafkaAdapterError> {
        Ok(Self {
            current: RwLock::new(AckedProducer::with_linger(
                settings,
                delivery_timeout,
                linger,
            )?),
            settings: settings.clone(),
            delivery_timeout,
            linger,
            warm_up_topic: None,
        })
    }

    /// Each replacement warms up on `topic` in the background (see
    /// [`RenewingProducer::start_warm_up`]), so the request or batch after it does not pay for
    /// the connection and the topic's metadata.
    pub fn warming_up_on(mut self, topic: &str) -> Self {
        self.warm_up_topic = Some(topic.to_owned());
        self
    }

    /// Starts connecting the current producer and reading the warm-up topic's metadata in the
    /// background (see [`AckedProducer::start_warm_up`]); nothing without a warm-up topic.
    pub fn start_warm_up(&self) {
        self.warm_up(&self.current());
    }

    fn warm_up(&self, producer: &AckedProducer) {
        if let Some(topic) = &self.warm_up_topic {
            producer.start_warm_up(topic, self.delivery_timeout);
        }
    }

    /// The producer to use now (a cheap handle; one replaced meanwhile finishes what it has).
    pub fn current(&self) -> AckedProducer {
        match self.current.read() {
            Ok(producer) => producer.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// [`AckedProducer::produce_all`] with `producer` (one [`RenewingProducer::current`] gave,
    /// so that what was read with it, a partition count, goes with the records); when the
    /// produce fails because the producer turned fatal, it is replaced for the next caller (a
    /// replacement that cannot be built is logged, and tried again after the next failure).
    pub async fn produce_all(
        &self,
        producer: &AckedProducer,
        topic: &str,
        records: &[OutgoingRecord],
        deadline: Duration,
    ) -> Result<Vec<Delivered>, KafkaAdapterError> {
        let produced = producer.produce_all(topic, records, deadline).await;
        if produced.is_err()
            && let Err(error) = self.renew_if_fatal(producer)
        {
            tracing::error!(%error, "building a new Kafka producer failed");
        }
        produced
    }

    /// After a failed produce with `used`: when it hit a fatal error, it is replaced by a new
    /// producer (unless another caller replaced it already). Returns whether it was.
    pub fn renew_if_fatal(&self, used: &AckedProducer) -> Result<bool, KafkaAdapterError> {
        let Some(fatal) = used.fatal_error() else {
            return Ok(false);
        };
        let mut slot = match self.current.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if slot.fatal_error().is_none() {
            return Ok(false); // replaced by another caller since
        }
        tracing::error!(
            fatal,
            "Kafka producer hit a fatal error; building a new one"
        );
        *slot = AckedProducer::with_linger(&self.settings, self.delivery_timeout, self.linger)?;
        self.warm_up(&slot);
        Ok(true)
    }
}
