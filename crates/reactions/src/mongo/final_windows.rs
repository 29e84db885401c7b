//! Finding and marking the windows that just became final. A window is inserted `open`; once
//! aggregate has found every partition counted past the window's end plus the allowed lateness
//! (`crate::event_time`), it publishes the window's state as final and marks the document
//! `final`, which is what every later reader (a late joiner's snapshot, the windows route)
//! reports; a live push may show it final a little sooner (see `PushSlots::mark_owed`).
//! The index leads with `open`, so the search walks only what is still open, not what is kept
//! (a plain compound index: partial indexes are not available on every supported server).
//! The pass reads from the primary whatever the URI prefers: a secondary behind it could show
//! windows already published and marked final, or miss one just written.

use super::update_command::unordered_update;
use super::{StoreError, StoredWindow, WindowStore, parse_window, primary, server};
use crate::window::WindowKey;
use futures::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::doc;

/// The index of the windows still open, by end.
pub(super) fn open_index() -> IndexModel {
    super::named_index(doc! { "open": 1, "end_ms": 1 }, "open_by_end")
}

impl WindowStore {
    /// The end of the earliest window still open, if any.
    pub async fn earliest_open_end(&self) -> Result<Option<i64>, StoreError> {
        let found = self
            .collection
            .find_one(doc! { "open": true })
            .selection_criteria(primary())
            .sort(doc! { "end_ms": 1 })
            .projection(doc! { "end_ms": 1 })
            .await
            .map_err(server("find_one"))?;
        Ok(found.and_then(|document| document.get_i64("end_ms").ok()))
    }

    /// Up to `limit` open windows ending at or before `end_ms`, the earliest ending first, as
    /// they would be published final.
    pub async fn open_windows_ending_by(
        &self,
        end_ms: i64,
        limit: i64,
    ) -> Result<Vec<StoredWindow>, StoreError> {
        let documents: Vec<mongodb::bson::Document> = self
            .collection
            .find(doc! { "open": true, "end_ms": { "$lte": end_ms } })
            .selection_criteria(primary())
            .sort(doc! { "end_ms": 1 })
            .limit(limit)
            .await
            .map_err(server("find"))?
            .try_collect()
            .await
            .map_err(server("find"))?;
        documents
            .iter()
            .map(|document| {
                parse_window(document).map(|window| StoredWindow {
                    is_final: true,
                    ..window
                })
            })
            .collect()
    }

    /// Marks final the open windows of `keys`, after their final states were published: one
    /// statement per window in one `update` command, each found through the unique (stream,
    /// start) index. (One `update_many` whose filter is an `$or` of the keys was measured to
    /// cost in proportion to the whole collection on the local stack's server: 200 ms per pass
    /// at 60,000 stored windows, which slowed every batch as a run went on.)
    pub async fn mark_windows_final(&self, keys: &[WindowKey]) -> Result<u64, StoreError> {
        if keys.is_empty() {
            return Ok(0);
        }
        let statements = keys
            .iter()
            .map(|key| {
                let mut open = Self::filter(key);
                open.insert("open", true);
                doc! {
                    "q": open,
                    "u": { "$set": { "final": true }, "$unset": { "open": "" } },
                    "multi": false,
                }
            })
            .collect();
        let reply = unordered_update(
            &self.database,
            self.collection.name(),
            statements,
            "final mark",
        )
        .await?;
        Ok(reply.matched)
    }

    /// Marks final every open window ending at or before `end_ms`, however many: the tests'
    /// way to settle a stream's windows. The final pass marks only the windows it published
    /// ([`WindowStore::mark_windows_final`]), since a reaction later than the allowed lateness
    /// can still open a window ending by then that nobody published final.
    pub async fn mark_final(&self, end_ms: i64) -> Result<u64, StoreError> {
        let result = self
            .collection
            .update_many(
                doc! { "open": true, "end_ms": { "$lte": end_ms } },
                doc! { "$set": { "final": true }, "$unset": { "open": "" } },
            )
            .await
            .map_err(server("update_many"))?;
        Ok(result.modified_count)
    }
}
