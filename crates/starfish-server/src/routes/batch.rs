//! `GET /[ns/]batch/pull?collections=a,b&params={...}&appendParams={...}`: many
//! documents in one request. The query is parsed and bounded first; each entry is
//! then resolved to a key, authorised on its own and read through the one read path.

use super::endpoint::Doc;
use super::{admit, allow, authenticate, query, render};
use crate::access::Action;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::config::{Collection, IDENTITY_PARAM};
use crate::routes::error::ApiError;
use crate::store::PathParams;
use crate::sync::read::{Read, read, read_document_body};
use crate::sync::{BoundError, LogQuery, SyncError};
use crate::tenants::Scope;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::Response;
use serde_json::{Map, Value, json};
use starfish_protocol::canonical::{non_negative_integer, write_js_number};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Why one entry of a batch has no document; the text is the protocol's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
enum EntryError {
    #[error("Collection not found")]
    CollectionNotFound,
    #[error("Invalid path parameter")]
    InvalidPathParameter,
    #[error("Missing required path parameter")]
    MissingPathParameter,
    #[error("Forbidden")]
    Forbidden,
    #[error("binary_not_supported")]
    BinaryNotSupported,
    #[error("append_params_not_supported")]
    AppendParamsNotSupported,
    #[error(transparent)]
    Bound(#[from] BoundError),
    #[error("Internal error")]
    Internal,
}

/// One `appendParams` entry: `{since?, last?, limit?}`.
#[derive(Debug, Clone, Copy, Default)]
struct AppendParams {
    since: Option<u64>,
    last: Option<u64>,
    limit: Option<u64>,
}

impl AppendParams {
    /// The read this entry makes: `limit` wins over `last`, and an entry is never
    /// larger than `cap` (`maxPullLimit`, or the server's bound), so the budget counts
    /// what is read. `since` alone reads the oldest `cap` elements after it (with
    /// `hasMore` when there are others); no bound at all reads the newest `cap`.
    fn log_query(self, cap: u64) -> LogQuery {
        let last = self.limit.or(self.last).map(|l| l.min(cap));
        LogQuery {
            checkpoint: self.since,
            last: if self.since.is_some() {
                last
            } else {
                Some(last.unwrap_or(cap))
            },
            full: false,
        }
    }
}

/// The most elements one batch entry of `collection` may read.
fn entry_cap(state: &AppState, collection: Option<&Arc<Collection>>) -> u64 {
    collection
        .and_then(|c| c.append_only.as_ref())
        .map_or(state.log_limits.pull_elements, |a| {
            state.log_limits.pull_cap(a)
        })
}

type AppendParamsMap = HashMap<String, Vec<Option<AppendParams>>>;

/// The parsed query of a batch pull, within its bounds.
struct BatchQuery {
    names: Vec<String>,
    params: Map<String, Value>,
    append_params: AppendParamsMap,
}

/// `collections`: comma-separated names, de-duplicated in order.
fn parse_names(raw: Option<String>, max: usize) -> Result<Vec<String>, ApiError> {
    let raw = raw.unwrap_or_default();
    let mut seen = HashSet::new();
    let mut names = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if seen.insert(name) {
            names.push(name.to_owned());
            if names.len() > max {
                return Err(ApiError::TooManyCollections);
            }
        }
    }
    if names.is_empty() {
        return Err(ApiError::MissingCollections);
    }
    Ok(names)
}

/// `params`: `{"<collection>": [{<param>: <string|number>}, ...]}`.
fn parse_params(raw: Option<String>) -> Result<Map<String, Value>, ApiError> {
    let Some(raw) = raw else {
        return Ok(Map::new());
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&raw) else {
        return Err(ApiError::InvalidParams);
    };
    let well_formed = map.values().all(|v| {
        v.as_array()
            .is_some_and(|sets| sets.iter().all(Value::is_object))
    });
    if well_formed {
        Ok(map)
    } else {
        Err(ApiError::InvalidParams)
    }
}

/// A bound of an `appendParams` entry: a non-negative integer, as a number or text.
fn append_bound(o: &Map<String, Value>, k: &str) -> Result<Option<u64>, ApiError> {
    let n = match o.get(k) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    n.and_then(non_negative_integer)
        .map(Some)
        .ok_or(ApiError::InvalidAppendParams)
}

