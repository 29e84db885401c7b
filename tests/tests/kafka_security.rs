//! The producer's TLS, MSK IAM and SASL/SCRAM modes, as far as they can be exercised without
//! a secured cluster: an IAM producer signs a token with the environment's credentials before
//! it connects (librdkafka asks at start-up), and against a plaintext broker every mode fails
//! within its timeout instead of hanging. One test in its own process, because it sets AWS credentials in the
//! environment, where Lambda puts them.

use emostream_tests::patience::assert_bounded;
use emostream_tests::servers;
use reactions::kafka::{AckedProducer, KafkaSecurity, KafkaSettings, OutgoingRecord};
use std::time::Duration;

/// The produce timeout each secure producer is given.
const TIMEOUT: Duration = Duration::from_millis(1_500);

#[tokio::test]
async fn iam_producers_sign_tokens_and_secure_modes_fail_cleanly_on_a_plaintext_broker() {
    // SAFETY: this test binary has only this test, so nothing reads the environment meanwhile.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDLOCALTEST");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "local-secret");
        std::env::set_var("AWS_SESSION_TOKEN", "local-session");
    }
    let brokers = &servers().kafka_brokers;
    let record = [OutgoingRecord::new("k", b"v".to_vec())];
    for security in [
        KafkaSecurity::MskIam {
            region: "eu-west-1".into(),
        },
        KafkaSecurity::Tls { ca_pem: None },
        KafkaSecurity::Scram {
            mechanism: "SCRAM-SHA-512",
            username: "emostream".into(),
            password: "local-password".into(),
            ca_pem: None,
        },
    ] {
        let settings = KafkaSettings {
            security: security.clone(),
            ..KafkaSettings::new(brokers.as_str(), "security-test")
        };
        let producer =
            AckedProducer::new(&settings, TIMEOUT).unwrap_or_else(|e| panic!("{security:?}: {e}"));
        let started = std::time::Instant::now();
        let result = producer
            .produce_all("security-test", &record, TIMEOUT)
            .await;
        assert!(
            result.is_err(),
            "{security:?}: a plaintext broker cannot accept this"
        );
        assert_bounded(
            started.elapsed(),
            TIMEOUT,
            &format!("{security:?} against a plaintext broker"),
        );
        let tokens = producer.context().tokens_issued();
        match security {
            KafkaSecurity::MskIam { .. } => assert!(tokens >= 1, "no MSK IAM token was signed"),
            _ => assert_eq!(tokens, 0),
        }
    }
}
