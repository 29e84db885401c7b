//! A small load run in each delivery mode against the local stack (real Kafka-wire broker and
//! MongoDB-wire server): viewers' reactions are counted exactly, and every listener, a
//! WebSocket API connection or an AppSync Events subscriber, shows its stream's final counts.
//! The WebSocket API run has viewer identity on: every viewer posts and every listener
//! connects with a token from the stack's demo issuer.

use emostream_local::api_gateway::websocket::Limits;
use emostream_local::stack::DemoIssuerOptions;
use emostream_tests::local_stack::TestStack;
use load::audiences::Audiences;
use load::listeners::{LiveUpdates, PAGE_KEEPALIVE};
use load::profile::Profile;
use load::run::{RunPlan, run, viewer_tokens};
use std::time::Duration;

/// API Gateway's idle limit, shortened, and how often the listeners ping.
struct Idle {
    limit: Duration,
    keepalive: Duration,
}

async fn small_run(delivery: &str, identity: bool, idle: Option<Idle>) -> load::run::RunReport {
    let idle_limit = idle.as_ref().map(|idle| idle.limit);
    let test = TestStack::start(&format!("load-{delivery}"), |options| {
        options
            .local
            .parameters
            .insert("Delivery".into(), delivery.into());
        if identity {
            options.demo_issuer = Some(DemoIssuerOptions::default());
        }
        if let Some(limit) = idle_limit {
            options.limits = Limits {
                idle: limit,
                ..Limits::default()
            };
        }
    })
    .await;
    let stack = &test.stack;
    let viewers = 20;
    let viewer_tokens = stack
        .demo_issuer
        .as_ref()
        .map(|issuer| viewer_tokens(issuer, viewers));
    let live = match &stack.event_api {
        Some(_) => LiveUpdates::AppSyncEvents {
            realtime_url: stack.event_realtime_url.clone().unwrap(),
            http_host: stack.event_http_host.clone().unwrap(),
            credential: stack.event_credential("listener").unwrap(),
            namespace: "streams".into(),
        },
        None => LiveUpdates::WebSocketApi {
            url: stack.websocket_url.clone().unwrap(),
            token: stack
                .demo_issuer
                .as_ref()
                .map(|issuer| issuer.token_for("listener")),
            keepalive: idle.as_ref().map_or(PAGE_KEEPALIVE, |idle| idle.keepalive),
        },
    };
    assert_eq!(
        matches!(live, LiveUpdates::AppSyncEvents { .. }),
        delivery == "AppSyncEvents"
    );
    let plan = RunPlan {
        api: stack.http_url.clone(),
        live,
        viewers,
        streams: 2,
        rate: 200.0,
        // Past the idle limit when one is set, so listeners live through it.
        duration: Duration::from_secs(match idle_limit {
            Some(_) => 7,
            None => 3,
        }),
        warmup: Duration::from_secs(1),
        profile: Profile::Steady,
        audiences: Audiences::Uniform,
        listeners_per_stream: 3,
        batch_interval: Duration::from_millis(500),
        max_in_flight: 32,
        retry_for: Duration::from_secs(60),
        settle_timeout: Duration::from_secs(60),
        run_id: emostream_tests::unique_name("load"),
        viewer_tokens,
        check_moments: false,
    };
    let report = run(&plan).await.unwrap();
    assert!(report.exact, "{:?}", report.differences);
    assert!(report.accepted_reactions > 0);
    assert_eq!(report.listeners, 6);
    assert_eq!(report.listeners_short_of_final, 0);
    if idle_limit.is_none() && delivery == "WebSocketApi" {
        assert_eq!(report.listener_reconnects, 0, "no connection closed");
    }
    assert!(report.updates_per_listener_min > 0);
    // Uniform audiences: both streams alike, each with its own figures.
    assert_eq!(report.audiences, "uniform");
    let audiences: Vec<(usize, usize, usize)> = report
        .per_stream
        .iter()
        .map(|s| (s.stream, s.viewers, s.listeners))
        .collect();
    assert_eq!(audiences, [(0, 10, 3), (1, 10, 3)]);
    if let Some(worst) = report.worst_stream_p99_ms {
        assert!(report.per_stream.iter().all(|s| s.p99_ms <= worst));
    }
    // The notify trigger's lag can be read while the stack runs.
    assert!(test.stack.records_behind("NotifyFunction").is_some());
    assert_eq!(test.stack.records_behind("NoSuchFunction"), None);
    test.stack.stop().await;
    report
}

#[tokio::test]
async fn a_load_run_over_the_websocket_api_is_exact() {
    small_run("WebSocketApi", true, None).await;
}

#[tokio::test]
async fn a_load_run_over_appsync_events_is_exact() {
    small_run("AppSyncEvents", false, None).await;
}

#[tokio::test]
async fn listeners_that_ping_like_the_page_outlive_the_idle_limit() {
    // A run longer than the idle limit; pings ten times as often.
    let idle = Idle {
        limit: Duration::from_secs(4),
        keepalive: Duration::from_millis(400),
    };
    let report = small_run("WebSocketApi", false, Some(idle)).await;
    assert_eq!(report.listener_reconnects, 0);
}

#[tokio::test]
async fn listeners_whose_connection_closes_connect_again_and_catch_up() {
    // No ping before the idle limit closes the connections: every listener is closed under it
    // at least once, connects again and syncs, and still shows its stream's final counts.
    let idle = Idle {
        limit: Duration::from_secs(4),
        keepalive: Duration::from_secs(3_600),
    };
    let report = small_run("WebSocketApi", false, Some(idle)).await;
    assert!(
        report.listener_reconnects >= 6,
        "{}",
        report.listener_reconnects
    );
    assert!(
        report.repairs >= report.listener_reconnects,
        "every reconnect syncs: {} repairs",
        report.repairs
    );
}