fn parse_append_entry(name: &str, e: Value) -> Result<Option<AppendParams>, ApiError> {
    let o = match e {
        Value::Null => return Ok(None),
        Value::Object(o) => o,
        _ => return Err(ApiError::InvalidAppendParams),
    };
    let full = matches!(o.get("full"), Some(Value::Bool(true)))
        || o.get("full").and_then(Value::as_f64) == Some(1.0)
        || matches!(o.get("full").and_then(Value::as_str), Some("true" | "1"));
    if full {
        return Err(ApiError::AppendParamsFull(name.to_owned()));
    }
    Ok(Some(AppendParams {
        since: append_bound(&o, "since")?,
        last: append_bound(&o, "last")?,
        limit: append_bound(&o, "limit")?,
    }))
}

/// `appendParams`: `{"<collection>": [{since?, last?, limit?} | null, ...]}`.
fn parse_append_params(raw: Option<String>) -> Result<AppendParamsMap, ApiError> {
    let mut out = AppendParamsMap::new();
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(out);
    };
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(&raw) else {
        return Err(ApiError::InvalidAppendParams);
    };
    for (name, entries) in map {
        let Value::Array(entries) = entries else {
            return Err(ApiError::InvalidAppendParams);
        };
        let list = entries
            .into_iter()
            .map(|e| parse_append_entry(&name, e))
            .collect::<Result<_, _>>()?;
        out.insert(name, list);
    }
    Ok(out)
}

impl BatchQuery {
    /// Parses the query and checks every bound before any entry is resolved.
    fn parse(state: &AppState, scope: &Scope, q: Option<&str>) -> Result<Self, ApiError> {
        let max = state.max_collections_per_batch;
        let names = parse_names(query::param(q, "collections"), max)?;
        let params = parse_params(query::param(q, "params"))?;
        let append_params = parse_append_params(query::param(q, "appendParams"))?;
        for (name, aps) in &append_params {
            if let Some(Value::Array(sets)) = params.get(name) {
                if sets.len() != aps.len() {
                    return Err(ApiError::AppendParamsLengthMismatch);
                }
            }
        }
        let total: usize = names
            .iter()
            .map(|n| params.get(n).and_then(Value::as_array).map_or(1, Vec::len))
            .sum();
        if total > max {
            return Err(ApiError::TooManyCollections);
        }
        let mut budget = 0u64;
        for (name, aps) in &append_params {
            let cap = entry_cap(state, scope.routes.by_name.get(name));
            for ap in aps.iter().flatten() {
                let read = ap.log_query(cap).last.unwrap_or(cap);
                budget = budget.saturating_add(read);
            }
        }
        if budget > state.max_batch_append_elements {
            return Err(ApiError::BatchAppendBudget);
        }
        Ok(Self {
            names,
            params,
            append_params,
        })
    }
}

pub(super) async fn pull(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
) -> Result<Response, ApiError> {
    let batch = BatchQuery::parse(state, scope, parts.uri.query())?;
    // One authentication for the whole batch; a failure reads as anonymous.
    let caller = match authenticate(state, parts, Body::empty(), false, Some(scope)).await {
        Ok((caller, _)) => caller,
        // A valid API key with no rights in this namespace.
        Err(ApiError::Forbidden) => return Err(ApiError::Forbidden),
        Err(e) => {
            tracing::debug!(error = %e, "batch pull: authentication failed, reading as anonymous");
            Caller::anonymous()
        }
    };
    admit(scope, &caller)?;
    super::charge(state, parts, scope, &caller).await?;
    let now = state.clock.now_ms();
    let empty = Map::new();
    let mut jobs = Vec::new();
    for name in &batch.names {
        let collection = scope.routes.by_name.get(name).filter(|c| !c.push_only);
        let aps = batch.append_params.get(name);
        let ap = |i: usize| aps.and_then(|a| a.get(i).copied().flatten());
        let sets: Vec<&Map<String, Value>> = match batch.params.get(name).and_then(Value::as_array)
        {
            Some(sets) => sets
                .iter()
                .map(|s| s.as_object().unwrap_or(&empty))
                .collect(),
            None => vec![&empty],
        };
        for (i, set) in sets.into_iter().enumerate() {
            let job = entry(state, scope, collection, set, ap(i), &caller, now);
            jobs.push((name, job));
        }
    }
    let (names_of, futures): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
    let results = futures::future::join_all(futures).await;
    // Each name once, in order of first appearance, with its entries in order.
    let mut out: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    for name in &batch.names {
        if !out.iter().any(|(n, _)| *n == name.as_str()) {
            out.push((name.as_str(), Vec::new()));
        }
    }
    for (name, result) in names_of.into_iter().zip(results) {
        let entry = result.unwrap_or_else(|e| raw(&json!({ "error": e.to_string() })));
        if let Some((_, list)) = out.iter_mut().find(|(n, _)| *n == name.as_str()) {
            list.push(entry);
        }
    }
    Ok(render::json_bytes(collections_body(&out)))
}

