//! One load run: connect the listeners, drive the viewers for the run's duration with a
//! progress bar, wait for the pipeline to settle, check exactness, and compute the figures.

use crate::audiences::{Audiences, StreamAudiences};
use crate::listeners::{Listener, LiveUpdates, Observed, listen};
use crate::per_stream::{StreamLatency, measured_listeners, stream_latencies, worst_stream};
use crate::profile::Profile;
use crate::report::{Percentiles, Sent, tap_to_screen, weighted_percentiles};
use crate::verify::{Counts, differences, stored_counts};
use crate::viewers::{Batch, Outcome, Retries, pick_emojis, send};
use emostream_local::demo_issuer::DemoIssuer;
use futures::StreamExt;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use indicatif::ProgressBar;
use rand::Rng;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What to run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    pub api: String,
    /// Where listeners get live updates.
    pub live: LiveUpdates,
    pub viewers: usize,
    pub streams: usize,
    pub rate: f64,
    pub duration: Duration,
    /// Sending before the measured part: cold starts and first connections happen here. Its
    /// reactions count for the exactness check but not for the figures.
    pub warmup: Duration,
    pub profile: Profile,
    /// How the viewers, and the `listeners_per_stream × streams` listeners, are spread over
    /// the streams (see [`crate::audiences`]).
    pub audiences: Audiences,
    pub listeners_per_stream: usize,
    pub batch_interval: Duration,
    pub max_in_flight: usize,
    /// How long a viewer keeps sending a request that was not accepted (see
    /// [`crate::viewers::Retries`]); retries go every `batch_interval`.
    pub retry_for: Duration,
    pub settle_timeout: Duration,
    /// Prefix of the stream ids, unique per run so runs never mix.
    pub run_id: String,
    /// With viewer identity on: viewer `n`'s bearer token (see [`viewer_tokens`]).
    pub viewer_tokens: Option<Arc<Vec<Arc<str>>>>,
    /// Once the counts settled, wait for the moments and score them against the profile's
    /// scripted spikes (see [`crate::moment_check`]).
    pub check_moments: bool,
}

/// A stream's taps: sent (accepted) and counted (stored).
#[derive(Debug, Clone, Serialize)]
pub struct StreamTaps {
    pub stream: usize,
    pub sent: u64,
    pub counted: u64,
    /// Taps of requests given up unanswered or answered 5xx or 429 to the last (after
    /// `retry_for`): part of them may be counted, so counted lies between `sent` and `sent`
    /// plus these.
    pub abandoned: u64,
}

/// The figures of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub profile: String,
    pub target_rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub viewers: usize,
    pub streams: usize,
    pub listeners: usize,
    pub requests: u64,
    pub failed_requests: u64,
    /// Requests sent more than once (with their idempotency key) before their last answer.
    pub retried_requests: u64,
    /// When attempts were answered with a 5xx other than 503 (API Gateway's 500 for a crashed
    /// or timed-out invocation), ms since the epoch.
    pub answers_5xx_not_503_at_ms: Vec<i64>,
    pub accepted_reactions: u64,
    pub accepted_per_s: f64,
    pub ingest_latency_ms: Percentiles,
    pub tap_to_screen_ms: Percentiles,
    /// From notify sending a push to a listener receiving it, over every listener and push.
    pub delivery_ms: Percentiles,
    /// Pushes that took longer than a second to reach a listener.
    pub deliveries_over_1s: u64,
    /// Taps no listener showed before the settle timeout.
    pub taps_never_shown: u64,
    /// Listeners whose pushes tap-to-screen latency is measured on (at most
    /// `LATENCY_LISTENERS_PER_STREAM` per stream).
    pub latency_listeners: usize,
    /// Listeners (of all) that did not show their stream's final count before the settle
    /// timeout: starved by the fan-out.
    pub listeners_short_of_final: usize,
    /// Listener connects refused with 429 and tried again.
    pub listener_connects_throttled: u64,
    /// Times a listener's connection closed under it and it connected again (and synced).
    pub listener_reconnects: u64,
    /// Pushes listeners found missing (a push number skipped) and the repairs they made
    /// (a `sync`, or a read of the stored windows), as the web page does.
    pub pushes_missed: u64,
    pub repairs: u64,
    /// Window states seen with a larger total than a `final` state of the same window seen
    /// before, over every listener: windows that grew after they were published final.
    pub windows_grown_after_final: u64,
    pub updates_per_listener_min: u64,
    pub updates_per_listener_mean: f64,
    pub updates_per_listener_max: u64,
    /// Pushes a listener received per second, from its connect to the end of the run.
    pub pushes_per_listener_per_second: f64,
    /// Requests a tapping viewer sent per second in the measured part.
    pub requests_per_tapping_viewer_per_second: f64,
    /// Stored counts equal accepted reactions for every stream and emoji.
    pub exact: bool,
    pub differences: Vec<String>,
    /// Per stream, the taps the viewers consider sent (answered 202, retries included once)
    /// and the taps counted.
    pub stream_taps: Vec<StreamTaps>,
    /// Tap-to-screen p50 and p99 per second of the measured part, for plotting.
    pub latency_over_time: Vec<SecondLatency>,
    /// How the audience was spread over the streams: `uniform` or `zipf:S`.
    pub audiences: String,
    /// Each stream's viewers, listeners and tap-to-screen p50 and p99 over the measured part.
    pub per_stream: Vec<StreamLatency>,
    /// The stream with the largest tap-to-screen p99 among those that had samples.
    pub worst_stream: Option<usize>,
    /// That stream's p99: a small stream waiting longer than the large ones shows here.
    pub worst_stream_p99_ms: Option<f64>,
    /// With `check_moments`: how well moments were found.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moments: Option<crate::moment_check::MomentsReport>,
}

