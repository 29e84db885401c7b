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

/// The layout [`pack_keys`] writes, its first byte: a later layout can be told apart.
const PACKED_KEYS_LAYOUT: u8 = 1;

/// The keys packed in one binary value: the layout (1 byte) and the number of keys (2 bytes,
/// little-endian), then per key its id and body fingerprint (8 bytes each, little-endian), the
/// length of its item bitset (2 bytes) and the bitset. One value instead of a subdocument of
/// three fields per key: the state is read and written whole by every batch that touches the
/// viewer, and the server's work grows with the elements it parses.
fn pack_keys(keys: &[SeenKey]) -> Vec<u8> {
    let mut packed = Vec::with_capacity(3 + keys.iter().map(|k| 18 + k.items.len()).sum::<usize>());
    packed.push(PACKED_KEYS_LAYOUT);
    // At most `REMEMBERED_KEYS` (16) keys are kept.
    let count = u16::try_from(keys.len()).unwrap_or(u16::MAX);
    packed.extend_from_slice(&count.to_le_bytes());
    for seen in &keys[..usize::from(count)] {
        packed.extend_from_slice(&seen.key.to_le_bytes());
        packed.extend_from_slice(&seen.body.to_le_bytes());
        // A reaction record's item is below 65,536 (`ReactionRecord::check`), so a bitset
        // holds at most 8,192 bytes.
        debug_assert!(seen.items.len() <= usize::from(u16::MAX));
        let length = u16::try_from(seen.items.len()).unwrap_or(u16::MAX);
        packed.extend_from_slice(&length.to_le_bytes());
        packed.extend_from_slice(&seen.items[..usize::from(length)]);
    }
    packed
}

/// The keys of [`pack_keys`]; `None` when the bytes are not such a packing (another layout,
/// another number of keys than announced, bytes left over).
fn unpack_keys(mut packed: &[u8]) -> Option<Vec<SeenKey>> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    if take(&mut packed, 1)? != [PACKED_KEYS_LAYOUT] {
        return None;
    }
    let count = u16::from_le_bytes(take(&mut packed, 2)?.try_into().ok()?);
    let mut keys = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let key = i64::from_le_bytes(take(&mut packed, 8)?.try_into().ok()?);
        let body = i64::from_le_bytes(take(&mut packed, 8)?.try_into().ok()?);
        let length = u16::from_le_bytes(take(&mut packed, 2)?.try_into().ok()?);
        let items = take(&mut packed, usize::from(length))?.to_vec();
        keys.push(SeenKey { key, body, items });
    }
    packed.is_empty().then_some(keys)
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
        assert_eq!(packed.len(), 3 + 3 * 18 + 1 + 300);
        assert_eq!(unpack_keys(&packed), Some(keys));
        assert_eq!(unpack_keys(&pack_keys(&[])), Some(Vec::new()));
        // Cut inside a key, at a key's end, or before the count; another layout; bytes left.
        for cut in [packed.len() - 1, 3 + 19, 3 + 18 + 3, 2, 0] {
            assert_eq!(unpack_keys(&packed[..cut]), None, "cut at {cut}");
        }
        let mut other = packed.clone();
        other[0] = 2;
        assert_eq!(unpack_keys(&other), None);
        let mut longer = packed;
        longer.push(0);
        assert_eq!(unpack_keys(&longer), None);
    }

    #[test]
    fn the_packed_layout_is_the_documented_one() {
        let packed = pack_keys(&[SeenKey {
            key: 0x0102_0304_0506_0708,
            body: -2,
            items: vec![0b1001],
        }]);
        assert_eq!(
            packed,
            [
                1, 1, 0, // layout 1, one key
                8, 7, 6, 5, 4, 3, 2, 1, // key, little-endian
                0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // body -2
                1, 0, 0b1001, // one byte of items
            ]
        );
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
