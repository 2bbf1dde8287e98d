//! `GET /[ns/]pull/<storage path>` for regular JSON documents.

use super::ResolvedRoute;
use super::query::{canonical_uint, param};
use crate::access::holds_any;
use crate::auth::{Caller, match_scope_path};
use crate::config::{AppendOnly, Collection};
use crate::error::ApiError;
use crate::protocol::StoredDoc;
use crate::protocol::append::LogRange;
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

/// The range a log pull asks for (§4.7), checked against the collection's bounds.
pub(super) fn log_range(
    query: Option<&str>,
    config: &AppendOnly,
    now: u64,
) -> Result<LogRange, ApiError> {
    let bad = |m: &'static str| ApiError::BadRequest(m.into());
    let checkpoint = match param(query, "checkpoint") {
        None => None,
        Some(raw) => Some(canonical_uint(&raw).ok_or_else(|| bad("Invalid checkpoint"))?),
    };
    // `limit` is an alias of `last` and wins when both are given.
    let mut last = None;
    for (name, message) in [("limit", "Invalid limit"), ("last", "Invalid last")] {
        if let Some(raw) = param(query, name) {
            last = Some(canonical_uint(&raw).ok_or_else(|| bad(message))?);
            if name == "limit" {
                break;
            }
        }
    }
    let full = matches!(param(query, "full").as_deref(), Some("true" | "1"));
    bounded_range(checkpoint, last, full, config, now).map_err(bad)
}

/// The bound rules of a log pull, shared by pulls and batch entries.
pub(super) fn bounded_range(
    checkpoint: Option<u64>,
    mut last: Option<u64>,
    full: bool,
    config: &AppendOnly,
    now: u64,
) -> Result<LogRange, &'static str> {
    if checkpoint.is_none() && last.is_none() && !full {
        return Err("pull_bound_required");
    }
    if full && (checkpoint.is_some() || last.is_some()) {
        return Err("full_with_bounds");
    }
    if full && !config.allow_full {
        return Err("full_not_allowed");
    }
    if let (Some(cp), Some(age)) = (checkpoint, config.max_checkpoint_age_ms) {
        if cp < now.saturating_sub(age.get()) {
            return Err("checkpoint_too_old");
        }
    }
    if let (Some(l), Some(max)) = (last, config.max_pull_limit) {
        last = Some(l.min(max.get()));
    }
    Ok(LogRange { checkpoint, last })
}

/// A log pull's body: `{"data": {...other fields, "<field>": [elements]}, "hash", "timestamp"}`,
/// with fields the caller may not read removed from the document and every element.
pub(super) async fn read_log_body(
    state: &AppState,
    (collection, key, params): (&Collection, &str, &[(String, String)]),
    caller: &Caller,
    config: &AppendOnly,
    range: LogRange,
    now: u64,
) -> Result<serde_json::Value, ApiError> {
    let log = state.store.read_log(key, &config.field, range).await?;
    let (mut data, elements, hash) = match log {
        Some(l) => (l.data, l.elements, l.hash),
        None => (serde_json::Map::new(), Vec::new(), String::new()),
    };
    filter_fields(&mut data, collection, caller, params);
    let elements = elements
        .into_iter()
        .map(|mut e| {
            if let Some(serde_json::Value::Object(d)) = e.get_mut("data") {
                filter_fields(d, collection, caller, params);
            }
            e
        })
        .collect();
    data.insert(config.field.clone(), serde_json::Value::Array(elements));
    Ok(serde_json::json!({ "data": data, "hash": hash, "timestamp": now }))
}

/// Adds ETag (answering 304 on a match) and Cache-Control to a pull body.
fn with_cache_headers(
    body: serde_json::Value,
    collection: &Collection,
    headers: &HeaderMap,
) -> Response {
    let hash = body["hash"].as_str().unwrap_or("");
    let etag = (!hash.is_empty()).then(|| format!("\"{hash}\""));
    if let Some(etag) = &etag {
        if headers
            .get(header::IF_NONE_MATCH)
            .is_some_and(|v| v.as_bytes() == etag.as_bytes())
        {
            return StatusCode::NOT_MODIFIED.into_response();
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
    response
}

/// Reads a regular JSON document as `caller` sees it: `None` when missing, corrupt or
/// expired (`ttlMs`), and fields the caller may not read removed (the hash still
/// covers the whole document, as in the reference).
pub(super) async fn read_json(
    state: &AppState,
    collection: &Collection,
    key: &str,
    caller: &Caller,
    params: &[(String, String)],
    now: u64,
) -> Result<Option<StoredDoc>, ApiError> {
    let stored = state.store.get(&DocStore::key(key)?).await?;
    let Some(mut doc) = stored.as_deref().and_then(StoredDoc::parse) else {
        return Ok(None);
    };
    if let Some(ttl) = collection.ttl_ms {
        if doc.ts != 0 && now.saturating_sub(doc.ts) > ttl.get() {
            return Ok(None);
        }
    }
    if doc.hash.is_empty() && doc.data.is_empty() {
        return Ok(None);
    }
    filter_fields(&mut doc.data, collection, caller, params);
    Ok(Some(doc))
}

/// Removes top-level fields whose `fieldPermissions` readRoles the caller lacks.
pub(super) fn filter_fields(
    data: &mut serde_json::Map<String, serde_json::Value>,
    collection: &Collection,
    caller: &Caller,
    params: &[(String, String)],
) {
    let identity = super::identity_of(params);
    for (field, perm) in &collection.field_permissions {
        if !perm.read.is_empty() && !holds_any(caller, &[], &perm.read, identity) {
            data.remove(field);
        }
    }
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
    let now = state.clock.now_ms();
    if let Some(config) = &collection.append_only {
        let range = log_range(query, config, now)?;
        let target = (
            collection.as_ref(),
            route.key.as_str(),
            route.params.as_slice(),
        );
        let body = read_log_body(state, target, caller, config, range, now).await?;
        return Ok(with_cache_headers(body, collection, headers));
    }
    let doc = read_json(state, collection, &route.key, caller, &route.params, now).await?;
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
    Ok(with_cache_headers(body, collection, headers))
}
