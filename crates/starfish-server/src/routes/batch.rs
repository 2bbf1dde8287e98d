//! `GET /[ns/]batch/pull?collections=a,b&params={...}`: many documents in one request,
//! each authorised on its own, read concurrently.

use super::pull::{bounded_range, read_json, read_log_body};
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

/// One `appendParams` entry: `{since?, last?, limit?}`.
#[derive(Debug, Clone, Copy, Default)]
struct AppendParams {
    since: Option<u64>,
    last: Option<u64>,
    limit: Option<u64>,
}

type AppendParamsMap = std::collections::HashMap<String, Vec<Option<AppendParams>>>;

/// `appendParams`: `{"<collection>": [{since?, last?, limit?} | null, ...]}`.
fn parse_append_params(raw: Option<String>) -> Result<AppendParamsMap, ApiError> {
    let mut out = AppendParamsMap::new();
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(out);
    };
    let invalid = || bad("Invalid appendParams parameter");
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&raw) else {
        return Err(invalid());
    };
    for (name, entries) in map {
        let Value::Array(entries) = entries else {
            return Err(invalid());
        };
        let mut list = Vec::with_capacity(entries.len());
        for e in entries {
            let ap = match e {
                Value::Null => None,
                Value::Object(o) => {
                    let full = matches!(o.get("full"), Some(Value::Bool(true)))
                        || o.get("full").and_then(Value::as_f64) == Some(1.0)
                        || matches!(o.get("full").and_then(Value::as_str), Some("true" | "1"));
                    if full {
                        return Err(ApiError::BadRequest(
                            format!("appendParams[\"{name}\"]: full is not allowed in batch pull")
                                .into(),
                        ));
                    }
                    let bound = |k: &str| -> Result<Option<u64>, ApiError> {
                        match o.get(k) {
                            None | Some(Value::Null) => Ok(None),
                            Some(v) => {
                                let n = match v {
                                    Value::Number(n) => n.as_f64(),
                                    Value::String(s) => s.trim().parse::<f64>().ok(),
                                    _ => None,
                                };
                                match n {
                                    Some(n) if n.is_finite() && n.fract() == 0.0 && n >= 0.0 => {
                                        Ok(Some(n as u64))
                                    }
                                    _ => Err(invalid()),
                                }
                            }
                        }
                    };
                    Some(AppendParams {
                        since: bound("since")?,
                        last: bound("last")?,
                        limit: bound("limit")?,
                    })
                }
                _ => return Err(invalid()),
            };
            list.push(ap);
        }
        out.insert(name, list);
    }
    Ok(out)
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
    let append_params = parse_append_params(query::param(q, "appendParams"))?;
    for (name, aps) in &append_params {
        if let Some(Value::Array(sets)) = params.get(name) {
            if sets.len() != aps.len() {
                return Err(bad(
                    "appendParams length mismatch: must equal params length for each collection",
                ));
            }
        }
    }
    let total: usize = names
        .iter()
        .map(|n| params.get(n).and_then(Value::as_array).map_or(1, Vec::len))
        .sum();
    if total > max {
        return Err(bad("Too many collections"));
    }
    if !append_params.is_empty() {
        let mut budget = 0u64;
        for (name, aps) in &append_params {
            let cap = scope
                .by_name
                .get(name)
                .and_then(|c| c.append_only.as_ref())
                .and_then(|a| a.max_pull_limit)
                .map_or(1000, |m| m.get());
            for ap in aps.iter().flatten() {
                budget += ap.last.or(ap.limit).unwrap_or(cap).min(cap);
            }
        }
        if budget > state.max_batch_append_elements {
            return Err(bad("Batch append element budget exceeded"));
        }
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
        let aps = append_params.get(name);
        let ap = |i: usize| aps.and_then(|a| a.get(i).copied().flatten());
        match params.get(name).and_then(Value::as_array) {
            Some(sets) => {
                for (i, set) in sets.iter().enumerate() {
                    let set = set.as_object().unwrap_or(&empty);
                    jobs.push((
                        name,
                        entry(state, collection.clone(), set, ap(i), &caller, now),
                    ));
                }
            }
            None => jobs.push((
                name,
                entry(state, collection.clone(), &empty, ap(0), &caller, now),
            )),
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
    append: Option<AppendParams>,
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
    if let Some(ap) = append {
        let Some(config) = collection.append_only.as_ref().filter(|a| a.persist) else {
            return entry_error("append_params_not_supported");
        };
        let range = match bounded_range(ap.since, ap.limit.or(ap.last), false, config, now) {
            Ok(r) => r,
            Err(code) => return entry_error(code),
        };
        return match read_log_body(
            state,
            (&collection, &key, &params),
            caller,
            config,
            range,
            now,
        )
        .await
        {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(error = %e, "batch pull entry failed");
                entry_error("Internal error")
            }
        };
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
