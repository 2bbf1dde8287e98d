//! `GET /[ns/]pull/<storage path>` for regular JSON documents.

use super::ResolvedRoute;
use crate::auth::{Caller, match_scope_path};
use crate::config::Collection;
use crate::error::ApiError;
use crate::protocol::StoredDoc;
use crate::protocol::document::pull_body;
use crate::state::AppState;
use crate::store::DocStore;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// `Cache-Control` for a collection with `cacheDurationMs`.
pub(super) fn cache_control(collection: &Collection) -> Option<HeaderValue> {
    let secs = collection.cache_duration_ms? / 1000;
    let value = if collection.read_roles.is_public() {
        format!("max-age={secs}")
    } else {
        format!("private, max-age={secs}")
    };
    HeaderValue::from_str(&value).ok()
}

/// `withKeyring=1` or `=true`, case-insensitive.
fn wants_keyring(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            pair.split_once('=').is_some_and(|(k, v)| {
                k == "withKeyring" && (v == "1" || v.eq_ignore_ascii_case("true"))
            })
        })
    })
}

#[tracing::instrument(skip_all, fields(collection = %route.target.collection.name))]
pub(super) async fn pull(
    state: &AppState,
    route: &ResolvedRoute,
    caller: &Caller,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let collection = &route.target.collection;
    if collection.is_binary() || collection.append_only.is_some() {
        return Err(ApiError::NotImplemented);
    }
    let now = state.clock.now_ms();
    let key = DocStore::key(&route.key)?;
    let stored = state.store.get(&key).await?;
    let mut doc = stored.as_deref().and_then(StoredDoc::parse);
    if let (Some(ttl), Some(d)) = (collection.ttl_ms, &doc) {
        if d.ts != 0 && now.saturating_sub(d.ts) > ttl.get() {
            doc = None;
        }
    }
    let doc = doc.filter(|d| !d.hash.is_empty() || !d.data.is_empty());
    let etag = doc
        .as_ref()
        .filter(|d| !d.hash.is_empty())
        .map(|d| format!("\"{}\"", d.hash));
    if let Some(etag) = &etag {
        if headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            return Ok(StatusCode::NOT_MODIFIED.into_response());
        }
    }
    let mut body = pull_body(doc.as_ref(), now);
    // `?withKeyring=1|true`: the sibling `<key>/_keyring` document, when the caller's
    // path scope covers it (otherwise the flag is dropped, as in the reference).
    let keyring_key = format!("{}/_keyring", route.key);
    if wants_keyring(query) && match_scope_path(&keyring_key, caller.scope_paths()) {
        let keyring = state
            .store
            .get(&DocStore::key(&keyring_key)?)
            .await?
            .as_deref()
            .and_then(StoredDoc::parse)
            .map_or(serde_json::Value::Null, |k| pull_body(Some(&k), now));
        if let serde_json::Value::Object(map) = &mut body {
            map.insert("keyring".into(), keyring);
        }
    }
    let mut response = axum::Json(body).into_response();
    let h = response.headers_mut();
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, etag);
    }
    if let Some(cc) = cache_control(collection) {
        h.insert(header::CACHE_CONTROL, cc);
    }
    Ok(response)
}
