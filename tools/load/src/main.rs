//! `emostream-load`: drives simulated viewers and listeners against emostream (a running stack,
//! a deployment, or a local stack it starts itself) and prints the figures. Exits non-zero when
//! the stored counts do not equal the accepted reactions.

use clap::{CommandFactory, Parser};
use emostream_local::api_gateway::quotas::QuotaSettings;
use emostream_local::event_api::client::EventCredential;
use emostream_local::event_source::MappingOptions;
use emostream_local::network::FaultProxy;
use emostream_local::stack::{DemoIssuerOptions, LocalStack, StackOptions};
use load::audiences::{Audiences, StreamAudiences};
use load::chaos;
use load::cost::{DeliveryPricing, MeasuredRates, PRICES_SOURCE, project};
use load::lag::{LagSampler, NOTIFY_FUNCTION};
use load::listeners::{LiveUpdates, PAGE_KEEPALIVE};
use load::plot::write_latency_plot;
use load::profile::Profile;
use load::run::{RunPlan, listen_only, run};
use std::path::PathBuf;
use std::time::Duration;

/// Load-test emostream and check that every accepted reaction is counted exactly once.
#[derive(Debug, Parser)]
// A later option wins over an earlier one, so scripts can give defaults that LOAD_ARGS override.
#[command(version, args_override_self = true)]
struct Cli {
    /// Base URL of the HTTP API.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    api: String,
    /// WebSocket URL (without `?stream=`).
    #[arg(long, default_value = "ws://127.0.0.1:3001/live")]
    ws: String,
    /// How listeners get live updates: WebSocketApi (--ws) or AppSyncEvents (--event-*); with
    /// --start-stack, the stack is started in that mode.
    #[arg(long, default_value = "WebSocketApi", value_parser = ["WebSocketApi", "AppSyncEvents"])]
    delivery: String,
    /// AppSyncEvents: the real-time endpoint (wss://{host}/event/realtime).
    #[arg(long)]
    event_realtime_url: Option<String>,
    /// AppSyncEvents: the API's HTTP host, named in the subscribers' authorization.
    #[arg(long)]
    event_http_host: Option<String>,
    /// AppSyncEvents: the subscribers' API key.
    #[arg(long)]
    event_api_key: Option<String>,
    /// AppSyncEvents with viewer identity (OPENID_CONNECT): a token of the issuer for the
    /// subscribers, instead of --event-api-key.
    #[arg(long)]
    event_token: Option<String>,
    /// AppSyncEvents: the channel namespace of the streams.
    #[arg(long, default_value = "streams")]
    event_namespace: String,
    /// Start a local stack in this process (servers from KAFKA_BROKERS and MONGODB_URI) instead
    /// of using --api and --ws.
    #[arg(long)]
    start_stack: bool,
    /// With --start-stack: the directory of the function binaries.
    #[arg(long, default_value = "target/release")]
    binaries: PathBuf,
    /// With --start-stack: the template.
    #[arg(long, default_value = "template.yaml")]
    template: PathBuf,
    /// With --start-stack: instances per function.
    #[arg(long, default_value_t = 6)]
    instances: usize,
    /// With --start-stack: the event source mappings' batching window in ms.
    #[arg(long, default_value_t = 100)]
    batching_window_ms: u64,
    /// With --start-stack: an environment variable for every function, NAME=VALUE
    /// (repeatable), e.g. PUSH_INTERVAL_MS=0.
    #[arg(long = "env", value_parser = emostream_local::cli::pair)]
    env: Vec<(String, String)>,
    /// With --start-stack: viewer identity on, with the stack's demo issuer. Every viewer posts
    /// with its own bearer token (checked by the local JWT authorizer) and every listener
    /// connects with one (checked by notify), as in a deployment with JwtIssuer set.
    #[arg(long, requires = "start_stack")]
    identity: bool,
    /// With --start-stack: no emulated @connections latency, account throttle or connect rate
    /// (faster than AWS: such figures flatter it).
    #[arg(long)]
    no_aws_quotas: bool,
    /// With --start-stack (under local/servers.sh run): the fault run. Faults are applied
    /// every --fault-every-s seconds while the viewers tap (see `load::chaos`), MongoDB is
    /// reached through a fault proxy, and the run fails unless every stream's counted taps
    /// equal its sent taps, no window grows after its final state, ingest answers no 5xx but
    /// 503 and no invocation times out.
    #[arg(long, requires = "start_stack")]
    chaos: bool,
    /// With --chaos: seconds between faults.
    #[arg(long, default_value_t = 30)]
    fault_every_s: u64,
    /// With --chaos: only these faults, comma-separated (kill-aggregate, freeze-broker,
    /// kill-ingest, stall-mongo, kill-notify, restart-mongo, cut-mongo, slow-mongo, kill-all;
    /// and restart-broker, which only runs when named: see `load::chaos::EXTRA`); all but
    /// restart-broker by default.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// The watching viewers the run's traffic stands for, over whom the shared costs (HTTP API,
    /// Lambda) are spread in the cost per viewer-hour; default: --viewers.
    #[arg(long)]
    audience: Option<u64>,
    /// Simulated viewers (they tap and send).
    #[arg(long, default_value_t = 200)]
    viewers: usize,
    /// Streams the viewers are spread over (see --audiences).
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// How viewers and listeners are spread over the streams. `uniform`: every stream alike
    /// (viewer v watches stream v % --streams; --listeners per stream). `zipf:S` (S > 0, e.g.
    /// zipf:1.1): a Zipf distribution, as on a platform where most streams are small and a few
    /// large: stream k (0-based, so stream 0 is the largest) gets a share proportional to
    /// 1/(k+1)^S of the --viewers, at least one each (so --viewers must be at least
    /// --streams), rounded so the shares add up to --viewers; the --listeners × --streams
    /// listeners follow the same shares, at least one per stream. Every viewer taps at the
    /// same rate, so a stream's taps follow its viewers.
    #[arg(long, default_value = "uniform")]
    audiences: Audiences,
    /// Nominal reactions per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Seconds of sending that are measured.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Seconds of sending before that, at the starting rate: cold starts and first connections
    /// happen here; its reactions are checked for exactness but not measured.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// steady, ramp, spike, spikes (a noisy baseline with scripted spikes of 3 to 10 times and
    /// bumps of 1.5 times, to measure moment detection with --moments) or noisy (that baseline
    /// alone, to count false moments).
    #[arg(long, default_value = "steady")]
    profile: Profile,
    /// Once the counts settled, wait for the streams' moments and score them against the
    /// profile's scripted spikes: recall, precision, detection time, false moments per
    /// stream-hour (with a profile that scripts none, every moment is a false one).
    #[arg(long)]
    moments: bool,
    /// WebSocket listeners per stream (on average, with --audiences zipf:S).
    #[arg(long, default_value_t = 2)]
    listeners: usize,
    /// How often each viewer sends its taps, in ms (the web page's default is 1000).
    #[arg(long, default_value_t = 1_000)]
    batch_ms: u64,
    /// Most requests in flight.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// How long a viewer keeps sending, with its idempotency key, a request that got no answer,
    /// 429 or 5xx (every --batch-ms, like the web page), in seconds; 0 sends each once.
    #[arg(long, default_value_t = 60)]
    retry_for_s: u64,
    /// How long to wait after sending for the counts to settle, in seconds.
    #[arg(long, default_value_t = 60)]
    settle_timeout: u64,
    /// Prefix of the stream ids (`{run-id}-s0`, ...); default `load-{pid}`. A listen-only
    /// process joins another's run by giving its id.
    #[arg(long)]
    run_id: Option<String>,
    /// Only listen (no viewers): connect --listeners per stream to the streams of --run-id for
    /// --duration seconds, then wait until each shows its stream's stored total. For audiences
    /// larger than one process can hold connections for.
    #[arg(long, requires = "run_id")]
    listen_only: bool,
    /// With --listen-only: create this file once every listener is connected.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Also write the figures as JSON to this file: with the tap-to-screen figures per stream
    /// (`per_stream`, `worst_stream_p99_ms`) and, with --start-stack, the notify trigger's lag
    /// once a second (`notify_lag`).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also plot tap-to-screen p50 and p99 per second to this PNG file, with the notify
    /// trigger's lag in a panel below when it was sampled (--start-stack).
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    if cli.viewers == 0 || cli.streams == 0 || cli.rate <= 0.0 || cli.duration == 0 {
        return Err("--viewers, --streams, --rate and --duration must be positive".into());
    }
    // Checked before a stack is started, as a usage error; a listen-only run spreads only its
    // listeners.
    let audiences = if cli.listen_only {
        None
    } else {
        let spread = StreamAudiences::new(cli.audiences, cli.viewers, cli.streams, cli.listeners);
        Some(spread.unwrap_or_else(|error| {
            Cli::command()
                .error(clap::error::ErrorKind::ValueValidation, error)
                .exit()
        }))
    };
    let appsync = cli.delivery == "AppSyncEvents";
    let mut stack = None;
    let mut chaos_proxy = None;
    let mut viewer_tokens = None;
    let (api, live) = if cli.start_stack {
        let env = |name: &str| {
            std::env::var(name)
                .map_err(|_| format!("--start-stack needs {name} (run under local/servers.sh run)"))
        };
        let mut mongodb_uri = env("MONGODB_URI")?;
        chaos::check_names(&cli.faults)?;
        if cli.chaos {
            let (proxy, proxied) = FaultProxy::for_mongodb(&mongodb_uri).await?;
            mongodb_uri = proxied;
            chaos_proxy = Some(proxy);
        }
        let mut options = StackOptions::new(
            cli.template.clone(),
            cli.binaries.clone(),
            &env("KAFKA_BROKERS")?,
            &mongodb_uri,
        );
        options.concurrency = cli.instances;
        options.mapping = MappingOptions {
            batching_window: Some(Duration::from_millis(cli.batching_window_ms)),
            ..MappingOptions::default()
        };
        options.function_logs = Some(PathBuf::from("target/load-logs"));
        options.local.variables.extend(cli.env.iter().cloned());
        // Simulated viewers tap faster than people can: keep fair use on (its reads and writes
        // are part of what is measured) with a limit this run's viewers stay under.
        let limit_var = "MAX_TAPS_PER_VIEWER_PER_WINDOW";
        if !options.local.variables.contains_key(limit_var) {
            let peak = cli.rate * cli.profile.peak_factor() / cli.viewers as f64;
            let per_window = (peak * 2.0 * 1.5).ceil() as u64;
            if per_window > 40 {
                eprintln!(
                    "fair use: {limit_var}={per_window} for this run ({} viewers tap up to {peak:.0}/s each; the default 40 per window would cut them)",
                    cli.viewers
                );
                options
                    .local
                    .variables
                    .insert(limit_var.into(), per_window.to_string());
            }
        }
        options
            .local
            .parameters
            .insert("Delivery".into(), cli.delivery.clone());
        if cli.no_aws_quotas {
            options.quotas = QuotaSettings::off();
        }
        if cli.identity {
            // Longer than any run, so no token expires mid-run.
            options.demo_issuer = Some(DemoIssuerOptions {
                port: 0,
                token_ttl: Duration::from_secs(24 * 3600),
            });
        }
        eprintln!(
            "starting the local stack ({} instances per function)...",
            cli.instances
        );
        let started = LocalStack::start(options).await?;
        if !started.wait_ready(Duration::from_secs(30)).await {
            return Err("event source mappings got no partitions within 30 s".into());
        }
        let live = match (&started.event_api, appsync) {
            (Some(_), true) => LiveUpdates::AppSyncEvents {
                realtime_url: started.event_realtime_url.clone().unwrap_or_default(),
                http_host: started.event_http_host.clone().unwrap_or_default(),
                credential: started
                    .event_credential("load-listener")
                    .ok_or("no Event API")?,
                namespace: cli.event_namespace.clone(),
            },
            (None, true) => return Err("the template created no AppSync Events API".into()),
            _ => LiveUpdates::WebSocketApi {
                url: started
                    .websocket_url
                    .clone()
                    .ok_or("the template has no WebSocket API")?,
                token: started
                    .demo_issuer
                    .as_ref()
                    .map(|issuer| issuer.token_for("load-listener")),
                keepalive: PAGE_KEEPALIVE,
            },
        };
        let urls = (started.http_url.clone(), live);
        if let Some(issuer) = &started.demo_issuer {
            viewer_tokens = Some(load::run::viewer_tokens(issuer, cli.viewers));
            eprintln!(
                "viewer identity on: {} viewers post with tokens from the demo issuer {}",
                cli.viewers,
                issuer.issuer()
            );
        }
        stack = Some(started);
        urls
    } else if appsync {
        let need = |value: &Option<String>, option: &str| {
            value
                .clone()
                .ok_or_else(|| format!("--delivery AppSyncEvents needs {option}"))
        };
        let live = LiveUpdates::AppSyncEvents {
            realtime_url: need(&cli.event_realtime_url, "--event-realtime-url")?,
            http_host: need(&cli.event_http_host, "--event-http-host")?,
            credential: match &cli.event_token {
                Some(token) => EventCredential::Token(token.clone()),
                None => EventCredential::ApiKey(need(
                    &cli.event_api_key,
                    "--event-api-key or --event-token",
                )?),
            },
            namespace: cli.event_namespace.clone(),
        };
        (cli.api.clone(), live)
    } else {
        (
            cli.api.clone(),
            LiveUpdates::WebSocketApi {
                url: cli.ws.clone(),
                token: None,
                keepalive: PAGE_KEEPALIVE,
            },
        )
    };
    let plan = RunPlan {
        api,
        live,
        viewers: cli.viewers,
        streams: cli.streams,
        rate: cli.rate,
        duration: Duration::from_secs(cli.duration),
        warmup: Duration::from_secs(cli.warmup),
        profile: cli.profile,
        audiences: cli.audiences,
        listeners_per_stream: cli.listeners,
        batch_interval: Duration::from_millis(cli.batch_ms),
        max_in_flight: cli.max_in_flight,
        retry_for: Duration::from_secs(cli.retry_for_s),
        settle_timeout: Duration::from_secs(cli.settle_timeout),
        run_id: cli
            .run_id
            .clone()
            .unwrap_or_else(|| format!("load-{}", std::process::id())),
        viewer_tokens,
        check_moments: cli.moments,
    };
    if cli.listen_only {
        let report = listen_only(&plan, cli.ready_file.as_deref()).await?;
        println!(
            "listen-only            {} listeners on {} ({} connects throttled and retried), {} short of the final counts",
            report.listeners,
            report.run_id,
            report.listener_connects_throttled,
            report.listeners_short_of_final
        );
        println!(
            "delivery latency       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} pushes received; {} over 1 s",
            report.delivery_ms.p50,
            report.delivery_ms.p99,
            report.delivery_ms.max,
            report.deliveries,
            report.deliveries_over_1s
        );
        println!(
            "updates per listener   min {}, mean {:.1}",
            report.updates_per_listener_min, report.updates_per_listener_mean
        );
        if let Some(path) = &cli.json {
            std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        }
        if let Some(stack) = stack {
            stack.stop().await;
        }
        if report.listeners_short_of_final > 0 {
            std::process::exit(1);
        }
        return Ok(());
    }
    eprintln!(
        "{} viewers over {} streams, {:?} at {} reactions/s for {} s after {} s of warm-up, {} listeners per stream",
        plan.viewers,
        plan.streams,
        plan.profile,
        plan.rate,
        cli.duration,
        cli.warmup,
        plan.listeners_per_stream
    );
    if let Some(audiences) = &audiences {
        let (viewers, listeners) = (&audiences.viewers, &audiences.listeners);
        eprintln!(
            "audiences {}: the largest stream has {} viewers and {} listeners, the smallest {} and {}",
            plan.audiences,
            viewers.first().copied().unwrap_or(0),
            listeners.first().copied().unwrap_or(0),
            viewers.last().copied().unwrap_or(0),
            listeners.last().copied().unwrap_or(0),
        );
    }
    // The notify trigger's lag, once a second from before the warm-up to the end of the
    // settling, when this process started the stack (and so can read its mappings).
    let sampler = stack
        .as_ref()
        .map(|s| s.mapping_stats(NOTIFY_FUNCTION))
        .filter(|stats| !stats.is_empty())
        .map(|stats| {
            LagSampler::start(move || stats.iter().map(|s| s.records_behind()).sum::<u64>())
        });
    let (report, faults) = match (&stack, &chaos_proxy) {
        (Some(stack), Some(mongo)) => {
            let every = Duration::from_secs(cli.fault_every_s);
            let faults = chaos::schedule(plan.warmup + plan.duration, every, &cli.faults);
            let targets = chaos::Targets::of_this_run(stack, mongo)?;
            let (report, faults) =
                tokio::join!(run(&plan), targets.run(&faults, std::time::Instant::now()));
            (report, Some(faults))
        }
        _ => (run(&plan).await, None),
    };
    let notify_lag = match sampler {
        Some(sampler) => sampler.finish().await,
        None => Vec::new(),
    };
    let report = report?;
    let functions = stack.as_ref().map(|s| s.summary()).unwrap_or_default();
    let lambda = stack.as_ref().map(|s| s.lambda_usage());
    let run_seconds = (report.warmup_s + report.duration_s).max(0.001);
    // Each push is one published event per stream; a stack this run started counted them.
    let published_events = stack
        .as_ref()
        .and_then(|s| s.event_api.as_ref())
        .map(|api| api.stats.events.load(std::sync::atomic::Ordering::Relaxed) as f64);
    let rates = MeasuredRates {
        delivery: if appsync {
            DeliveryPricing::AppSyncEvents
        } else {
            DeliveryPricing::WebSocketApi
        },
        published_events_per_s: if appsync {
            published_events.map_or(
                report.pushes_per_listener_per_second * report.streams as f64,
                |events| events / run_seconds,
            )
        } else {
            0.0
        },
        http_requests_per_s: report.requests as f64 / run_seconds,
        pushes_per_listener_per_s: report.pushes_per_listener_per_second,
        lambda_invocations_per_s: lambda.map(|(invocations, _)| invocations as f64 / run_seconds),
        lambda_gb_s_per_s: lambda.map(|(_, gb_s)| gb_s / run_seconds),
    };
    let cost = project(rates, cli.audience.unwrap_or(cli.viewers as u64));

