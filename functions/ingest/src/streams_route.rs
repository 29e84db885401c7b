//! The stream registry's routes. Public: `GET /streams` (the live streams) and
//! `GET /streams/{id}` (title, status, catalogue, whether reactions are paused: what a watch
//! page needs). Admin, behind the HTTP API's IAM authorizer: `GET /admin/streams[?status=]`,
//! `PUT /admin/streams/{id}` (create or change title, catalogue and the moderation switches),
//! `POST /admin/streams/{id}/start` and `.../end`; their answers add the stream's own fair-use
//! limit.

use crate::api_error::ApiError;
use crate::query_string;
use crate::stream_directory::StreamDirectory;
use lambda_http::http::StatusCode;
use reactions::mongo::{
    IndexesOnce, REQUEST_READ_LIMIT, REQUEST_WRITE_LIMIT, RegistryError, StoreError, StreamStore,
    within,
};
use reactions::stream_registry::{StreamChanges, Transition};
use reactions::{EmojiCatalogue, Rule, StreamEntry, StreamId, StreamStatus, ValidationError};
use serde_json::{Value, json};

/// What the registry routes work with.
pub struct Registry<'a> {
    pub store: &'a StreamStore,
    pub directory: &'a StreamDirectory<StreamStore>,
    /// A new stream's catalogue unless the admin gives one (`EMOJI_CATALOGUE`).
    pub default_catalogue: &'a EmojiCatalogue,
    /// The `streams` indexes, made by this container's first admin write.
    pub indexes: &'a IndexesOnce,
}

fn unavailable(error: StoreError) -> ApiError {
    // Whatever went wrong is ours or MongoDB's, never the client's: 503, retry later.
    tracing::error!(%error, "stream registry unavailable");
    ApiError::Unavailable { service: "MongoDB" }
}

fn stream_id(text: &str) -> Result<StreamId, ApiError> {
    StreamId::parse("id", text).map_err(|e| ApiError::Invalid(vec![e]))
}

fn listing(streams: &[StreamEntry], view: fn(&StreamEntry) -> Value) -> Value {
    json!({ "streams": streams.iter().map(view).collect::<Vec<_>>() })
}

/// `GET /streams`: the live streams, by id.
pub async fn list_live(registry: &Registry<'_>) -> Result<Value, ApiError> {
    let live = within(
        REQUEST_READ_LIMIT,
        "listing streams",
        registry.store.list(Some(StreamStatus::Live)),
    )
    .await
    .map_err(unavailable)?;
    Ok(listing(&live, StreamEntry::to_json))
}

/// The registered stream `id`, from the container's cache (404 when unknown).
pub async fn entry(
    registry: &Registry<'_>,
    id: &str,
) -> Result<std::sync::Arc<StreamEntry>, ApiError> {
    let id = stream_id(id)?;
    match registry.directory.get(&id).await.map_err(unavailable)? {
        Some(entry) => Ok(entry),
        None => Err(ApiError::UnknownStream {
            stream: id.as_str().to_owned(),
        }),
    }
}

/// `GET /streams/{id}`, from the container's cache like ingest's own checks, so a page shows
/// what `POST /reactions` will accept.
pub async fn get_stream(registry: &Registry<'_>, id: &str) -> Result<Value, ApiError> {
    Ok(entry(registry, id).await?.to_json())
}

/// `GET /admin/streams[?status=scheduled|live|ended]`: every stream, straight from MongoDB.
pub async fn admin_list(registry: &Registry<'_>, query: Option<&str>) -> Result<Value, ApiError> {
    let mut status = None;
    for (name, value) in query_string::pairs(query) {
        if name != "status" {
            return Err(query_string::unknown_parameter(&name));
        }
        status = Some(StreamStatus::parse(&value).ok_or_else(|| {
            ApiError::Invalid(vec![ValidationError::new(
                "status",
                Rule::BadCharset {
                    allowed: "scheduled, live or ended",
                },
            )])
        })?);
    }
    let streams = within(
        REQUEST_READ_LIMIT,
        "listing streams",
        registry.store.list(status),
    )
    .await
    .map_err(unavailable)?;
    Ok(listing(&streams, StreamEntry::to_admin_json))
}

fn registry_error(error: RegistryError) -> ApiError {
    match error {
        RegistryError::UnknownStream(stream) => ApiError::UnknownStream { stream },
        RegistryError::TitleRequired => {
            ApiError::Invalid(vec![ValidationError::new("title", Rule::Missing)])
        }
        RegistryError::Refused(refused) => ApiError::TransitionRefused(refused),
        RegistryError::Store(error) => unavailable(error),
    }
}

/// `PUT /admin/streams/{id}` with `{"title": ..., "emojis": [{"name", "glyph"}]}`: 201 with the
/// new stream, or 200 with the changed one.
pub async fn admin_put(
    registry: &Registry<'_>,
    id: &str,
    body: &[u8],
    now_ms: i64,
) -> Result<(StatusCode, Value), ApiError> {
    let id = stream_id(id)?;
    let json: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let changes = StreamChanges::from_json(&json).map_err(ApiError::Invalid)?;
    // The listing's index, made once per container before its first write.
    within(
        REQUEST_WRITE_LIMIT,
        "creating the registry's index",
        registry.indexes.ensure(|| registry.store.ensure_indexes()),
    )
    .await
    .map_err(unavailable)?;
    // A write that times out may still be applied; repeating it is harmless.
    let (entry, created) = within(
        REQUEST_WRITE_LIMIT,
        "registering a stream",
        registry
            .store
            .put(&id, &changes, registry.default_catalogue, now_ms),
    )
    .await
    .map_err(registry_error)?;
    registry.directory.forget(&id);
    tracing::info!(stream = id.as_str(), created, "stream registered");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, entry.to_admin_json()))
}

/// `POST /admin/streams/{id}/start` or `/end`.
pub async fn admin_transition(
    registry: &Registry<'_>,
    id: &str,
    transition: Transition,
    now_ms: i64,
) -> Result<Value, ApiError> {
    let id = stream_id(id)?;
    let entry = within(
        REQUEST_WRITE_LIMIT,
        "changing a stream's status",
        registry.store.transition(&id, transition, now_ms),
    )
    .await
    .map_err(registry_error)?;
    registry.directory.forget(&id);
    tracing::info!(stream = id.as_str(), status = %entry.status, "stream status");
    Ok(entry.to_admin_json())
}
