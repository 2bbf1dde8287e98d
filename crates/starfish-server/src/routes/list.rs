//! `GET /[ns/]list/<storage path without its last segment>?limit=&after=`: the keys
//! of a listable collection, in order, with an exclusive cursor; with
//! `include=values`, each listed document's pull body too, as the caller may read
//! it (`null` where the read rules refuse it), in pages of at most 100 documents
//! and 4 MiB of bodies.

use super::endpoint::Doc;
use super::query::{canonical_uint, param};
use super::{admit, allow, authenticate, is_public, rate_check};
use crate::access::Action;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::routes::error::ApiError;
use crate::store::PathParams;
use crate::sync::read::read_document_body;
use crate::tenants::Scope;
use axum::Json;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use serde_json::json;
use serde_json::value::RawValue;
use starfish_protocol::template::Segment;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// At most this many documents' values in a page: each is a read.
const MAX_VALUES: usize = 100;
/// A page with values ends once its bodies pass this many bytes (`hasMore`).
const MAX_VALUES_BYTES: usize = 4 << 20;
/// Documents read at once for a page with values.
const READS_AT_ONCE: usize = 8;

pub(super) async fn list(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    prefix: &Doc,
) -> Result<Response, ApiError> {
    let public = is_public(&prefix.collection, Action::List);
    let (caller, _) = authenticate(state, parts, Body::empty(), public, Some(scope)).await?;
    admit(scope, &caller)?;
    super::charge(state, parts, scope, &caller).await?;
    allow(state, &caller, scope, prefix, Action::List).await?;
    rate_check(
        state,
        parts,
        scope,
        &prefix.collection,
        &caller,
        Action::List,
    )
    .await?;
    let query = parts.uri.query();
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => canonical_uint(&raw)
            .map(|n| n as usize)
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or(ApiError::InvalidListLimit)?,
    };
    let with_values = match param(query, "include").as_deref() {
        None => false,
        // A log's or a blob's value is no bounded JSON body; a push-only
        // collection is never read back.
        Some("values") if readable_values(&prefix.collection) => true,
        Some(_) => return Err(ApiError::InvalidInclude),
    };
    let limit = if with_values {
        limit.min(MAX_VALUES)
    } else {
        limit
    };
    let after = param(query, "after");
    let (mut items, mut has_more) = scope
        .store
        .list_page(&prefix.key, after.as_deref(), limit)
        .await?;
    if !with_values {
        return Ok(Json(json!({ "items": items, "hasMore": has_more })).into_response());
    }
    let reading = Reading {
        state,
        parts,
        caller: &caller,
        scope,
        prefix,
        now: state.clock.now_ms(),
    };
    let values = reading.values(&items).await?;
    if values.len() < items.len() {
        // Cut at a bound: the next page starts after the last value sent.
        items.truncate(values.len());
        has_more = true;
    }
    // Serialised as they were read: the values stay raw JSON text.
    let page = Page {
        items,
        values,
        has_more,
    };
    let body = serde_json::to_vec(&page).map_err(|_| ApiError::Integrity)?;
    Ok(super::render::json_bytes(body))
}

/// True when a collection's listed documents may be answered with their values.
fn readable_values(c: &crate::config::Collection) -> bool {
    !c.is_binary() && c.append_only.is_none() && !c.push_only
}

/// A page with values.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    items: Vec<String>,
    values: Vec<Option<Box<RawValue>>>,
    has_more: bool,
}

/// One list request reading its documents' values.
struct Reading<'a> {
    state: &'a AppState,
    parts: &'a Parts,
    caller: &'a Caller,
    scope: &'a Scope,
    prefix: &'a Doc,
    now: u64,
}

impl Reading<'_> {
    /// The pull body of each listed document (`null` where the caller may not
    /// read it), in order, until their bytes pass [`MAX_VALUES_BYTES`] (at least
    /// one) or the collection's pull rate limit runs out (each value is a pull).
    async fn values(&self, items: &[String]) -> Result<Vec<Option<Box<RawValue>>>, ApiError> {
        let reads: Vec<_> = items.iter().map(|item| self.value(item)).collect();
        let mut reads = futures::stream::iter(reads).buffered(READS_AT_ONCE);
        let (mut out, mut bytes) = (Vec::with_capacity(items.len()), 0);
        while let Some(read) = reads.next().await {
            let read = match read {
                Err(ApiError::RateLimited { .. }) if !out.is_empty() => break,
                other => other?,
            };
            bytes += read.as_ref().map_or(0, |v| v.get().len());
            if bytes > MAX_VALUES_BYTES && !out.is_empty() {
                break;
            }
            out.push(read);
        }
        Ok(out)
    }

    /// One listed document's pull body, as a pull of it would answer it (the
    /// plugins' pull hooks included); `None` when the read rules or a plugin
    /// refuse it, or its name is no parameter value.
    async fn value(&self, item: &str) -> Result<Option<Box<RawValue>>, ApiError> {
        let Some(doc) = listed(self.prefix, item) else {
            return Ok(None);
        };
        let (state, caller, scope) = (self.state, self.caller, self.scope);
        match allow(state, caller, scope, &doc, Action::Pull).await {
            Ok(()) => {}
            Err(ApiError::Forbidden) => return Ok(None),
            Err(e) => return Err(e),
        }
        rate_check(
            state,
            self.parts,
            scope,
            &doc.collection,
            caller,
            Action::Pull,
        )
        .await?;
        if !state.plugins.is_empty() && !self.plugins_let_read(&doc).await? {
            return Ok(None);
        }
        let store = scope.store_for(&doc.collection);
        let read = read_document_body(store, doc.as_ref(), caller, self.now, true);
        let (body, _) = Box::pin(read).await?;
        let text = String::from_utf8(body).map_err(|_| ApiError::Integrity)?;
        RawValue::from_string(text)
            .map(Some)
            .map_err(|_| ApiError::Integrity)
    }

    /// False when a plugin refuses the pull, or answers it itself (no JSON value).
    async fn plugins_let_read(&self, doc: &Doc) -> Result<bool, ApiError> {
        use crate::hooks::{PullAnswer, PullDecision};
        let ctx = super::hook_context(self.scope, doc, self.caller);
        if let PullDecision::Reject { .. } = self.state.plugins.before_pull(&ctx).await? {
            return Ok(false);
        }
        Ok(matches!(
            self.state.plugins.intercept_pull(&ctx).await?,
            PullAnswer::Proceed
        ))
    }
}

/// The document `item` names under `prefix`; `None` when its name is no
/// parameter value.
fn listed(prefix: &Doc, item: &str) -> Option<Doc> {
    let collection = &prefix.collection;
    let segments = collection.storage_path.segments();
    let Some(Segment::Param(last)) = segments.last() else {
        return None;
    };
    let params = prefix
        .params
        .iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .chain([(last.clone(), item.to_owned())]);
    let params = PathParams::checked(params).ok()?;
    Doc::resolve(collection, segments.len(), &params, false).ok()
}
