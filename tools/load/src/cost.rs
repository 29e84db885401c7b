//! The AWS cost of a load run, projected from its measured rates at list prices: what an hour
//! of the same traffic would cost, and what one viewer costs per hour of watching.
//!
//! Prices: us-east-1 list prices as published on the AWS pricing pages for API Gateway
//! (HTTP APIs: first 300 million requests a month; WebSocket APIs: first billion messages, in
//! 32 KB units, and connection minutes), AWS AppSync Events (operations: each published event
//! and each delivery of up to 5 KB, and connection minutes) and Lambda (arm64, first 6 billion
//! GB-seconds a month), read on 2026-11-01. They change; this file is the one place to update
//! them.

use serde::Serialize;

/// Where the prices come from, printed beside every projection.
pub const PRICES_SOURCE: &str =
    "us-east-1 list prices of API Gateway, AppSync Events and Lambda (arm64), read 2026-11-01";

/// HTTP API, per request (up to 512 KB).
pub const HTTP_API_PER_REQUEST: f64 = 1.00 / 1e6;
/// WebSocket API, per message (either direction, metered in 32 KB units).
pub const WEBSOCKET_PER_MESSAGE: f64 = 1.00 / 1e6;
/// WebSocket API, per connection-minute.
pub const WEBSOCKET_PER_CONNECTION_MINUTE: f64 = 0.25 / 1e6;
/// AppSync Events, per operation (an inbound event, or a delivery of up to 5 KB).
pub const APPSYNC_EVENTS_PER_OPERATION: f64 = 1.00 / 1e6;
/// AppSync Events, per connection-minute.
pub const APPSYNC_EVENTS_PER_CONNECTION_MINUTE: f64 = 0.08 / 1e6;
/// Lambda arm64, per GB-second of billed duration.
pub const LAMBDA_ARM64_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Lambda, per request.
pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;

/// How updates reach viewers, which decides what each costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum DeliveryPricing {
    /// API Gateway WebSocket API: a message per push per viewer.
    #[default]
    WebSocketApi,
    /// AppSync Events: an operation per published event and per delivery.
    AppSyncEvents,
}

/// What a run measured, as rates per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct MeasuredRates {
    pub delivery: DeliveryPricing,
    /// Events notify published per second (AppSync Events only; 0 otherwise).
    pub published_events_per_s: f64,
    /// `POST /reactions` requests per second.
    pub http_requests_per_s: f64,
    /// Frames pushed to one listener per second.
    pub pushes_per_listener_per_s: f64,
    /// Lambda invocations per second, all functions.
    pub lambda_invocations_per_s: Option<f64>,
    /// Lambda GB-seconds per second (billed duration times the template's memory size).
    pub lambda_gb_s_per_s: Option<f64>,
}

/// The projection.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostProjection {
    /// The viewers the shared costs (HTTP API, Lambda) are spread over.
    pub audience: u64,
    pub delivery: DeliveryPricing,
    pub http_api_per_hour: f64,
    /// Pushes to the whole audience at the measured per-listener rate, plus (AppSync Events)
    /// the published events.
    pub delivery_messages_per_hour: f64,
    pub connection_minutes_per_hour: f64,
    /// None when the functions' durations were not measured (a stack this run did not start).
    pub lambda_per_hour: Option<f64>,
    pub total_per_hour: f64,
    pub per_viewer_hour: f64,
}

