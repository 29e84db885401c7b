//! The window width a database's counts were made with, claimed by the first aggregate that
//! writes there. Window documents know their partitions' offsets, not the width: a batch
//! redelivered after `WINDOW_WIDTH_MS` changed falls into windows that have never seen its
//! offsets and would be counted a second time. So the width is stored once, in the `settings`
//! collection, and an aggregate configured with another one refuses to write.

use super::{StoreError, is_duplicate_key, server};
use crate::window::WindowWidth;
use mongodb::bson::{Document, doc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};

/// The `settings` collection's document for the window width.
const WIDTH_ID: &str = "window_width_ms";

/// Stores `width` as the database's window width if none is stored yet, and fails with
/// [`StoreError::WidthChanged`] if another one is.
pub async fn claim_window_width(database: &Database, width: WindowWidth) -> Result<(), StoreError> {
    let settings: Collection<Document> = database.collection("settings");
    let configured = width.millis();
    // Two aggregates starting at once may both insert; the loser reads the winner's width.
    for _ in 0..2 {
        let claimed = settings
            .find_one_and_update(
                doc! { "_id": WIDTH_ID },
                doc! { "$setOnInsert": { "value": configured } },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await;
        let document = match claimed {
            Ok(Some(document)) => document,
            Ok(None) => continue,
            Err(error) if is_duplicate_key(&error) => continue,
            Err(error) => return Err(server("findAndModify")(error)),
        };
        let stored = document
            .get("value")
            .and_then(super::integer)
            .ok_or_else(|| StoreError::Malformed(format!("settings.{WIDTH_ID}: {document}")))?;
        return match stored == configured {
            true => Ok(()),
            false => Err(StoreError::WidthChanged {
                stored_ms: stored,
                configured_ms: configured,
            }),
        };
    }
    Err(StoreError::Write(format!(
        "settings.{WIDTH_ID}: neither inserted nor read"
    )))
}
