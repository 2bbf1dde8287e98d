//! `GET /[ns/]pull/<storage path>`: a JSON document, a log, or a blob.

use super::endpoint::Doc;
use super::query::{canonical_uint, param};
use super::{admit, allow, authenticate, blob, is_public, rate_check, render};
use crate::access::Action;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::routes::error::ApiError;
use crate::store::etag;
use crate::sync::LogQuery;
use crate::sync::read::{LogView, Read, read, read_document_body, read_stored};
use crate::tenants::Scope;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use starfish_protocol::document::pull_body;

#[tracing::instrument(level = "debug", skip_all, fields(collection = %doc.collection.name))]
pub(super) async fn pull(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    doc: &Doc,
) -> Result<Response, ApiError> {
    let public = is_public(&doc.collection, Action::Pull);
    let (caller, _) = authenticate(state, parts, Body::empty(), public, Some(scope)).await?;
    admit(scope, &caller)?;
    super::charge(state, parts, scope, &caller).await?;
    allow(state, &caller, scope, doc, Action::Pull).await?;
    rate_check(state, parts, scope, &doc.collection, &caller, Action::Pull).await?;
    if !state.plugins.is_empty() {
        if let Some(answer) = Box::pin(plugin_hooks(state, parts, scope, doc, &caller)).await? {
            return Ok(answer);
        }
    }
    if doc.collection.is_binary() {
        // Boxed, as the log read below: a document pull's future stays small.
        return Box::pin(blob::pull(
            scope.store_for(&doc.collection),
            doc,
            &parts.headers,
        ))
        .await;
    }
    let query = parts.uri.query();
    let now = state.clock.now_ms();
    if doc.collection.append_only.is_none() && !wants_keyring(query) {
        let store = scope.store_for(&doc.collection);
        let (body, etag) = read_document_body(store, doc.as_ref(), &caller, now, true).await?;
        return Ok(render::cached(
            etag,
            &doc.collection,
            &parts.headers,
            || render::json_bytes(body),
        ));
    }
    let log = if doc.collection.append_only.is_some() {
        log_query(query)?
    } else {
        LogQuery::default()
    };
    let reading = Box::pin(read(
        scope.store_for(&doc.collection),
        doc.as_ref(),
        &caller,
        log,
        &state.log_limits,
        now,
    ));
    let (mut body, hash) = match reading.await? {
        Read::Log(view) => (log_body(&view, now), view.hash),
        Read::Document(stored) => {
            let hash = stored.as_ref().map(|d| d.hash.clone()).unwrap_or_default();
            (pull_body(stored.as_ref(), now), hash)
        }
    };
    if doc.collection.append_only.is_none() && wants_keyring(query) {
        with_keyring(state, &caller, scope, doc, &mut body, now).await?;
    }
    Ok(render::cached(
        etag(&hash),
        &doc.collection,
        &parts.headers,
        || axum::Json(body).into_response(),
    ))
}

/// The plugins' `before_pull` (a refusal), then, for a JSON collection, their
/// `intercept_pull` (an answer: bytes with the ETag of their SHA-256 and the
/// collection's caching, as a blob's pull).
async fn plugin_hooks(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    doc: &Doc,
    caller: &Caller,
) -> Result<Option<Response>, ApiError> {
    use crate::hooks::{PullAnswer, PullDecision};
    let ctx = super::hook_context(scope, doc, caller);
    if let PullDecision::Reject { status, error } = state.plugins.before_pull(&ctx).await? {
        return Err(ApiError::PluginRefused { status, error });
    }
    if doc.collection.is_binary() {
        return Ok(None);
    }
    let PullAnswer::Respond {
        status,
        body,
        content_type,
    } = state.plugins.intercept_pull(&ctx).await?
    else {
        return Ok(None);
    };
    let hash = starfish_protocol::sha256_hex(&body);
    let content_type = axum::http::HeaderValue::from_str(&content_type).unwrap_or(
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    let mut response = render::cached(etag(&hash), &doc.collection, &parts.headers, || {
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, content_type);
        response
    });
    // The plugin saw who asked: its answer is this caller's, never a shared
    // cache's.
    let cache = axum::http::header::CACHE_CONTROL;
    if let Some(public) = response.headers().get(&cache).and_then(|v| v.to_str().ok()) {
        if !public.starts_with("private") {
            let private = format!("private, {public}");
            if let Ok(value) = axum::http::HeaderValue::from_str(&private) {
                response.headers_mut().insert(cache, value);
            }
        }
    }
    Ok(Some(response))
}

/// `?withKeyring=1|true`: adds the sibling `<key>/_keyring` document to `body`,
/// when the caller may read that key too (otherwise the flag is dropped, as in the
/// reference).
async fn with_keyring(
    state: &AppState,
    caller: &Caller,
    scope: &Scope,
    doc: &Doc,
    body: &mut Value,
    now: u64,
) -> Result<(), ApiError> {
    let keyring = Doc {
        collection: doc.collection.clone(),
        key: doc.key.keyring(),
        params: doc.params.clone(),
    };
    match allow(state, caller, scope, &keyring, Action::Pull).await {
        Ok(()) => {
            let value = Box::pin(read_stored(scope.store_for(&doc.collection), &keyring.key))
                .await?
                .map_or(Value::Null, |k| pull_body(Some(&k), now));
            if let Value::Object(map) = body {
                map.insert("keyring".into(), value);
            }
            Ok(())
        }
        Err(ApiError::Forbidden) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A log pull's body: the reference's, with `"hasMore": true` when the server's bound
/// left elements out (pull again from the last element's `ts`).
pub(super) fn log_body(view: &LogView, now: u64) -> Value {
    let mut body = json!({ "data": view.data, "hash": view.hash, "timestamp": now });
    if view.more {
        body["hasMore"] = Value::Bool(true);
    }
    body
}

/// A log pull's bounds from the query string (§4.7); `limit` is an alias of `last`
/// and wins when both are given.
fn log_query(query: Option<&str>) -> Result<LogQuery, ApiError> {
    let number = |name: &str, error: ApiError| match param(query, name) {
        None => Ok(None),
        Some(raw) => canonical_uint(&raw).map(Some).ok_or(error),
    };
    let checkpoint = number("checkpoint", ApiError::InvalidCheckpoint)?;
    let limit = number("limit", ApiError::InvalidLimit)?;
    let last = match limit {
        Some(l) => Some(l),
        None => number("last", ApiError::InvalidLast)?,
    };
    let full = matches!(param(query, "full").as_deref(), Some("true" | "1"));
    Ok(LogQuery {
        checkpoint,
        last,
        full,
    })
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
