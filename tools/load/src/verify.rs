//! The exactness check: once sending stops, the counts stored for each stream (read back through
//! `GET /streams/{id}/windows`) must equal, emoji by emoji, the taps of the accepted requests.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use std::collections::BTreeMap;

/// Taps per emoji.
pub type Counts = BTreeMap<String, u64>;

/// GETs `url` and reads its JSON answer; anything but a 2xx is an error naming the URL.
pub async fn get_json(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
) -> Result<serde_json::Value, String> {
    let request = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}

/// Reads the stored counts of `stream_id` summed over its windows since `since_ms`.
pub async fn stored_counts(
    client: &Client<HttpConnector, Full<Bytes>>,
    api: &str,
    stream_id: &str,
    since_ms: i64,
) -> Result<Counts, String> {
    let url = format!("{api}/streams/{stream_id}/windows?since={since_ms}&limit=500");
    let value = get_json(client, &url).await?;
    let mut counts = Counts::new();
    for window in value["windows"].as_array().into_iter().flatten() {
        for (emoji, n) in window["counts"].as_object().into_iter().flatten() {
            *counts.entry(emoji.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
        }
    }
    Ok(counts)
}

/// Describes how `stored` differs from `accepted` (empty when equal).
pub fn differences(accepted: &Counts, stored: &Counts) -> Vec<String> {
    let mut emojis: Vec<&String> = accepted.keys().chain(stored.keys()).collect();
    emojis.sort();
    emojis.dedup();
    emojis
        .into_iter()
        .filter_map(|emoji| {
            let (a, s) = (
                accepted.get(emoji).copied().unwrap_or(0),
                stored.get(emoji).copied().unwrap_or(0),
            );
            (a != s).then(|| format!("{emoji}: accepted {a}, stored {s}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_emoji_that_is_off() {
        let accepted = Counts::from([("fire".into(), 3), ("clap".into(), 1)]);
        assert!(differences(&accepted, &accepted).is_empty());
        let stored = Counts::from([("fire".into(), 4)]);
        assert_eq!(
            differences(&accepted, &stored),
            ["clap: accepted 1, stored 0", "fire: accepted 3, stored 4"]
        );
    }
}
