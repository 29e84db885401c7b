//! The `viewer_taps` collection: each viewer's state on each stream (see `viewer_state`), one
//! document per (stream, viewer): fair use's taps counted per recent window, the viewer's
//! recent idempotency keys and, per partition, the highest offset the state accounts for.
//! aggregate reads a batch's states in one `find` before it writes the windows, and writes them
//! back in one `update` after; ingest reads them to refuse a reused key. A document expires
//! [`KEY_MEMORY`] after its last write.

use super::{StoreError, WriteTimes, server};
use crate::idempotency::{KEY_MEMORY, SeenKey};
use crate::viewer_state::{ViewerState, ViewerStateWrite};
use crate::window_delta::PartitionKey;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use mongodb::{Collection, Database};
use std::collections::BTreeMap;

/// The `viewer_taps` collection.
#[derive(Debug, Clone)]
pub struct ViewerTapStore {
    database: Database,
    collection: Collection<Document>,
}

fn offset_path(partition: &PartitionKey) -> String {
    format!("offsets.{}", partition.field_name())
}

fn malformed(what: &str) -> StoreError {
    StoreError::Malformed(format!("viewer_taps document: {what}"))
}

fn state_from(document: &Document) -> Result<ViewerState, StoreError> {
    let rev = match document.get("rev") {
        None => 0,
        Some(rev) => super::integer(rev).ok_or_else(|| malformed("rev"))?,
    };
    let mut state = ViewerState {
        rev,
        ..ViewerState::default()
    };
    if let Ok(stored) = document.get_document("offsets") {
        for (name, value) in stored {
            let partition = PartitionKey::from_field_name(name).ok_or_else(|| malformed(name))?;
            let offset = super::integer(value).ok_or_else(|| malformed(name))?;
            state.offsets.insert(partition, offset);
        }
    }
    if let Ok(stored) = document.get_document("windows") {
        for (start, counted) in stored {
            let start: i64 = start.parse().map_err(|_| malformed("windows"))?;
            let counted = super::integer(counted)
                .and_then(|v| u64::try_from(v).ok())
                .ok_or_else(|| malformed("windows"))?;
            state.windows.insert(start, counted);
        }
    }
    match document.get("keys") {
        None => {}
        Some(Bson::Binary(packed)) => {
            state.keys = unpack_keys(&packed.bytes).ok_or_else(|| malformed("keys"))?;
        }
        // As the first release with keys wrote them: one subdocument per key.
        Some(Bson::Array(stored)) => {
            for entry in stored {
                let Bson::Document(entry) = entry else {
                    return Err(malformed("keys"));
                };
                let number = |name: &str| entry.get(name).and_then(super::integer);
                let Some(Bson::Binary(items)) = entry.get("i") else {
                    return Err(malformed("keys.i"));
                };
                state.keys.push(SeenKey {
                    key: number("k").ok_or_else(|| malformed("keys.k"))?,
                    body: number("b").ok_or_else(|| malformed("keys.b"))?,
                    items: items.bytes.clone(),
                });
            }
        }
        Some(_) => return Err(malformed("keys")),
    }
    Ok(state)
}

fn windows_bson(windows: &BTreeMap<i64, u64>) -> Document {
    windows
        .iter()
        .map(|(start, counted)| {
            (
                start.to_string(),
                Bson::Int64(i64::try_from(*counted).unwrap_or(i64::MAX)),
            )
        })
        .collect()
}

/// The keys packed in one binary value: per key its id and body fingerprint (8 bytes each,
/// little-endian), the length of its item bitset (2 bytes) and the bitset. One value instead of
/// a subdocument of three fields per key: the state is read and written whole by every batch
/// that touches the viewer, and the server's work grows with the elements it parses.
fn pack_keys(keys: &[SeenKey]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(keys.iter().map(|k| 18 + k.items.len()).sum());
    for seen in keys {
        packed.extend_from_slice(&seen.key.to_le_bytes());
        packed.extend_from_slice(&seen.body.to_le_bytes());
        // `idempotency::stamp` bounds a key's items far below 2^16 bytes of bitset.
        let length = u16::try_from(seen.items.len()).unwrap_or(u16::MAX);
        packed.extend_from_slice(&length.to_le_bytes());
        packed.extend_from_slice(&seen.items[..usize::from(length)]);
    }
    packed
}

/// The keys of [`pack_keys`]; `None` when the bytes are not such a packing.
fn unpack_keys(mut packed: &[u8]) -> Option<Vec<SeenKey>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    let mut keys = Vec::new();
    while !packed.is_empty() {
        let key = i64::from_le_bytes(take(&mut packed, 8)?.try_into().ok()?);
        let body = i64::from_le_bytes(take(&mut packed, 8)?.try_into().ok()?);
        let length = u16::from_le_bytes(take(&mut packed, 2)?.try_into().ok()?);
        let items = take(&mut packed, usize::from(length))?.to_vec();
        keys.push(SeenKey { key, body, items });
    }
    Some(keys)
}

fn keys_bson(keys: &[SeenKey]) -> Bson {
    Bson::Binary(Binary {
        subtype: BinarySubtype::Generic,
        bytes: pack_keys(keys),
    })
}

