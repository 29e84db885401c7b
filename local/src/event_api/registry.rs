//! Who is subscribed to what in the emulated Event API: connections with their outgoing queues
//! and subscriptions, indexed by exact channel path, with wildcard subscriptions kept apart.
//! Delivery writes into each subscriber's bounded queue and never waits: a subscriber whose
//! queue is full has stopped reading and is closed.

use super::Outgoing;
use axum::extract::ws::Utf8Bytes;
use reactions::event_channel::matches;
use std::collections::{HashMap, HashSet};
use tokio::sync::{mpsc, watch};

/// Why the API ends a connection: its close code and reason.
pub(super) type Kick = Option<(u16, &'static str)>;

pub(super) struct Subscriber {
    pub(super) outbox: mpsc::Sender<Outgoing>,
    /// Ends the connection even when its queue is full (it stopped reading).
    pub(super) kick: watch::Sender<Kick>,
    /// Subscription id to channel pattern.
    pub(super) subscriptions: HashMap<String, Vec<String>>,
}

#[derive(Default)]
pub(super) struct Registry {
    pub(super) connections: HashMap<u64, Subscriber>,
    /// Subscriptions to exact channels, by channel path.
    exact: HashMap<String, HashSet<(u64, String)>>,
    /// Subscriptions ending in `*`: (connection, id, pattern).
    wildcards: Vec<(u64, String, Vec<String>)>,
}

/// What one delivery did.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Delivery {
    /// `data` messages queued.
    pub(super) delivered: u64,
    /// Subscribers closed because their queue was full.
    pub(super) dropped_slow: u64,
}

fn is_wildcard(pattern: &[String]) -> bool {
    pattern.last().map(String::as_str) == Some("*")
}

fn path_of(pattern: &[String]) -> String {
    format!("/{}", pattern.join("/"))
}

impl Registry {
    pub(super) fn register(
        &mut self,
        connection: u64,
        outbox: mpsc::Sender<Outgoing>,
        kick: watch::Sender<Kick>,
    ) {
        self.connections.insert(
            connection,
            Subscriber {
                outbox,
                kick,
                subscriptions: HashMap::new(),
            },
        );
    }

    /// Ends every connection with `code` and `reason`; how many.
    pub(super) fn kick_all(&self, code: u16, reason: &'static str) -> usize {
        for subscriber in self.connections.values() {
            subscriber.kick.send_replace(Some((code, reason)));
        }
        self.connections.len()
    }

    pub(super) fn unregister(&mut self, connection: u64) {
        if let Some(subscriber) = self.connections.remove(&connection) {
            for (id, pattern) in subscriber.subscriptions {
                self.remove_index(connection, &id, &pattern);
            }
        }
    }

    /// Adds a subscription; true when no one held `pattern` before. The error is AppSync's
    /// `errorType`.
    pub(super) fn subscribe(
        &mut self,
        connection: u64,
        id: &str,
        pattern: Vec<String>,
        limit: usize,
    ) -> Result<bool, &'static str> {
        let subscriber = self
            .connections
            .get_mut(&connection)
            .ok_or("InternalFailure")?;
        if subscriber.subscriptions.contains_key(id) {
            return Err("DuplicatedOperationError");
        }
        if subscriber.subscriptions.len() >= limit {
            return Err("MaxSubscriptionsReachedError");
        }
        subscriber
            .subscriptions
            .insert(id.to_owned(), pattern.clone());
        let first = self.holding(&pattern).is_empty();
        if is_wildcard(&pattern) {
            self.wildcards.push((connection, id.to_owned(), pattern));
        } else {
            self.exact
                .entry(path_of(&pattern))
                .or_default()
                .insert((connection, id.to_owned()));
        }
        Ok(first)
    }

    pub(super) fn unsubscribe(&mut self, connection: u64, id: &str) -> bool {
        let Some(pattern) = self
            .connections
            .get_mut(&connection)
            .and_then(|s| s.subscriptions.remove(id))
        else {
            return false;
        };
        self.remove_index(connection, id, &pattern);
        true
    }

    fn remove_index(&mut self, connection: u64, id: &str, pattern: &[String]) {
        if is_wildcard(pattern) {
            self.wildcards
                .retain(|(c, i, _)| !(*c == connection && i == id));
        } else {
            let path = path_of(pattern);
            if let Some(set) = self.exact.get_mut(&path) {
                set.remove(&(connection, id.to_owned()));
                if set.is_empty() {
                    self.exact.remove(&path);
                }
            }
        }
    }

    /// The subscriptions an event published to `channel` reaches.
    pub(super) fn matching(&self, channel: &[&str]) -> Vec<(u64, &str)> {
        let exact = self
            .exact
            .get(&format!("/{}", channel.join("/")))
            .into_iter()
            .flatten()
            .map(|(c, i)| (*c, i.as_str()));
        let wild = self
            .wildcards
            .iter()
            .filter(|(_, _, pattern)| {
                let pattern: Vec<&str> = pattern.iter().map(String::as_str).collect();
                matches(&pattern, channel)
            })
            .map(|(c, i, _)| (*c, i.as_str()));
        exact.chain(wild).collect()
    }

    /// The subscriptions to exactly `pattern`.
    pub(super) fn holding(&self, pattern: &[String]) -> Vec<(u64, &str)> {
        if is_wildcard(pattern) {
            self.wildcards
                .iter()
                .filter(|(_, _, p)| p == pattern)
                .map(|(c, i, _)| (*c, i.as_str()))
                .collect()
        } else {
            self.exact
                .get(&path_of(pattern))
                .into_iter()
                .flatten()
                .map(|(c, i)| (*c, i.as_str()))
                .collect()
        }
    }

    /// Queues each event (a JSON document as text) to each of `targets` as a `data` message.
    /// Subscribers with the same subscription id share one copy of the message.
    pub(super) fn send(&self, targets: Vec<(u64, &str)>, events: &[&str]) -> Delivery {
        let encoded: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect();
        let mut delivery = Delivery::default();
        let mut frames: Option<(&str, Vec<Utf8Bytes>)> = None;
        for (connection, id) in targets {
            let Some(subscriber) = self.connections.get(&connection) else {
                continue;
            };
            let frames = match &mut frames {
                Some((last, frames)) if *last == id => frames,
                slot => {
                    let quoted = serde_json::to_string(id).unwrap_or_default();
                    let built = encoded
                        .iter()
                        .map(|event| {
                            Utf8Bytes::from(format!(
                                r#"{{"type":"data","id":{quoted},"event":{event}}}"#
                            ))
                        })
                        .collect();
                    &mut slot.insert((id, built)).1
                }
            };
            for frame in frames.iter() {
                match subscriber.outbox.try_send(Outgoing::Text(frame.clone())) {
                    Ok(()) => delivery.delivered += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        delivery.dropped_slow += 1;
                        subscriber.kick.send_replace(Some((1008, "Too slow")));
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                }
            }
        }
        delivery
    }
}
