//! A crowd for `make demo`: simulated viewers tapping a stream through the HTTP API, as pages
//! do (one request a second each, with an idempotency key, and the demo issuer's token when
//! viewer identity is on), so the page shows a live stream with moments without anyone
//! tapping. The rate wanders around a baseline of 30 taps a second; 75 s in (past the moment
//! detector's warm-up and a minute of baseline) and then every two minutes, the crowd goes
//! wild for 10 s at five times the rate, mostly on one emoji: a scripted moment. A recording
//! crowd ends its stream after four minutes (two moments), so the demo has a finished stream
//! to replay with its heatmap.

use crate::demo_issuer::DemoIssuer;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Viewers in a crowd: each stays under fair use's 40 taps per 2 s window even in a spike.
const VIEWERS: usize = 12;
/// The crowd's usual rate, in taps per second.
const BASELINE_PER_S: f64 = 30.0;
const FIRST_SPIKE: Duration = Duration::from_secs(75);
const SPIKE_EVERY: Duration = Duration::from_secs(120);
const SPIKE_FOR: Duration = Duration::from_secs(10);
const SPIKE_FACTOR: f64 = 5.0;
/// How long a recording crowd taps before it ends its stream.
pub const RECORDING_FOR: Duration = Duration::from_secs(240);

/// What the crowd taps: the usual mix, and in a spike mostly the first (the catalogue's
/// names; the default catalogue's are used).
const USUAL: [(&str, f64); 4] = [("clap", 0.4), ("heart", 0.3), ("joy", 0.2), ("wow", 0.1)];
const SPIKE_EMOJI: &str = "fire";

/// The crowd's rate `elapsed` into its run: the baseline, wandering ±20 % over a minute and a
/// half, times five during a scripted spike. Also whether it is in a spike.
pub fn rate_at(elapsed: Duration) -> (f64, bool) {
    let t = elapsed.as_secs_f64();
    let wander = 1.0 + 0.2 * (std::f64::consts::TAU * t / 90.0).sin();
    let spiking = elapsed >= FIRST_SPIKE
        && ((elapsed - FIRST_SPIKE).as_secs_f64() % SPIKE_EVERY.as_secs_f64())
            < SPIKE_FOR.as_secs_f64();
    let factor = if spiking { SPIKE_FACTOR } else { 1.0 };
    (BASELINE_PER_S * wander * factor, spiking)
}

/// Runs a crowd on `stream` through the HTTP API at `api` until `stop_after` (forever when
/// `None`), then returns. Failed requests are logged and their taps dropped: a demo crowd, not
/// a measurement.
pub async fn run(
    api: String,
    stream: String,
    issuer: Option<Arc<DemoIssuer>>,
    stop_after: Option<Duration>,
) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let session = format!("{:x}", rand::random::<u64>());
    let mut owed = [0.0f64; VIEWERS];
    let mut sequence = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // After a stall, go on a second at a time: a burst of missed ticks would put a viewer's
    // taps of several seconds into one window, past fair use's limit.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        if stop_after.is_some_and(|stop| elapsed >= stop) {
            return;
        }
        let (rate, spiking) = rate_at(elapsed);
        for (viewer, owed) in owed.iter_mut().enumerate() {
            *owed += rate / VIEWERS as f64;
            let taps = owed.floor() as u32;
            *owed -= f64::from(taps);
            if taps == 0 {
                continue;
            }
            sequence += 1;
            let user = format!("crowd-{viewer}");
            let mut reactions = Vec::new();
            let spike_share = if spiking { 0.8 } else { 0.1 };
            let spiked = (f64::from(taps) * spike_share).round() as u32;
            if spiked > 0 {
                reactions
                    .push(json!({ "stream_id": stream, "emoji": SPIKE_EMOJI, "count": spiked }));
            }
            let mut left = taps - spiked;
            for (i, (emoji, share)) in USUAL.iter().enumerate() {
                let n = if i + 1 == USUAL.len() {
                    left
                } else {
                    ((f64::from(taps - spiked)) * share)
                        .round()
                        .min(f64::from(left)) as u32
                };
                left -= n;
                if n > 0 {
                    reactions.push(json!({ "stream_id": stream, "emoji": emoji, "count": n }));
                }
            }
            let token = issuer.as_ref().map(|issuer| issuer.token_for(&user));
            if token.is_none() {
                for reaction in &mut reactions {
                    reaction["user_id"] = json!(user);
                }
            }
            let body = json!({ "reactions": reactions }).to_string();
            let mut request = hyper::Request::post(format!("{api}/reactions"))
                .header("content-type", "application/json")
                .header("idempotency-key", format!("crowd-{session}:{sequence}"));
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let Ok(request) = request.body(Full::new(Bytes::from(body))) else {
                continue;
            };
            let client = client.clone();
            let stream = stream.clone();
            tokio::spawn(async move {
                match client.request(request).await {
                    Ok(response) if response.status().as_u16() == 202 => {}
                    Ok(response) => {
                        let status = response.status();
                        let body = response.into_body().collect().await.map(|b| b.to_bytes());
                        tracing::warn!(%stream, %status, body = ?body.ok(), "demo crowd's taps refused");
                    }
                    Err(error) => tracing::warn!(%stream, %error, "demo crowd's taps not sent"),
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crowd_spikes_five_fold_for_ten_seconds_every_two_minutes() {
        let at = |s: u64| rate_at(Duration::from_secs(s));
        assert!(!at(74).1 && at(75).1 && at(84).1 && !at(85).1);
        assert!(at(195).1 && !at(205).1 && at(315).1);
        assert!(
            at(80).0 > 4.0 * at(70).0 * 0.8,
            "{} vs {}",
            at(80).0,
            at(70).0
        );
        // Each viewer stays under fair use's 20 taps a second, spike and wander included.
        assert!(BASELINE_PER_S * 1.2 * SPIKE_FACTOR / (VIEWERS as f64) < 20.0);
        // A recording holds two spikes.
        assert!(RECORDING_FOR > FIRST_SPIKE + SPIKE_EVERY + SPIKE_FOR);
    }
}
