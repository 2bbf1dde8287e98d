//! Binary collections (§7): raw bytes in and out, streamed both ways.

use super::pull::cache_control;
use super::{RequestBody, ResolvedRoute, push_gate};
use crate::auth::Caller;
use crate::config::{Collection, Payload};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::{BlobBody, BlobError, DocStore};
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;

/// True when the request's media type matches one of the collection's patterns:
/// `type/subtype`, either part `*` for anything; parameters and case ignored.
pub(super) fn mime_allowed(content_type: &str, collection: &Collection) -> bool {
    let Payload::Binary(patterns) = &collection.payload else {
        return false;
    };
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((ty, sub)) = media.split_once('/') else {
        return false;
    };
    if ty.is_empty() {
        return false;
    }
    patterns.iter().any(|p| {
        let p = p.as_str().to_ascii_lowercase();
        let Some((pty, psub)) = p.split_once('/') else {
            return false;
        };
        (pty == "*" || pty == ty) && (psub == "*" || psub == sub)
    })
}

pub(super) async fn push_blob(
    state: &AppState,
    route: &ResolvedRoute,
    caller: &Caller,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response, ApiError> {
    let collection = &route.target.collection;
    push_gate(state, parts, route, caller)?;
    let limit = collection.max_body_bytes.get();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !mime_allowed(content_type, collection) {
        let allowed = serde_json::to_string(&collection.allowed_mime_types).unwrap_or_default();
        return Err(ApiError::UnsupportedMediaType(
            format!("Content-Type '{content_type}' is not allowed. Allowed: {allowed}").into(),
        ));
    }
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let key = DocStore::key(&route.key)?;
    let result = match body {
        RequestBody::Streaming(body) => {
            state
                .store
                .put_blob(&key, body.into_data_stream(), limit, media_type)
                .await
        }
        RequestBody::Buffered(bytes) => {
            let once =
                futures::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
            state
                .store
                .put_blob(&key, once.boxed(), limit, media_type)
                .await
        }
    };
    match result {
        Ok(hash) => Ok(axum::Json(json!({ "hash": hash })).into_response()),
        Err(BlobError::TooLarge) => Err(ApiError::PayloadTooLarge("Payload too large".into())),
        Err(BlobError::Body(e)) => {
            tracing::debug!(error = %e, "blob body read failed");
            Err(ApiError::BadRequest("Invalid request body".into()))
        }
        Err(BlobError::Store(e)) => Err(e.into()),
    }
}

pub(super) async fn pull_blob(
    state: &AppState,
    route: &ResolvedRoute,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let key = DocStore::key(&route.key)?;
    let Some(blob) = state.store.get_blob(&key).await? else {
        // The reference answers a missing blob with an empty 404.
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let etag = format!("\"{}\"", blob.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let body = match blob.body {
        BlobBody::Bytes(bytes) => Body::from(bytes),
        BlobBody::Stream(result) => Body::from_stream(result.into_stream()),
    };
    let mut response = Response::new(body);
    let h = response.headers_mut();
    let content_type = HeaderValue::from_str(&blob.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    if let Some(cc) = cache_control(&route.target.collection) {
        h.insert(header::CACHE_CONTROL, cc);
    }
    Ok(response)
}
