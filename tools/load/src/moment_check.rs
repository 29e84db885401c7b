//! How well moments were found (`--moments`): once the counts settled and every moment is
//! confirmed (or withdrawn), each stream's moments of the measured run are read
//! (`GET /streams/{id}/moments`) and matched with the spikes the profile scripted (see
//! `profile::ScriptedSpike`). A spike of three times the baseline or more is found when a
//! moment's first spike window lies within it (a window either side) and the moment was first
//! stored after the spike began; the first such moment is the spike's, any other is a false
//! one, as is a moment that matches no such spike (a bump of 1.5 times, or noise). Detection
//! time is from the spike's start (when the viewers began tapping at its rate) to when its
//! moment was first stored, provisional or confirmed; the push to viewers follows within a
//! fan-out. Moments before the measured run (its warm-up) are left out, as its stream-hours
//! are.

use crate::profile::ScriptedSpike;
use crate::report::{Percentiles, weighted_percentiles};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Serialize;

/// One moment as the route lists it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoundMoment {
    pub detected_from_ms: i64,
    pub first_seen_ms: i64,
    /// Still provisional: the moments are not settled yet.
    pub provisional: bool,
}

/// The figures of moment detection over a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MomentsReport {
    /// Scripted spikes of three times the baseline or more, over every stream.
    pub spikes: u64,
    pub spikes_found: u64,
    pub recall: f64,
    /// Moments stored over every stream, and those that match no spike.
    pub moments: u64,
    pub false_moments: u64,
    pub precision: f64,
    /// Scripted bumps (1.5 times) taken for moments.
    pub bumps_taken: u64,
    /// From a spike's start to its moment first stored.
    pub detection_ms: Percentiles,
    pub detection_p95_ms: f64,
    /// False moments per stream-hour of the measured run.
    pub false_per_stream_hour: f64,
    pub stream_hours: f64,
    /// The spikes not found: stream (by index), start (s into the run), factor, and the
    /// nearest moment of the stream (its first spike window's start less the spike's, in ms).
    pub missed: Vec<(usize, f64, f64, Option<i64>)>,
}

/// Matches each stream's `found` moments with the `scripted` changes, which began at
/// `start_ms` (ms since the epoch) in every stream; `width_ms` is the window width.
pub fn score(
    found: &[Vec<FoundMoment>],
    scripted: &[ScriptedSpike],
    start_ms: i64,
    width_ms: i64,
    stream_hours: f64,
) -> MomentsReport {
    let at = |s: f64| start_ms + (s * 1_000.0) as i64;
    let matches = |change: &ScriptedSpike, moment: &FoundMoment| {
        (at(change.start_s) - width_ms..at(change.end_s) + width_ms)
            .contains(&moment.detected_from_ms)
            && moment.first_seen_ms >= at(change.start_s)
    };
    let mut report = MomentsReport {
        stream_hours,
        ..MomentsReport::default()
    };
    let mut detection = Vec::new();
    for (stream, moments) in found.iter().enumerate() {
        let moments: Vec<&FoundMoment> = moments
            .iter()
            .filter(|m| m.detected_from_ms >= start_ms - width_ms)
            .collect();
        report.moments += moments.len() as u64;
        let mut found_spikes = 0;
        for change in scripted {
            let first = moments
                .iter()
                .filter(|m| matches(change, m))
                .map(|m| m.first_seen_ms)
                .min();
            if change.factor >= 3.0 {
                report.spikes += 1;
                if let Some(seen) = first {
                    found_spikes += 1;
                    detection.push(((seen - at(change.start_s)) as f64, 1));
                } else {
                    let nearest = moments
                        .iter()
                        .map(|m| m.detected_from_ms - at(change.start_s))
                        .min_by_key(|d| d.abs());
                    report
                        .missed
                        .push((stream, change.start_s, change.factor, nearest));
                }
            } else if first.is_some() {
                report.bumps_taken += 1;
            }
        }
        report.spikes_found += found_spikes;
        // One true moment per spike found; the rest (a second moment of a spike, a bump's,
        // noise's) are false.
        report.false_moments += moments.len() as u64 - found_spikes;
    }
    let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
    report.recall = ratio(report.spikes_found, report.spikes);
    report.precision = ratio(report.moments - report.false_moments, report.moments);
    report.false_per_stream_hour = report.false_moments as f64 / stream_hours.max(f64::EPSILON);
    let mut sorted: Vec<f64> = detection.iter().map(|(ms, _)| *ms).collect();
    sorted.sort_by(f64::total_cmp);
    report.detection_p95_ms = sorted
        .get(((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(0.0);
    report.detection_ms = weighted_percentiles(detection);
    report
}

/// Reads the moments of `stream_id` (withdrawn ones are not listed).
pub async fn read_moments(
    client: &Client<HttpConnector, Full<Bytes>>,
    api: &str,
    stream_id: &str,
) -> Result<Vec<FoundMoment>, String> {
    let url = format!("{api}/streams/{stream_id}/moments");
    let value = crate::verify::get_json(client, &url).await?;
    Ok(value["moments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            Some(FoundMoment {
                detected_from_ms: m["detected_from_ms"].as_i64()?,
                first_seen_ms: m["first_seen_ms"].as_i64()?,
                provisional: m["status"].as_str()? == "provisional",
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(start_s: f64, factor: f64) -> ScriptedSpike {
        ScriptedSpike {
            start_s,
            end_s: start_s + 10.0,
            factor,
        }
    }

    #[test]
    fn spikes_are_matched_with_moments_starting_inside_them() {
        let scripted = [change(60.0, 3.0), change(105.0, 1.5), change(150.0, 4.0)];
        let start = 1_000_000;
        let moment = |s: f64, after_ms: i64| FoundMoment {
            detected_from_ms: start + (s * 1_000.0) as i64,
            first_seen_ms: start + (s * 1_000.0) as i64 + after_ms,
            provisional: false,
        };
        let found = vec![
            // Stream 0: both spikes, the first proposed 1.5 s in, and a bump taken.
            vec![
                moment(60.0, 1_500),
                moment(106.0, 2_000),
                moment(152.0, 2_500),
            ],
            // Stream 1: the first spike only, twice (the second a false one), a moment of
            // noise, and one of the warm-up (left out).
            vec![
                moment(62.0, 900),
                moment(66.0, 300),
                moment(30.0, 1_000),
                moment(-4.0, 0),
            ],
        ];
        let report = score(&found, &scripted, start, 2_000, 0.5);
        assert_eq!((report.spikes, report.spikes_found), (4, 3));
        assert_eq!(
            (report.moments, report.false_moments, report.bumps_taken),
            (6, 3, 1)
        );
        assert_eq!(report.recall, 0.75);
        assert_eq!(report.precision, 0.5);
        assert_eq!(report.false_per_stream_hour, 6.0);
        // From the spike's start: 1.5 s, 4.5 s (152 s stored 2.5 s later), 2.9 s.
        assert_eq!(report.detection_p95_ms, 4_500.0);
        assert_eq!(report.detection_ms.samples, 3);
    }
}
