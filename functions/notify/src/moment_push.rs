//! Pushing moments (see `reactions::moments`): each change of a moment that aggregate publishes
//! goes to every viewer of its stream as one `moment` frame, at once and outside the push
//! schedule and its post budget. aggregate publishes a moment when it is proposed, when it
//! appears or is confirmed, when it ends, and when it is withdrawn (not at every window it
//! grows by): two to four frames per moment, and a stream has a few moments an hour, against
//! the 3,600 `windows` frames an hour a viewer gets. A batch's records are coalesced first:
//! per moment, only the change of the highest revision is sent.

use crate::fanout::{Audience, FanoutReport, PostPolicy, post_to_audience};
use crate::protocol::ServerMessage;
use crate::publish::publish_events;
use crate::push::PushTargets;
use reactions::mongo::StoreError;
use reactions::{MomentRecord, StreamId};
use std::collections::BTreeMap;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The newest change of each moment in `records`, by stream and then moment.
pub fn newest_changes(records: Vec<MomentRecord>) -> Vec<MomentRecord> {
    let mut newest: BTreeMap<(StreamId, i64), MomentRecord> = BTreeMap::new();
    for record in records {
        let key = (record.stream.clone(), record.moment.detected_from_ms);
        match newest.get(&key) {
            Some(known) if known.revision >= record.revision => {}
            _ => {
                newest.insert(key, record);
            }
        }
    }
    newest.into_values().collect()
}

fn frame(record: MomentRecord) -> ServerMessage {
    ServerMessage::Moment {
        stream: record.stream,
        moment: record.moment,
        status: record.status,
        revision: record.revision,
    }
}

/// Sends each moment change to its stream's viewers: posted to every connection watching it,
/// or published once to its channel in `AppSyncEvents` delivery. Fails only when MongoDB
/// cannot be read (the batch is then retried; a viewer may get a change twice, which the
/// revision makes harmless).
pub async fn push_moments(
    records: Vec<MomentRecord>,
    targets: &PushTargets<'_>,
    policy: PostPolicy,
    deadline: Instant,
) -> Result<FanoutReport, StoreError> {
    let mut total = FanoutReport::default();
    let permits = Semaphore::new(policy.concurrency.max(1));
    for record in newest_changes(records) {
        let stream = record.stream.clone();
        let message = frame(record);
        let report = match targets.events {
            Some(target) => {
                publish_events(
                    &stream,
                    vec![message.to_text()],
                    target,
                    policy.throttle_budget,
                    deadline,
                    FanoutReport {
                        streams: 1,
                        ..FanoutReport::default()
                    },
                )
                .await
            }
            None => {
                post_to_audience(
                    &stream,
                    &message.to_bytes(),
                    targets.connections,
                    targets.api,
                    policy,
                    &permits,
                    deadline,
                    Audience::Paged(None),
                )
                .await?
                .report
            }
        };
        total.add(&report);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reactions::message::VersionedMessage;
    use reactions::moments::{Moment, MomentStatus};

    fn record(stream: &str, from_ms: i64, status: MomentStatus, revision: i64) -> MomentRecord {
        MomentRecord {
            v: MomentRecord::VERSION,
            stream: StreamId::parse("stream", stream).unwrap(),
            moment: Moment {
                detected_from_ms: from_ms,
                start_ms: from_ms - 10_000,
                end_ms: from_ms + 7_000,
                peak_rate: 120.0,
                emoji: "fire".into(),
                ended: false,
            },
            status,
            revision,
        }
    }

    #[test]
    fn only_the_newest_change_of_each_moment_is_sent() {
        let newest = newest_changes(vec![
            record("a", 10_000, MomentStatus::Confirmed, 14_000),
            record("a", 10_000, MomentStatus::Provisional, 0),
            record("a", 10_000, MomentStatus::Confirmed, 16_000),
            record("a", 50_000, MomentStatus::Withdrawn, 54_000),
            record("b", 10_000, MomentStatus::Provisional, 0),
        ]);
        let seen: Vec<(&str, i64, i64)> = newest
            .iter()
            .map(|r| (r.stream.as_str(), r.moment.detected_from_ms, r.revision))
            .collect();
        assert_eq!(
            seen,
            [
                ("a", 10_000, 16_000),
                ("a", 50_000, 54_000),
                ("b", 10_000, 0)
            ]
        );
        let frame: serde_json::Value =
            serde_json::from_str(&frame(newest[1].clone()).to_text()).unwrap();
        assert_eq!(frame["type"], "moment");
        assert_eq!(frame["status"], "withdrawn");
        assert_eq!(frame["moment"]["detected_from_ms"], 50_000);
    }
}
