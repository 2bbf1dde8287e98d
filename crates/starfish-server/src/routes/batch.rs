//! `GET /[ns/]batch/pull?collections=a,b&params={...}`: many documents in one request,
//! each authorised on its own, read concurrently.

use super::pull::read_json;
use super::{authenticate, permits, query};
use crate::access::Action;
use crate::auth::{Caller, match_scope_path};
use crate::config::{Collection, IDENTITY_PARAM, is_param_value, is_safe_key};
use crate::error::ApiError;
use crate::protocol::canonical::write_js_number;
use crate::state::{AppState, Scope};
use axum::Json;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

fn bad(message: &'static str) -> ApiError {
    ApiError::BadRequest(message.into())
}

fn entry_error(message: &str) -> Value {
    json!({ "error": message })
}

/// `params`: `{"<collection>": [{<param>: <string|number>}, ...]}`.
fn parse_params(raw: Option<String>) -> Result<Map<String, Value>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Map::new());
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&raw) else {
        return Err(bad("Invalid params parameter"));
    };
    let well_formed = map.values().all(|v| {
        v.as_array()
            .is_some_and(|sets| sets.iter().all(Value::is_object))
    });
    if well_formed {
        Ok(map)
    } else {
        Err(bad("Invalid params parameter"))
    }
}

pub(super) async fn batch_pull(
    state: &AppState,
    scope: &Scope,
    parts: &Parts,
) -> Result<Response, ApiError> {
    let q = parts.uri.query();
    let mut names: Vec<String> = Vec::new();
    for name in query::param(q, "collections")
        .unwrap_or_default()
        .split(',')
    {
        let name = name.trim();
        if !name.is_empty() && !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err(bad("Missing collections parameter"));
    }
    let max = state.max_collections_per_batch;
    if names.len() > max {
        return Err(bad("Too many collections"));
    }
    let params = parse_params(query::param(q, "params"))?;
    let total: usize = names
        .iter()
        .map(|n| params.get(n).and_then(Value::as_array).map_or(1, Vec::len))
        .sum();
    if total > max {
        return Err(bad("Too many collections"));
    }
    // One authentication for the whole batch; a failure reads as anonymous.
    let caller = match authenticate(state, parts, Body::empty(), None, false).await {
        Ok((caller, _)) => caller,
        Err(e) => {
            tracing::debug!(error = %e, "batch pull: authentication failed, reading as anonymous");
            Caller::anonymous()
        }
    };
    let now = state.clock.now_ms();
    let empty = Map::new();
    let mut jobs = Vec::with_capacity(total);
    for name in &names {
        let collection = scope.by_name.get(name).filter(|c| !c.push_only).cloned();
        match params.get(name).and_then(Value::as_array) {
            Some(sets) => {
                for set in sets {
                    let set = set.as_object().unwrap_or(&empty);
                    jobs.push((name, entry(state, collection.clone(), set, &caller, now)));
                }
            }
            None => jobs.push((name, entry(state, collection.clone(), &empty, &caller, now))),
        }
    }
    let (names_of, futures): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    let results = futures::future::join_all(futures).await;
    let mut out: Map<String, Value> = names.iter().map(|n| (n.clone(), json!([]))).collect();
    for (name, result) in names_of.into_iter().zip(results) {
        if let Some(Value::Array(list)) = out.get_mut(name.as_str()) {
            list.push(result);
        }
    }
    Ok(Json(json!({ "collections": out })).into_response())
}

/// One entry of a batch: the document, or `{"error": ...}`.
async fn entry(
    state: &AppState,
    collection: Option<Arc<Collection>>,
    set: &Map<String, Value>,
    caller: &Caller,
    now: u64,
) -> Value {
    let Some(collection) = collection else {
        return entry_error("Collection not found");
    };
    let mut params = Vec::new();
    for name in collection.storage_path.params() {
        let value = match set.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => {
                let mut s = String::new();
                write_js_number(&mut s, n.as_f64().unwrap_or(f64::NAN));
                s
            }
            Some(_) => return entry_error("Invalid path parameter"),
            None => match caller.identity() {
                Some(me) if name == IDENTITY_PARAM => me.to_owned(),
                _ => return entry_error("Missing required path parameter"),
            },
        };
        if !is_param_value(&value) {
            return entry_error("Invalid path parameter");
        }
        params.push((name.to_owned(), value));
    }
    let Some(mut key) = collection
        .storage_path
        .resolve(|p| params.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str()))
    else {
        return entry_error("Missing required path parameter");
    };
    if collection.bundle.is_some() {
        // Bundle members live under the bundle path (the reference reads the wrong key here).
        key.push('/');
        key.push_str(collection.name.as_str());
    }
    if !is_safe_key(&key) {
        return entry_error("Invalid path parameter");
    }
    match permits(state, caller, &collection, &params, Action::Pull).await {
        Ok(true) => {}
        Ok(false) => return entry_error("Forbidden"),
        Err(_) => return entry_error("Internal error"),
    }
    let denied_suffix = state
        .batch_key_deny_suffixes
        .iter()
        .any(|s| key == *s || key.ends_with(&format!("/{s}")));
    if denied_suffix || !match_scope_path(&key, caller.scope_paths()) {
        return entry_error("Forbidden");
    }
    if collection.is_binary() {
        return entry_error("binary_not_supported");
    }
    match read_json(state, &collection, &key, caller, &params, now).await {
        Ok(Some(doc)) => {
            json!({ "data": Value::Object(doc.data), "hash": doc.hash, "timestamp": now })
        }
        Ok(None) => json!({ "data": {}, "hash": "", "timestamp": now }),
        Err(e) => {
            tracing::warn!(error = %e, "batch pull entry failed");
            entry_error("Internal error")
        }
    }
}