impl ViewerTapStore {
    /// The collection name.
    pub const COLLECTION: &'static str = "viewer_taps";

    pub fn new(database: &Database) -> Self {
        Self {
            database: database.clone(),
            collection: database.collection(Self::COLLECTION),
        }
    }

    /// Creates the expiry TTL index if missing. Idempotent.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.collection
            .create_index(super::expiry_index())
            .await
            .map_err(server("create_index"))?;
        Ok(())
    }

    /// The stored states among `ids`, in one `find` (none when `ids` is empty; absent ones
    /// have counted nothing yet).
    pub async fn read(&self, ids: &[String]) -> Result<BTreeMap<String, ViewerState>, StoreError> {
        if ids.is_empty() {
            return Ok(BTreeMap::new());
        }
        let documents = super::find_all(&self.collection, doc! { "_id": { "$in": ids } }).await?;
        documents
            .iter()
            .map(|document| {
                let id = document.get_str("_id").map_err(|_| malformed("_id"))?;
                Ok((id.to_owned(), state_from(document)?))
            })
            .collect()
    }

    /// Stores a batch's states in one unordered `update`, each only over the revision it was
    /// computed from. A statement that finds another revision (its insert, or its update's
    /// miss, hits the unique `_id`) has its state read again: one that accounts for everything
    /// the write decided (an earlier or a wider delivery of the same records) is left as it is;
    /// any other fails the batch with [`StoreError::Raced`], to be retried against the new
    /// state. Returns the number of statements sent.
    pub async fn write(
        &self,
        writes: &[ViewerStateWrite],
        times: WriteTimes,
    ) -> Result<usize, StoreError> {
        if writes.is_empty() {
            return Ok(0);
        }
        let expires_at = DateTime::from_millis(
            times
                .now_ms
                .saturating_add(crate::clock::duration_ms(KEY_MEMORY)),
        );
        let statements: Vec<Document> = writes
            .iter()
            .map(|write| {
                // The revision read, or none stored (an equality and `$exists`, beside `_id`:
                // the local MongoDB-wire server answers an `$or` there by scanning).
                let read = match write.state.rev {
                    0 => Bson::Document(doc! { "$exists": false }),
                    rev => Bson::Int64(rev),
                };
                let mut set = doc! {
                    "rev": write.state.rev + 1,
                    "windows": windows_bson(&write.state.windows),
                    "keys": keys_bson(&write.state.keys),
                    "expires_at": expires_at,
                };
                for (partition, offset) in &write.offsets {
                    set.insert(offset_path(partition), *offset);
                }
                doc! {
                    "q": { "_id": &write.id, "rev": read },
                    "u": { "$set": set },
                    "upsert": true,
                    "multi": false,
                }
            })
            .collect();
        let sent = statements.len();
        let raced = super::update_command::unordered_update(
            &self.database,
            Self::COLLECTION,
            statements,
            "viewer state update",
        )
        .await?
        .duplicates;
        if raced.is_empty() {
            return Ok(sent);
        }
        let ids: Vec<String> = raced.iter().map(|&i| writes[i].id.clone()).collect();
        let stored = self.read(&ids).await?;
        let lost = raced
            .iter()
            .filter(|&&i| {
                let write = &writes[i];
                !stored
                    .get(&write.id)
                    .is_some_and(|state| write.accounted_by(state))
            })
            .count();
        if lost > 0 {
            return Err(StoreError::Raced {
                what: "viewer states",
                count: lost,
            });
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_survive_packing_and_a_cut_packing_is_refused() {
        let keys = vec![
            SeenKey {
                key: -7,
                body: i64::MAX,
                items: vec![0b101],
            },
            SeenKey {
                key: 42,
                body: 0,
                items: vec![0xff; 300],
            },
            SeenKey {
                key: i64::MIN,
                body: 1,
                items: Vec::new(),
            },
        ];
        let packed = pack_keys(&keys);
        assert_eq!(packed.len(), 3 * 18 + 1 + 300);
        assert_eq!(unpack_keys(&packed), Some(keys));
        assert_eq!(unpack_keys(&[]), Some(Vec::new()));
        assert_eq!(unpack_keys(&packed[..packed.len() - 1]), None);
        assert_eq!(unpack_keys(&packed[..17]), None);
    }

    #[test]
    fn states_written_by_the_first_release_with_keys_are_read() {
        let document = doc! {
            "_id": "s/v",
            "rev": 3_i64,
            "keys": [
                { "k": 5_i64, "b": 6_i64, "i": Binary { subtype: BinarySubtype::Generic, bytes: vec![1] } },
            ],
        };
        let state = state_from(&document).unwrap();
        assert_eq!(
            state.keys,
            [SeenKey {
                key: 5,
                body: 6,
                items: vec![1]
            }]
        );
        let packed = doc! { "_id": "s/v", "rev": 4_i64, "keys": keys_bson(&state.keys) };
        assert_eq!(state_from(&packed).unwrap().keys, state.keys);
        assert!(state_from(&doc! { "_id": "s/v", "keys": "x" }).is_err());
    }
}
