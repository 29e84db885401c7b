//! Scheduled events (`Type: Schedule`, an EventBridge rule): which function, how often, with
//! what input. Only `rate(...)` expressions are read; the local stack invokes the function at
//! that rate with that input, as EventBridge would.

use super::{TemplateError, get, invalid, scalar};
use serde_yaml_ng::Value;
use std::time::Duration;

/// One scheduled invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEvent {
    /// `Function.Event`, for messages.
    pub logical_id: String,
    /// Logical id of the function.
    pub function: String,
    pub every: Duration,
    /// The event the function receives (`Input`; EventBridge's default event otherwise).
    pub input: Vec<u8>,
}

/// Reads a `Schedule` event's properties.
pub fn read_schedule(
    logical_id: &str,
    function: &str,
    properties: &Value,
) -> Result<ScheduledEvent, TemplateError> {
    let expression = get(properties, "Schedule")
        .and_then(scalar)
        .ok_or_else(|| invalid(logical_id, "Schedule must be a rate(...) expression"))?;
    let every = parse_rate(&expression).ok_or_else(|| {
        invalid(
            logical_id,
            format!("cannot read schedule {expression:?}: only rate(N unit) is supported locally"),
        )
    })?;
    let input = get(properties, "Input")
        .and_then(scalar)
        .unwrap_or_else(|| {
            r#"{"source":"aws.events","detail-type":"Scheduled Event","detail":{}}"#.into()
        });
    Ok(ScheduledEvent {
        logical_id: logical_id.to_owned(),
        function: function.to_owned(),
        every,
        input: input.into_bytes(),
    })
}

/// `rate(1 minute)`, `rate(5 minutes)`, `rate(2 hours)`, `rate(1 day)`.
fn parse_rate(expression: &str) -> Option<Duration> {
    let inner = expression.trim().strip_prefix("rate(")?.strip_suffix(')')?;
    let (count, unit) = inner.trim().split_once(' ')?;
    let count: u64 = count.parse().ok().filter(|n| *n > 0)?;
    let seconds = match unit.trim() {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3_600,
        "day" | "days" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(count * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_read_and_anything_else_is_refused() {
        assert_eq!(parse_rate("rate(1 minute)"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_rate("rate(5 minutes)"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            parse_rate("rate(2 hours)"),
            Some(Duration::from_secs(7_200))
        );
        assert_eq!(parse_rate("rate(0 minutes)"), None);
        assert_eq!(parse_rate("cron(0 12 * * ? *)"), None);
        assert_eq!(parse_rate("rate(1 fortnight)"), None);
    }

    #[test]
    fn a_schedule_event_gives_its_rate_and_input() {
        let properties: Value = serde_yaml_ng::from_str(
            "Schedule: rate(1 minute)\nInput: '{\"emostream\":\"finalize\"}'",
        )
        .unwrap();
        let event = read_schedule("Aggregate.Tick", "Aggregate", &properties).unwrap();
        assert_eq!(event.every, Duration::from_secs(60));
        assert_eq!(event.input, br#"{"emostream":"finalize"}"#);
        let cron: Value = serde_yaml_ng::from_str("Schedule: cron(0 12 * * ? *)").unwrap();
        let error = read_schedule("Aggregate.Tick", "Aggregate", &cron).unwrap_err();
        assert!(error.to_string().contains("only rate"), "{error}");
    }
}