/// Tap-to-screen latency of the requests sent in one second of the measured part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SecondLatency {
    /// Seconds since the run began; the warm-up's seconds are left out.
    pub second: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Listeners per stream whose observations feed the tap-to-screen latency.
pub const LATENCY_LISTENERS_PER_STREAM: usize = 100;

/// Listeners connecting at once.
const CONNECTING_AT_ONCE: usize = 64;

/// Connects `per_stream[s]` listeners to each stream `s`, `CONNECTING_AT_ONCE` at a time,
/// with a progress bar counting the throttled connects. Listeners are returned stream by
/// stream.
async fn connect_listeners(
    plan: &RunPlan,
    per_stream: &[usize],
    started: Instant,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<Listener>, String> {
    let streams: Vec<usize> = per_stream
        .iter()
        .enumerate()
        .flat_map(|(stream, count)| std::iter::repeat_n(stream, *count))
        .collect();
    let bar = crate::progress_bar(
        streams.len() as u64,
        "{spinner} connecting listeners {bar:30} {pos}/{len}  {msg}",
    );
    let give_up = Instant::now() + plan.settle_timeout.max(Duration::from_secs(60));
    let throttled = std::sync::atomic::AtomicU64::new(0);
    let listeners = futures::stream::iter(streams)
        .map(|stream| {
            let id = stream_id(plan, stream);
            let (bar, throttled) = (&bar, &throttled);
            async move {
                let history = format!("{}/streams/{id}/windows?limit=90", plan.api);
                let listener = listen(
                    &plan.live,
                    stream,
                    id,
                    history,
                    started,
                    give_up,
                    stop.clone(),
                )
                .await?;
                let so_far = throttled.fetch_add(listener.throttled_connects, Ordering::Relaxed)
                    + listener.throttled_connects;
                bar.inc(1);
                bar.set_message(format!("{so_far} connects throttled (429) and retried"));
                Ok::<_, String>(listener)
            }
        })
        .buffered(CONNECTING_AT_ONCE)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, String>>();
    bar.finish_and_clear();
    listeners
}

/// Simulated viewer `viewer`'s user id: with identity on, its token's subject.
pub fn viewer_user_id(viewer: usize) -> String {
    format!("viewer-{viewer}")
}

/// A token from `issuer` for each of `viewers` simulated viewers, for [`RunPlan::viewer_tokens`].
pub fn viewer_tokens(issuer: &DemoIssuer, viewers: usize) -> Arc<Vec<Arc<str>>> {
    Arc::new(
        (0..viewers)
            .map(|viewer| Arc::from(issuer.token_for(&viewer_user_id(viewer))))
            .collect(),
    )
}

fn stream_id(plan: &RunPlan, stream: usize) -> String {
    format!("{}-s{stream}", plan.run_id)
}

/// Delivery latency over every listener's pushes, and how many took over a second.
fn delivery_figures(observed: &[Observed]) -> (Percentiles, u64) {
    let samples: Vec<(f64, u64)> = observed
        .iter()
        .flat_map(|o| o.delivery_ms.iter().map(|ms| (*ms, 1)))
        .collect();
    let late = samples.iter().filter(|(ms, _)| *ms > 1_000.0).count() as u64;
    (weighted_percentiles(samples), late)
}

/// What a listen-only run saw.
#[derive(Debug, Clone, Serialize)]
pub struct ListenReport {
    pub run_id: String,
    pub listeners: usize,
    pub listener_connects_throttled: u64,
    /// Listeners that never showed their stream's stored total.
    pub listeners_short_of_final: usize,
    pub updates_per_listener_min: u64,
    pub updates_per_listener_mean: f64,
    pub delivery_ms: Percentiles,
    pub deliveries: u64,
    pub deliveries_over_1s: u64,
}

/// Listens without tapping: connects the plan's listeners to the streams of `plan.run_id`
/// (another process's run sends the reactions), records for `plan.duration`, then waits until
/// every listener shows its stream's stored total. For audiences larger than one process can
/// hold: several listen-only processes share a run.
pub async fn listen_only(
    plan: &RunPlan,
    ready_file: Option<&std::path::Path>,
) -> Result<ListenReport, String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let api = plan.api.trim_end_matches('/').to_owned();
    let started = Instant::now();
    let since_ms = reactions::clock::now_ms() - 600_000;
    let (stop_listeners, stop) = tokio::sync::watch::channel(false);
    // The same listeners per stream as the tapping run's (only the listeners are spread).
    let per_stream = plan
        .audiences
        .split(plan.listeners_per_stream * plan.streams, plan.streams);
    let listeners = connect_listeners(plan, &per_stream, started, &stop).await?;
    if let Some(path) = ready_file {
        std::fs::write(path, format!("{}\n", listeners.len()))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let bar = crate::progress_bar(
        plan.duration.as_secs(),
        "{spinner} [{elapsed_precise}] listening {bar:30} {pos}/{len} s  {msg}",
    );
    let listening = Instant::now();
    while listening.elapsed() < plan.duration {
        tokio::time::sleep(Duration::from_millis(500)).await;
        bar.set_position(listening.elapsed().as_secs());
        let shown: u64 = listeners
            .iter()
            .map(|l| l.shown.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        bar.set_message(format!("largest count shown {shown}"));
    }
    bar.finish_and_clear();
    let deadline = Instant::now() + plan.settle_timeout;
    let mut short;
    loop {
        let mut totals = Vec::with_capacity(plan.streams);
        for stream in 0..plan.streams {
            let stored = stored_counts(&client, &api, &stream_id(plan, stream), since_ms).await?;
            totals.push(stored.values().sum::<u64>());
        }
        short = listeners
            .iter()
            .filter(|l| l.shown.load(Ordering::Relaxed) < totals[l.stream])
            .count();
        if short == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let throttled = listeners.iter().map(|l| l.throttled_connects).sum();
    stop_listeners.send(true).ok();
    let mut observed = Vec::new();
    for listener in listeners {
        observed.push(listener.task.await.map_err(|e| e.to_string())?);
    }
    let (delivery_ms, deliveries_over_1s) = delivery_figures(&observed);
    let updates: Vec<u64> = observed.iter().map(|o| o.updates).collect();
    Ok(ListenReport {
        run_id: plan.run_id.clone(),
        listeners: observed.len(),
        listener_connects_throttled: throttled,
        listeners_short_of_final: short,
        updates_per_listener_min: updates.iter().copied().min().unwrap_or(0),
        updates_per_listener_mean: updates.iter().sum::<u64>() as f64 / updates.len().max(1) as f64,
        deliveries: delivery_ms.samples,
        delivery_ms,
        deliveries_over_1s,
    })
}

/// Runs the plan.
pub async fn run(plan: &RunPlan) -> Result<RunReport, String> {
    let audiences = StreamAudiences::new(
        plan.audiences,
        plan.viewers,
        plan.streams,
        plan.listeners_per_stream,
    )
    .map_err(|e| e.to_string())?;
    let viewer_streams = audiences.viewer_streams();
    let client = Arc::new(
        Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(plan.max_in_flight)
            .build_http::<Full<Bytes>>(),
    );
    let api = Arc::new(plan.api.trim_end_matches('/').to_owned());
    let started = Instant::now();
    let wall_start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);

    // Ingest takes reactions only to registered, live streams: register this run's.
    let admin = emostream_local::api_gateway::admin_client::AdminClient::from_env(&api);
    for stream in 0..plan.streams {
        let id = stream_id(plan, stream);
        admin
            .register_live(&id, &format!("Load run {id}"), None)
            .await
            .map_err(|e| e.to_string())?;
    }

    let (stop_listeners, stop) = tokio::sync::watch::channel(false);
    let listeners = connect_listeners(plan, &audiences.listeners, started, &stop).await?;
    let listener_connects_throttled: u64 = listeners.iter().map(|l| l.throttled_connects).sum();
    let listening_since = Instant::now();
    // The notify mapping starts at the latest offset; give a freshly started stack a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bar = crate::progress_bar(
        (plan.warmup + plan.duration).as_secs(),
        "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} s  {msg}",
    );
    let limiter = Arc::new(Semaphore::new(plan.max_in_flight));
    let (outcomes_tx, mut outcomes_rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let phases = 10u32;
    let tick = plan.batch_interval / phases;
    let mut owed = vec![0.0f64; plan.viewers];
    // Like the page, a viewer sends nothing new while its own request is unanswered (its taps
    // wait), and numbers its requests for their idempotency keys.
    let mut waiting = vec![false; plan.viewers];
    let mut sequence = vec![0u64; plan.viewers];
    let retries = Retries {
        every: plan.batch_interval,
        for_at_most: plan.retry_for,
    };
    let mut rng = rand::rng();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let send_started = Instant::now();
    // When the measured part begins, ms since the epoch: the scripted spikes count from it.
    let measured_start_epoch_ms =
        reactions::clock::now_ms() + i64::try_from(plan.warmup.as_millis()).unwrap_or(0);
    let mut next_tick = tokio::time::Instant::now();
    let mut phase = 0u32;
    let mut accepted_so_far = 0u64;
    let warmup_end_ms =
        (send_started.duration_since(started) + plan.warmup).as_secs_f64() * 1_000.0;
    while send_started.elapsed() < plan.warmup + plan.duration {
        let elapsed = send_started.elapsed();
        let rate = plan.profile.rate_at(
            plan.rate,
            elapsed.saturating_sub(plan.warmup),
            plan.duration,
        );
        let per_viewer = rate * plan.batch_interval.as_secs_f64() / plan.viewers as f64;
        for viewer in (phase as usize..plan.viewers).step_by(phases as usize) {
            owed[viewer] += per_viewer;
            if waiting[viewer] {
                continue;
            }
            let mut taps = owed[viewer].floor();
            if rng.random::<f64>() < owed[viewer] - taps {
                taps += 1.0;
            }
            owed[viewer] -= taps;
            if taps < 1.0 {
                continue;
            }
            let stream = viewer_streams[viewer];
            sequence[viewer] += 1;
            waiting[viewer] = true;
            let batch = Batch {
                viewer,
                key: format!("{}-v{viewer}:{}", plan.run_id, sequence[viewer]),
                stream,
                stream_id: stream_id(plan, stream),
                user_id: viewer_user_id(viewer),
                taps: pick_emojis(taps as u64, &mut rng),
                token: plan
                    .viewer_tokens
                    .as_ref()
                    .and_then(|tokens| tokens.get(viewer).cloned()),
            };
            // Each attempt takes one of the in-flight permits; a request waiting to be sent
            // again holds none, so the viewers' pacing goes on during an outage.
            let (client, api, tx) = (Arc::clone(&client), Arc::clone(&api), outcomes_tx.clone());
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let outcome = send(client, api, batch, started, retries, limiter).await;
                tx.send(outcome).ok();
            });
        }
        while let Ok(outcome) = outcomes_rx.try_recv() {
            waiting[outcome.batch.viewer] = false;
            if outcome.status == 202 {
                accepted_so_far += outcome.sent.taps;
            }
            outcomes.push(outcome);
        }
        bar.set_position(elapsed.as_secs());
        bar.set_message(format!(
            "target {rate:.0}/s, accepted {:.0}/s, {} requests",
            accepted_so_far as f64 / elapsed.as_secs_f64().max(0.001),
            outcomes.len()
        ));
        phase = (phase + 1) % phases;
        next_tick += tick;
        tokio::time::sleep_until(next_tick).await;
    }
    let send_seconds = (send_started.elapsed().saturating_sub(plan.warmup)).as_secs_f64();
    drop(outcomes_tx);
    while let Some(outcome) = outcomes_rx.recv().await {
        outcomes.push(outcome);
    }
    bar.finish_with_message(format!("sent {} requests", outcomes.len()));

    // Accepted taps per stream and emoji, and what the listeners must reach.
    let mut accepted: Vec<Counts> = vec![Counts::new(); plan.streams];
    let mut accepted_total = vec![0u64; plan.streams];
    for outcome in outcomes.iter().filter(|o| o.status == 202) {
        for (emoji, taps) in &outcome.batch.taps {
            *accepted[outcome.batch.stream]
                .entry((*emoji).to_owned())
                .or_insert(0) += taps;
        }
        accepted_total[outcome.batch.stream] += outcome.batch.total();
    }

    let mut abandoned = vec![0u64; plan.streams];
    for outcome in &outcomes {
        if outcome.status == 0 || outcome.status == 429 || outcome.status >= 500 {
            abandoned[outcome.batch.stream] += outcome.batch.total();
        }
    }

    let settle = ProgressBar::new_spinner();
    settle.enable_steady_tick(Duration::from_millis(120));
    settle.set_message("waiting for the stored counts to settle...");
    let deadline = Instant::now() + plan.settle_timeout;
    let mut diffs = Vec::new();
    let mut stream_taps = Vec::new();
    // Every stream gets until the same deadline; one still different then is read once more
    // and reported, so each stream's figures are known.
    for (stream, expected) in accepted.iter().enumerate() {
        loop {
            let stored = stored_counts(
                &client,
                &api,
                &stream_id(plan, stream),
                wall_start_ms - 60_000,
            )
            .await?;
            let found: Vec<String> = differences(expected, &stored)
                .into_iter()
                .map(|d| format!("{}: {d}", stream_id(plan, stream)))
                .collect();
            if found.is_empty() || Instant::now() > deadline {
                stream_taps.push(StreamTaps {
                    stream,
                    sent: accepted_total[stream],
                    counted: stored.values().sum(),
                    abandoned: abandoned[stream],
                });
                diffs.extend(found);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    settle.set_message("waiting for the listeners to show the last counts...");
    // Each listener gets until the same deadline to show every accepted tap of its stream.
    while Instant::now() < deadline
        && listeners
            .iter()
            .any(|l| l.shown.load(Ordering::Relaxed) < accepted_total[l.stream])
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listeners_short_of_final = listeners
        .iter()
        .filter(|l| l.shown.load(Ordering::Relaxed) < accepted_total[l.stream])
        .count();
    stop_listeners.send(true).ok();
    let listened_s = listening_since.elapsed().as_secs_f64().max(0.001);
    let mut observed: Vec<Observed> = Vec::new();
    for listener in listeners {
        observed.push(listener.task.await.map_err(|e| e.to_string())?);
    }
    let moments = match plan.check_moments {
        true => {
            settle.set_message("waiting for the last moments to be confirmed...");
            Some(settled_moments(&client, &api, plan, measured_start_epoch_ms, send_seconds).await?)
        }
        false => None,
    };
    settle.finish_and_clear();

    let sent: Vec<Sent> = outcomes
        .iter()
        .filter(|o| o.status == 202)
        .map(|o| o.sent)
        .collect();
    // Latency pairs grow with requests x listeners: a sample of each stream's listeners, spread
    // evenly, measures it; every listener is still checked for the final counts above.
    let listener_streams: Vec<usize> = observed.iter().map(|o| o.stream).collect();
    let measured_listener = measured_listeners(
        &listener_streams,
        &audiences.listeners,
        LATENCY_LISTENERS_PER_STREAM,
    );
    let seen: Vec<(usize, Vec<(f64, u64)>)> = observed
        .iter()
        .zip(measured_listener)
        .filter(|(_, measured)| *measured)
        .map(|(o, _)| (o.stream, o.seen.clone()))
        .collect();
    let (mut latencies, never) = tap_to_screen(&sent, &seen);
    latencies.retain(|o| o.sent_at_ms >= warmup_end_ms);
    let per_stream = stream_latencies(&latencies, &audiences);
    let worst = worst_stream(&per_stream).copied();
    let measured: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.sent.at_ms >= warmup_end_ms)
        .collect();
    let measured_accepted: u64 = measured
        .iter()
        .filter(|o| o.status == 202)
        .map(|o| o.sent.taps)
        .sum();
    let mut by_second: BTreeMap<u64, Vec<(f64, u64)>> = BTreeMap::new();
    for on_screen in &latencies {
        by_second
            .entry((on_screen.sent_at_ms / 1_000.0) as u64)
            .or_default()
            .push((on_screen.latency_ms, on_screen.taps));
    }
    let updates: Vec<u64> = observed.iter().map(|o| o.updates).collect();
    let accepted_reactions: u64 = accepted_total.iter().sum();
    let (delivery_ms, deliveries_over_1s) = delivery_figures(&observed);
    Ok(RunReport {
        run_id: plan.run_id.clone(),
        profile: format!("{:?}", plan.profile).to_lowercase(),
        target_rate: plan.rate,
        duration_s: send_seconds,
        warmup_s: plan.warmup.as_secs_f64(),
        viewers: plan.viewers,
        streams: plan.streams,
        listeners: observed.len(),
        requests: outcomes.len() as u64,
        failed_requests: outcomes.iter().filter(|o| o.status != 202).count() as u64,
        retried_requests: outcomes.iter().filter(|o| o.attempts > 1).count() as u64,
        answers_5xx_not_503_at_ms: outcomes
            .iter()
            .flat_map(|o| o.answers_5xx_not_503_at_ms.iter().copied())
            .collect(),
        accepted_reactions,
        accepted_per_s: measured_accepted as f64 / send_seconds,
        ingest_latency_ms: weighted_percentiles(
            measured.iter().map(|o| (o.latency_ms, 1)).collect(),
        ),
        tap_to_screen_ms: weighted_percentiles(
            latencies.iter().map(|o| (o.latency_ms, o.taps)).collect(),
        ),
        taps_never_shown: never,
        delivery_ms,
        deliveries_over_1s,
        latency_listeners: seen.len(),
        listeners_short_of_final,
        listener_connects_throttled,
        listener_reconnects: observed.iter().map(|o| o.reconnects).sum(),
        pushes_missed: observed.iter().map(|o| o.gaps).sum(),
        repairs: observed.iter().map(|o| o.repairs).sum(),
        windows_grown_after_final: observed.iter().map(|o| o.grown_after_final).sum(),
        updates_per_listener_min: updates.iter().copied().min().unwrap_or(0),
        updates_per_listener_mean: updates.iter().sum::<u64>() as f64 / updates.len().max(1) as f64,
        updates_per_listener_max: updates.iter().copied().max().unwrap_or(0),
        pushes_per_listener_per_second: updates.iter().sum::<u64>() as f64
            / updates.len().max(1) as f64
            / listened_s,
        requests_per_tapping_viewer_per_second: measured.len() as f64
            / plan.viewers.max(1) as f64
            / send_seconds.max(0.001),
        exact: diffs.is_empty(),
        differences: diffs,
        stream_taps,
        latency_over_time: by_second
            .into_iter()
            .map(|(second, samples)| {
                let figures = weighted_percentiles(samples);
                SecondLatency {
                    second,
                    p50_ms: figures.p50,
                    p99_ms: figures.p99,
                }
            })
            .collect(),
        audiences: plan.audiences.to_string(),
        per_stream,
        worst_stream: worst.map(|w| w.stream),
        worst_stream_p99_ms: worst.map(|w| w.p99_ms),
        moments,
    })
}

/// How long the moments must stay the same, with none provisional, to be taken as settled:
/// longer than the allowed lateness, a `final` pass and the scheduled tick that ends a quiet
/// stream's moment.
const MOMENTS_STILL_FOR: Duration = Duration::from_secs(75);

/// Reads every stream's moments until they have stayed the same for [`MOMENTS_STILL_FOR`]
/// (bounded by the settle timeout), then scores them.
async fn settled_moments(
    client: &Client<HttpConnector, Full<Bytes>>,
    api: &str,
    plan: &RunPlan,
    start_ms: i64,
    send_seconds: f64,
) -> Result<crate::moment_check::MomentsReport, String> {
    let deadline = Instant::now() + plan.settle_timeout.max(MOMENTS_STILL_FOR * 2);
    let mut last: Option<Vec<Vec<crate::moment_check::FoundMoment>>> = None;
    let mut still_since = Instant::now();
    loop {
        let mut found = Vec::with_capacity(plan.streams);
        for stream in 0..plan.streams {
            found.push(
                crate::moment_check::read_moments(client, api, &stream_id(plan, stream)).await?,
            );
        }
        // Settled: the same moments for a while, none still provisional.
        if last.as_ref() != Some(&found) || found.iter().flatten().any(|m| m.provisional) {
            still_since = Instant::now();
        }
        let settled = still_since.elapsed() >= MOMENTS_STILL_FOR;
        if settled || Instant::now() > deadline {
            let stream_hours = plan.streams as f64 * send_seconds / 3_600.0;
            return Ok(crate::moment_check::score(
                &found,
                &plan.profile.scripted(plan.duration),
                start_ms,
                reactions::WindowWidth::DEFAULT.millis(),
                stream_hours,
            ));
        }
        last = Some(found);
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}