/// Projects an hour of the measured traffic for an `audience` of watching viewers: every viewer
/// receives what a listener received and holds one connection; HTTP requests and Lambda work
/// are what the run measured.
pub fn project(rates: MeasuredRates, audience: u64) -> CostProjection {
    const HOUR: f64 = 3_600.0;
    let viewers = audience.max(1) as f64;
    let http_api_per_hour = rates.http_requests_per_s * HOUR * HTTP_API_PER_REQUEST;
    let deliveries_per_hour = rates.pushes_per_listener_per_s * viewers * HOUR;
    let (delivery_messages_per_hour, connection_minutes_per_hour) = match rates.delivery {
        DeliveryPricing::WebSocketApi => (
            deliveries_per_hour * WEBSOCKET_PER_MESSAGE,
            viewers * 60.0 * WEBSOCKET_PER_CONNECTION_MINUTE,
        ),
        DeliveryPricing::AppSyncEvents => (
            (deliveries_per_hour + rates.published_events_per_s * HOUR)
                * APPSYNC_EVENTS_PER_OPERATION,
            viewers * 60.0 * APPSYNC_EVENTS_PER_CONNECTION_MINUTE,
        ),
    };
    let lambda_per_hour = match (rates.lambda_invocations_per_s, rates.lambda_gb_s_per_s) {
        (Some(invocations), Some(gb_s)) => {
            Some(invocations * HOUR * LAMBDA_PER_REQUEST + gb_s * HOUR * LAMBDA_ARM64_PER_GB_SECOND)
        }
        _ => None,
    };
    let total_per_hour = http_api_per_hour
        + delivery_messages_per_hour
        + connection_minutes_per_hour
        + lambda_per_hour.unwrap_or(0.0);
    CostProjection {
        audience: audience.max(1),
        delivery: rates.delivery,
        http_api_per_hour,
        delivery_messages_per_hour,
        connection_minutes_per_hour,
        lambda_per_hour,
        total_per_hour,
        per_viewer_hour: total_per_hour / viewers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_push_per_second_costs_what_the_design_says() {
        // One viewer, one push a second, nothing else: 3,600 messages and 60 connection-minutes.
        let rates = MeasuredRates {
            pushes_per_listener_per_s: 1.0,
            ..MeasuredRates::default()
        };
        let projection = project(rates, 1);
        assert!((projection.delivery_messages_per_hour - 0.0036).abs() < 1e-12);
        assert!((projection.connection_minutes_per_hour - 0.000_015).abs() < 1e-12);
        assert!((projection.per_viewer_hour - 0.003_615).abs() < 1e-12);
        assert_eq!(projection.lambda_per_hour, None);
    }

    #[test]
    fn appsync_events_bills_deliveries_publishes_and_cheaper_connection_minutes() {
        // A million viewers, one push a second on one stream: a million deliveries and one
        // published event per second.
        let rates = MeasuredRates {
            delivery: DeliveryPricing::AppSyncEvents,
            published_events_per_s: 1.0,
            pushes_per_listener_per_s: 1.0,
            ..MeasuredRates::default()
        };
        let projection = project(rates, 1_000_000);
        let operations = (1_000_000.0 + 1.0) * 3_600.0;
        assert!((projection.delivery_messages_per_hour - operations * 1e-6).abs() < 1e-6);
        assert!((projection.connection_minutes_per_hour - 60e6 * 0.08e-6).abs() < 1e-9);
        let per_viewer = projection.per_viewer_hour;
        assert!(
            (per_viewer - (0.0036 + 0.000_004_8)).abs() < 1e-8,
            "{per_viewer}"
        );
    }

    #[test]
    fn shared_costs_are_spread_over_the_audience() {
        let rates = MeasuredRates {
            http_requests_per_s: 1_000.0,
            pushes_per_listener_per_s: 0.0,
            lambda_invocations_per_s: Some(100.0),
            lambda_gb_s_per_s: Some(2.0),
            ..MeasuredRates::default()
        };
        let small = project(rates, 1_000);
        let large = project(rates, 100_000);
        assert!((small.http_api_per_hour - 3.6).abs() < 1e-9);
        let lambda = 100.0 * 3_600.0 * 0.2e-6 + 2.0 * 3_600.0 * 0.000_013_333_4;
        assert!((small.lambda_per_hour.unwrap() - lambda).abs() < 1e-9);
        assert!(large.per_viewer_hour < small.per_viewer_hour);
    }
}
