//! Viewers: each taps at its share of the profile's rate and, like the web page, sends what it
//! tapped as one `POST /reactions` every batching interval, each viewer on its own phase.

use crate::report::Sent;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use rand::Rng;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

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

/// The outcome of one request.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sent: Sent,
    /// HTTP status, or 0 when the request failed without an answer.
    pub status: u16,
    pub latency_ms: f64,
    pub batch: Batch,
}

/// Sends one batch; never fails (a failure is an outcome).
pub async fn send(
    client: Arc<Client<HttpConnector, Full<Bytes>>>,
    api: Arc<String>,
    batch: Batch,
    started: Instant,
) -> Outcome {
    let at = Instant::now();
    let body = batch.body().to_string();
    let mut request =
        hyper::Request::post(format!("{api}/reactions")).header("content-type", "application/json");
    if let Some(token) = &batch.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(Full::new(Bytes::from(body)));
    let status = match request {
        Ok(request) => match client.request(request).await {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the body so the connection can be reused.
                response.into_body().collect().await.ok();
                status
            }
            Err(_) => 0,
        },
        Err(_) => 0,
    };
    Outcome {
        sent: Sent {
            stream: batch.stream,
            at_ms: at.duration_since(started).as_secs_f64() * 1_000.0,
            taps: batch.total(),
        },
        status,
        latency_ms: at.elapsed().as_secs_f64() * 1_000.0,
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
