//! API Gateway WebSocket route events, as API Gateway sends them to a Lambda integration: the
//! `$connect` event with the handshake's query and headers, message events with the frame in
//! `body`, and `$disconnect`. The local stack's WebSocket API and notify's tests build their
//! events here, so both speak exactly what AWS speaks.

use serde_json::{Map, Value, json};

/// What API Gateway knows about one connection, repeated in every event of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionContext {
    /// The connection id (`@connections/{id}`).
    pub connection_id: String,
    /// API id and stage, as in the management endpoint.
    pub api_id: String,
    pub stage: String,
    /// The host the browser connected to.
    pub domain_name: String,
    /// When the connection was accepted, ms since the epoch.
    pub connected_at_ms: i64,
    /// The browser's address.
    pub source_ip: String,
}

fn request_context(
    connection: &ConnectionContext,
    route_key: &str,
    event_type: &str,
    now_ms: i64,
    request_id: &str,
) -> Value {
    json!({
        "routeKey": route_key,
        "eventType": event_type,
        "extendedRequestId": request_id,
        "requestTime": http_date(now_ms),
        "messageDirection": "IN",
        "stage": connection.stage,
        "connectedAt": connection.connected_at_ms,
        "requestTimeEpoch": now_ms,
        "identity": { "sourceIp": connection.source_ip },
        "requestId": request_id,
        "domainName": connection.domain_name,
        "connectionId": connection.connection_id,
        "apiId": connection.api_id,
    })
}

fn single_and_multi(pairs: &[(String, String)]) -> (Value, Value) {
    let mut single = Map::new();
    let mut multi: Map<String, Value> = Map::new();
    for (name, value) in pairs {
        single.insert(name.clone(), Value::from(value.as_str()));
        if let Value::Array(list) = multi
            .entry(name.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            list.push(Value::from(value.as_str()));
        }
    }
    (Value::Object(single), Value::Object(multi))
}

/// The `$connect` event for a handshake with `query` parameters and `headers`.
pub fn connect_event(
    connection: &ConnectionContext,
    query: &[(String, String)],
    headers: &[(String, String)],
    now_ms: i64,
    request_id: &str,
) -> Value {
    let (headers, multi_headers) = single_and_multi(headers);
    let mut event = json!({
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "requestContext": request_context(connection, "$connect", "CONNECT", now_ms, request_id),
        "isBase64Encoded": false,
    });
    if !query.is_empty() {
        let (query, multi_query) = single_and_multi(query);
        event["queryStringParameters"] = query;
        event["multiValueQueryStringParameters"] = multi_query;
    }
    event
}

/// A message event: a text frame routed to `route_key`.
pub fn message_event(
    connection: &ConnectionContext,
    route_key: &str,
    body: &str,
    now_ms: i64,
    request_id: &str,
) -> Value {
    let mut context = request_context(connection, route_key, "MESSAGE", now_ms, request_id);
    context["messageId"] = Value::from(format!("{request_id}-m"));
    json!({ "requestContext": context, "body": body, "isBase64Encoded": false })
}

/// The `$disconnect` event, with the close status API Gateway reports.
pub fn disconnect_event(
    connection: &ConnectionContext,
    status_code: u16,
    reason: &str,
    now_ms: i64,
    request_id: &str,
) -> Value {
    let mut context = request_context(connection, "$disconnect", "DISCONNECT", now_ms, request_id);
    context["disconnectStatusCode"] = Value::from(status_code);
    context["disconnectReason"] = Value::from(reason);
    json!({
        "headers": { "Host": connection.domain_name },
        "multiValueHeaders": { "Host": [connection.domain_name] },
        "requestContext": context,
        "isBase64Encoded": false,
    })
}

/// (year, month 1-12, day, hour, minute, second) of `ms` since the epoch, in UTC.
fn civil(ms: i64) -> (i64, i64, i64, i64, i64, i64) {
    let seconds = ms.div_euclid(1_000);
    let (days, in_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        in_day / 3_600,
        in_day % 3_600 / 60,
        in_day % 60,
    )
}

/// `dd/Mon/yyyy:HH:MM:SS +0000`, API Gateway's `requestTime` format.
pub fn http_date(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day, hour, minute, second) = civil(ms);
    format!(
        "{day:02}/{}/{year}:{hour:02}:{minute:02}:{second:02} +0000",
        MONTHS[(month - 1) as usize]
    )
}

/// `yyyy-mm-ddTHH:MM:SS.sssZ`, as the management API reports connection times.
pub fn iso8601(ms: i64) -> String {
    let (year, month, day, hour, minute, second) = civil(ms);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        ms.rem_euclid(1_000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_time_is_formatted_like_api_gateway() {
        assert_eq!(http_date(1_767_225_600_000), "01/Jan/2026:00:00:00 +0000");
        assert_eq!(http_date(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(http_date(1_795_832_345_000), "28/Nov/2026:02:19:05 +0000");
        assert_eq!(iso8601(1_795_832_345_042), "2026-11-28T02:19:05.042Z");
    }
}
