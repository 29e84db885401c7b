//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines: one JSON object on stdout that
//! CloudWatch turns into metrics without any API call, so a function pays no latency for them.
//! Each function writes one line per invocation. Every metric has two dimension sets:
//! `Function` (`ingest`, `aggregate`, `notify`: all stacks of an account together) and, inside
//! Lambda, `FunctionName` (the deployed function, so one stack's alarms see only its own).

use serde_json::{Map, Value, json};

/// The CloudWatch namespace every emostream metric goes to.
pub const NAMESPACE: &str = "emostream";

/// A CloudWatch metric unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// The deployed function's name, which Lambda sets in every function's environment.
fn deployed_name() -> Option<String> {
    static NAME: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::env::var("AWS_LAMBDA_FUNCTION_NAME")
            .ok()
            .filter(|name| !name.is_empty())
    })
    .clone()
}

/// One EMF line under construction: the dimensions plus named values.
#[derive(Debug, Clone)]
pub struct MetricsLine {
    function: String,
    function_name: Option<String>,
    metrics: Vec<(String, Unit, f64)>,
    properties: Map<String, Value>,
}

impl MetricsLine {
    /// A line for `function` (the `Function` dimension).
    pub fn new(function: &str) -> Self {
        Self {
            function: function.to_owned(),
            function_name: deployed_name(),
            metrics: Vec::new(),
            properties: Map::new(),
        }
    }

    /// Sets the `FunctionName` dimension (Lambda's function name; read from the environment
    /// by [`MetricsLine::new`]).
    pub fn deployed_as(mut self, function_name: &str) -> Self {
        self.function_name = Some(function_name.to_owned());
        self
    }

    /// Adds a count. Adding the same name twice sums the values.
    pub fn count(mut self, name: &str, value: u64) -> Self {
        self.add(name, Unit::Count, value as f64);
        self
    }

    /// Adds a duration in milliseconds.
    pub fn millis(mut self, name: &str, value: f64) -> Self {
        self.add(name, Unit::Milliseconds, value);
        self
    }

    /// Adds a searchable property that is not a metric (e.g. the request id).
    pub fn property(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.properties.insert(name.to_owned(), value.into());
        self
    }

    fn add(&mut self, name: &str, unit: Unit, value: f64) {
        match self.metrics.iter_mut().find(|(n, _, _)| n == name) {
            Some(existing) => existing.2 += value,
            None => self.metrics.push((name.to_owned(), unit, value)),
        }
    }

    /// The EMF JSON object, stamped with `timestamp_ms`.
    pub fn to_json(&self, timestamp_ms: i64) -> Value {
        let definitions: Vec<Value> = self
            .metrics
            .iter()
            .map(|(name, unit, _)| json!({ "Name": name, "Unit": unit.as_str() }))
            .collect();
        let mut line = self.properties.clone();
        let mut dimensions = vec![json!(["Function"])];
        if let Some(name) = &self.function_name {
            dimensions.push(json!(["FunctionName"]));
            line.insert("FunctionName".into(), Value::from(name.clone()));
        }
        line.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": definitions,
                }],
            }),
        );
        line.insert("Function".into(), Value::from(self.function.clone()));
        for (name, _, value) in &self.metrics {
            line.insert(name.clone(), json!(value));
        }
        Value::Object(line)
    }

    /// Writes the line to stdout, where the Lambda log agent picks it up.
    pub fn emit(&self) {
        println!("{}", self.to_json(crate::clock::now_ms()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_every_metric_it_carries() {
        let line = MetricsLine::new("ingest")
            .count("Accepted", 3)
            .count("Rejected.unknown_emoji", 1)
            .count("Rejected.unknown_emoji", 2)
            .millis("ProduceLatency", 4.5)
            .property("RequestId", "r-1")
            .to_json(1_700_000_000_000);
        assert_eq!(line["_aws"]["Timestamp"], 1_700_000_000_000_u64);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "emostream");
        assert_eq!(directive["Dimensions"], json!([["Function"]]));
        assert_eq!(
            directive["Metrics"],
            json!([
                {"Name": "Accepted", "Unit": "Count"},
                {"Name": "Rejected.unknown_emoji", "Unit": "Count"},
                {"Name": "ProduceLatency", "Unit": "Milliseconds"},
            ])
        );
        assert_eq!(line["Function"], "ingest");
        assert_eq!(line["Accepted"], 3.0);
        assert_eq!(line["Rejected.unknown_emoji"], 3.0);
        assert_eq!(line["ProduceLatency"], 4.5);
        assert_eq!(line["RequestId"], "r-1");
    }

    #[test]
    fn inside_lambda_metrics_are_also_per_deployed_function() {
        let line = MetricsLine::new("aggregate")
            .deployed_as("emostream-AggregateFunction-Ab12")
            .count("DeadLettered", 2)
            .to_json(1_700_000_000_000);
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(
            directive["Dimensions"],
            json!([["Function"], ["FunctionName"]])
        );
        assert_eq!(line["Function"], "aggregate");
        assert_eq!(line["FunctionName"], "emostream-AggregateFunction-Ab12");
    }
}