    println!(
        "accepted reactions     {:.0}/s over the measured {:.0} s ({} in all, with {:.0} s of warm-up); {} requests ({} sent again with their key), {} failed",
        report.accepted_per_s,
        report.duration_s,
        report.accepted_reactions,
        report.warmup_s,
        report.requests,
        report.retried_requests,
        report.failed_requests
    );
    println!(
        "ingest latency         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        report.ingest_latency_ms.p50, report.ingest_latency_ms.p99, report.ingest_latency_ms.max
    );
    println!(
        "tap-to-screen latency  p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} taps never shown)",
        report.tap_to_screen_ms.p50,
        report.tap_to_screen_ms.p99,
        report.tap_to_screen_ms.max,
        report.taps_never_shown
    );
    match report
        .per_stream
        .iter()
        .find(|s| Some(s.stream) == report.worst_stream)
    {
        Some(worst) => println!(
            "worst stream           {}-s{} ({} viewers, {} listeners; audiences {}): tap-to-screen p50 {:.1} ms, p99 {:.1} ms",
            report.run_id,
            worst.stream,
            worst.viewers,
            worst.listeners,
            report.audiences,
            worst.p50_ms,
            worst.p99_ms
        ),
        None => println!("worst stream           none: no stream had tap-to-screen samples"),
    }
    if stack.is_some() {
        println!("notify lag             {}", load::lag::summary(&notify_lag));
    } else {
        println!("notify lag             not sampled (only with --start-stack)");
    }
    println!(
        "delivery latency       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms from notify sending a push to a listener receiving it; {} of {} over 1 s",
        report.delivery_ms.p50,
        report.delivery_ms.p99,
        report.delivery_ms.max,
        report.deliveries_over_1s,
        report.delivery_ms.samples
    );
    println!(
        "updates per listener   min {}, mean {:.1}, max {}",
        report.updates_per_listener_min,
        report.updates_per_listener_mean,
        report.updates_per_listener_max
    );
    println!(
        "listeners              {}: {} short of the final counts, {} connects throttled (429) and retried, {} reconnects, latency measured on {}",
        report.listeners,
        report.listeners_short_of_final,
        report.listener_connects_throttled,
        report.listener_reconnects,
        report.latency_listeners
    );
    println!(
        "self-repair            {} pushes found missing by the listeners (a push number skipped), {} repairs",
        report.pushes_missed, report.repairs
    );
    let refusals = stack.as_ref().map(|s| s.quotas.refusals());
    if let Some(refusals) = refusals {
        println!("throttling             {refusals}");
    }
    if let Some(api) = stack.as_ref().and_then(|s| s.event_api.as_ref()) {
        println!("delivery               {}", api.stats.summary());
    }
    println!(
        "pushes per listener    {:.2}/s; requests per tapping viewer {:.2}/s",
        report.pushes_per_listener_per_second, report.requests_per_tapping_viewer_per_second
    );
    for line in &functions {
        println!("function               {line}");
    }
    println!(
        "projected AWS cost     ${:.4} per viewer-hour, ${:.2} per hour for {} viewers ({:?}): HTTP API ${:.3}, messages ${:.3}, connection-minutes ${:.4}, Lambda {} ({PRICES_SOURCE})",
        cost.per_viewer_hour,
        cost.total_per_hour,
        cost.audience,
        cost.delivery,
        cost.http_api_per_hour,
        cost.delivery_messages_per_hour,
        cost.connection_minutes_per_hour,
        cost.lambda_per_hour
            .map_or("not measured (no --start-stack)".to_owned(), |l| format!(
                "${l:.3}"
            )),
    );
    if report.exact {
        println!(
            "exact counts           yes: stored counts equal the accepted reactions for every stream and emoji"
        );
    } else {
        println!("exact counts           NO:");
        for difference in &report.differences {
            println!("  {difference}");
        }
    }
    if let Some(moments) = &report.moments {
        println!(
            "moments                {} found of {} scripted spikes of 3x or more (recall {:.3}); {} moments, {} false (precision {:.3}); {} bumps of 1.5x taken",
            moments.spikes_found,
            moments.spikes,
            moments.recall,
            moments.moments,
            moments.false_moments,
            moments.precision,
            moments.bumps_taken
        );
        println!(
            "moment detection       from the spike's start to the moment stored: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; {:.2} false moments per stream-hour over {:.2} stream-hours",
            moments.detection_ms.p50,
            moments.detection_p95_ms,
            moments.detection_ms.max,
            moments.false_per_stream_hour,
            moments.stream_hours
        );
        for (stream, start_s, factor, nearest) in &moments.missed {
            println!(
                "  missed                 stream {stream}: the {factor}x spike at {start_s} s (nearest moment {})",
                nearest.map_or("none".to_owned(), |d| format!("{d:+} ms from it"))
            );
        }
    }
    let verdict = match (faults, &stack) {
        (Some(faults), Some(stack)) => Some(chaos::Verdict::of(&report, faults, stack)),
        _ => None,
    };
    if let Some(verdict) = &verdict {
        verdict.print();
    }
    if let Some(path) = &cli.json {
        let mut value = serde_json::to_value(&report)?;
        value["chaos"] = serde_json::json!(verdict);
        value["functions"] = serde_json::json!(functions);
        value["aws_quotas_refused"] = serde_json::json!(refusals);
        value["notify_lag"] = serde_json::json!(notify_lag);
        value["cost"] = serde_json::json!({
            "rates": rates,
            "projection": cost,
            "prices": PRICES_SOURCE,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&value)?)?;
        eprintln!("figures written to {}", path.display());
    }
    if let Some(path) = &cli.plot {
        let title = format!(
            "tap-to-screen latency, {:?} at {} reactions/s over {} streams ({})",
            plan.profile, plan.rate, plan.streams, plan.audiences
        );
        match write_latency_plot(path, &title, &report.latency_over_time, &notify_lag) {
            Ok(()) => eprintln!("plot written to {}", path.display()),
            // The figures are printed and the counts checked; a missing plot must not hide that.
            Err(error) => eprintln!("no plot: {error}"),
        }
    }
    if let Some(stack) = stack {
        stack.stop().await;
    }
    if report.listeners_short_of_final > 0 {
        eprintln!(
            "{} listeners never showed their stream's final count",
            report.listeners_short_of_final
        );
    }
    let faults_missed = verdict.is_some_and(|v| !v.missed().is_empty());
    if !report.exact || report.listeners_short_of_final > 0 || faults_missed {
        std::process::exit(1);
    }
    Ok(())
}
