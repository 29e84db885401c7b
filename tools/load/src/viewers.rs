//! Viewers: each taps at its share of the profile's rate and, like the web page, sends what it
//! tapped as one `POST /reactions` every batching interval, each viewer on its own phase. Like
//! the page, every request carries an idempotency key (the viewer's session and a sequence
//! number), a request not accepted is sent again with the same key and body, and a viewer sends
//! nothing new while a request of its own is unanswered.

use crate::report::Sent;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Emojis and how often viewers pick them.
pub const EMOJIS: [(&str, u32); 6] = [
    ("fire", 30),
    ("clap", 25),
    ("cricket", 15),
    ("party", 12),
    ("joy", 10),
    ("wow", 8),
];

/// One viewer's batch.
#[derive(Debug, Clone)]
pub struct Batch {
    pub stream: usize,
    pub stream_id: String,
    pub user_id: String,
    pub taps: BTreeMap<&'static str, u64>,
    /// The viewer's bearer token, when viewer identity is on.
    pub token: Option<Arc<str>>,
    /// Which viewer of the run sends it.
    pub viewer: usize,
    /// The request's `Idempotency-Key`: `<session>:<sequence>`, as the page sends it.
    pub key: String,
}

impl Batch {
    /// The request body: one reaction per emoji with its count (at most 100 each).
    pub fn body(&self) -> serde_json::Value {
        let mut reactions = Vec::new();
        for (emoji, taps) in &self.taps {
            let mut left = *taps;
            while left > 0 {
                let count = left.min(100);
                reactions.push(serde_json::json!({
                    "stream_id": self.stream_id,
                    "user_id": self.user_id,
                    "emoji": emoji,
                    "count": count,
                }));
                left -= count;
            }
        }
        serde_json::json!({ "reactions": reactions })
    }

    pub fn total(&self) -> u64 {
        self.taps.values().sum()
    }
}

/// Picks `taps` emojis by their weights.
pub fn pick_emojis(taps: u64, rng: &mut impl Rng) -> BTreeMap<&'static str, u64> {
    let total: u32 = EMOJIS.iter().map(|(_, w)| w).sum();
    let mut picked = BTreeMap::new();
    for _ in 0..taps {
        let mut roll = rng.random_range(0..total);
        for (emoji, weight) in EMOJIS {
            if roll < weight {
                *picked.entry(emoji).or_insert(0) += 1;
                break;
            }
            roll -= weight;
        }
    }
    picked
}

/// The outcome of one request, after its retries.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sent: Sent,
    /// The last HTTP status, or 0 when the last attempt failed without an answer.
    pub status: u16,
    /// From the first attempt to the last answer.
    pub latency_ms: f64,
    /// Times the request was sent.
    pub attempts: u32,
    /// When attempts were answered with a 5xx other than 503, ms since the epoch.
    pub answers_5xx_not_503_at_ms: Vec<i64>,
    pub batch: Batch,
}

/// How long one attempt may take before it counts as unanswered (API Gateway's own integration
/// timeout is 30 s).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// How a viewer sends a request again that was not accepted (no answer, 429 or 5xx), like the
/// page: the same key and body, every `every`, while the first attempt is less than `for_at_most`
/// ago.
#[derive(Debug, Clone, Copy)]
pub struct Retries {
    pub every: Duration,
    pub for_at_most: Duration,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn attempt(client: &HttpClient, api: &str, batch: &Batch, body: &str) -> u16 {
    let mut request = hyper::Request::post(format!("{api}/reactions"))
        .header("content-type", "application/json")
        .header("idempotency-key", batch.key.as_str());
    if let Some(token) = &batch.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let Ok(request) = request.body(Full::new(Bytes::from(body.to_owned()))) else {
        return 0;
    };
    match client.request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            // Read the body so the connection can be reused.
            response.into_body().collect().await.ok();
            status
        }
        Err(_) => 0,
    }
}

/// Sends one batch, retried as `retries` says, each attempt holding one of the `in_flight`
/// permits; never fails (a failure is an outcome).
pub async fn send(
    client: Arc<HttpClient>,
    api: Arc<String>,
    batch: Batch,
    started: Instant,
    retries: Retries,
    in_flight: Arc<tokio::sync::Semaphore>,
) -> Outcome {
    let at = Instant::now();
    let body = batch.body().to_string();
    let mut attempts = 0;
    let mut answers_5xx_not_503_at_ms = Vec::new();
    let status = loop {
        attempts += 1;
        let status = match in_flight.acquire().await {
            Ok(_permit) => {
                tokio::time::timeout(ATTEMPT_TIMEOUT, attempt(&client, &api, &batch, &body))
                    .await
                    .unwrap_or(0)
            }
            Err(_) => 0,
        };
        if status >= 500 && status != 503 {
            answers_5xx_not_503_at_ms.push(reactions::clock::now_ms());
        }
        let retryable = status == 0 || status == 429 || status >= 500;
        if !retryable || at.elapsed() + retries.every > retries.for_at_most {
            break status;
        }
        tokio::time::sleep(retries.every).await;
    };
    Outcome {
        sent: Sent {
            stream: batch.stream,
            at_ms: at.duration_since(started).as_secs_f64() * 1_000.0,
            taps: batch.total(),
        },
        status,
        latency_ms: at.elapsed().as_secs_f64() * 1_000.0,
        attempts,
        answers_5xx_not_503_at_ms,
        batch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn batches_carry_every_tap_with_counts_of_at_most_100() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let taps = pick_emojis(1_000, &mut rng);
        assert_eq!(taps.values().sum::<u64>(), 1_000);
        assert!(taps["fire"] > taps["wow"]);
        let batch = Batch {
            stream: 0,
            stream_id: "s".into(),
            user_id: "u".into(),
            taps: BTreeMap::from([("fire", 250), ("clap", 3)]),
            token: None,
            viewer: 0,
            key: "s:1".into(),
        };
        let body = batch.body();
        let counts: Vec<u64> = body["reactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["count"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, [3, 100, 100, 50]);
        assert_eq!(batch.total(), 253);
    }
}