/// `{"collections":{<name>:[<entry>...]...}}`, the entries as JSON text already.
fn collections_body(out: &[(&str, Vec<Vec<u8>>)]) -> Vec<u8> {
    let size: usize = out
        .iter()
        .flat_map(|(_, list)| list.iter().map(|e| e.len() + 1))
        .sum();
    let mut body = Vec::with_capacity(size + 64);
    body.extend_from_slice(b"{\"collections\":{");
    for (i, (name, list)) in out.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // Writing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut body, name);
        body.extend_from_slice(b":[");
        for (j, entry) in list.iter().enumerate() {
            if j > 0 {
                body.push(b',');
            }
            body.extend_from_slice(entry);
        }
        body.push(b']');
    }
    body.extend_from_slice(b"}}");
    body
}

/// `value` as JSON text.
fn raw(value: &Value) -> Vec<u8> {
    // A `Value` always serialises.
    serde_json::to_vec(value).unwrap_or_default()
}

/// The path parameters of one entry: given values (strings, or numbers written as
/// JavaScript would), `{identity}` filled with the caller's identity when absent.
fn entry_params(
    collection: &Collection,
    set: &Map<String, Value>,
    caller: &Caller,
) -> Result<PathParams, EntryError> {
    let mut pairs = Vec::new();
    for name in collection.storage_path.params() {
        let value = match set.get(name) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => {
                let mut s = String::new();
                write_js_number(&mut s, n.as_f64().unwrap_or(f64::NAN));
                s
            }
            Some(_) => return Err(EntryError::InvalidPathParameter),
            None => match caller.identity() {
                Some(me) if name == IDENTITY_PARAM => me.to_owned(),
                _ => return Err(EntryError::MissingPathParameter),
            },
        };
        pairs.push((name, value));
    }
    PathParams::checked(pairs).map_err(|_| EntryError::InvalidPathParameter)
}

/// One entry of a batch: the document, or the reason it has none.
async fn entry(
    state: &AppState,
    scope: &Scope,
    collection: Option<&Arc<Collection>>,
    set: &Map<String, Value>,
    append: Option<AppendParams>,
    caller: &Caller,
    now: u64,
) -> Result<Vec<u8>, EntryError> {
    let collection = collection.ok_or(EntryError::CollectionNotFound)?;
    let params = entry_params(collection, set, caller)?;
    let segments = collection.storage_path.segments().len();
    // Bundle members live under the bundle path (the reference reads the wrong key here).
    let doc = Doc::resolve(collection, segments, &params, collection.bundle.is_some())
        .map_err(|_| EntryError::InvalidPathParameter)?;
    match allow(state, caller, scope, &doc, Action::Pull).await {
        Ok(()) => {}
        Err(ApiError::Forbidden) => return Err(EntryError::Forbidden),
        Err(_) => return Err(EntryError::Internal),
    }
    let key = doc.key.as_str();
    if state.batch_key_deny_suffixes.iter().any(|s| {
        key == s
            || key
                .strip_suffix(s.as_str())
                .is_some_and(|k| k.ends_with('/'))
    }) {
        return Err(EntryError::Forbidden);
    }
    if collection.is_binary() {
        return Err(EntryError::BinaryNotSupported);
    }
    let log = match (append, &collection.append_only) {
        (Some(_), None) => return Err(EntryError::AppendParamsNotSupported),
        (Some(_), Some(a)) if !a.persist => return Err(EntryError::AppendParamsNotSupported),
        (Some(ap), Some(a)) => ap.log_query(state.log_limits.pull_cap(a)),
        (None, _) => LogQuery::default(),
    };
    let limits = &state.log_limits;
    if collection.append_only.is_none() {
        let store = scope.store_for(collection);
        return match read_document_body(store, doc.as_ref(), caller, now, false).await {
            Ok((body, _)) => Ok(body),
            Err(e) => {
                tracing::warn!(error = %e, "batch pull entry failed");
                Err(EntryError::Internal)
            }
        };
    }
    match read(
        scope.store_for(collection),
        doc.as_ref(),
        caller,
        log,
        limits,
        now,
    )
    .await
    {
        Ok(Read::Log(view)) => Ok(raw(&super::pull::log_body(&view, now))),
        Ok(Read::Document(Some(d))) => Ok(raw(
            &json!({ "data": Value::Object(d.data), "hash": d.hash, "timestamp": now }),
        )),
        Ok(Read::Document(None)) => Ok(raw(&json!({ "data": {}, "hash": "", "timestamp": now }))),
        Err(SyncError::Bound(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!(error = %e, "batch pull entry failed");
            Err(EntryError::Internal)
        }
    }
}
