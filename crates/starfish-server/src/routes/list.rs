//! `GET /[ns/]list/<storage path without its last segment>?limit=&after=`: the keys
//! of a listable collection, in order, with an exclusive cursor.

use super::ResolvedRoute;
use super::query::{canonical_uint, param};
use crate::error::ApiError;
use crate::state::AppState;
use crate::store::DocStore;
use axum::Json;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeSet;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// Names that are store bookkeeping, not documents.
fn is_bookkeeping(item: &str) -> bool {
    item.ends_with(".tmp") || item.ends_with(".__meta__") || item.contains('#')
}

pub(super) async fn list(
    state: &AppState,
    route: &ResolvedRoute,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => canonical_uint(&raw)
            .map(|n| n as usize)
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or(ApiError::BadRequest("Invalid limit parameter".into()))?,
    };
    let after = param(query, "after");
    let prefix = DocStore::key(&route.key)?;
    let prefix_text = format!("{}/", route.key);
    let inner = state.store.inner();
    let mut listing = match &after {
        Some(after) => {
            let offset = object_store::path::Path::from_iter(
                prefix
                    .parts()
                    .chain(object_store::path::Path::from(after.as_str()).parts()),
            );
            inner.list_with_offset(Some(&prefix), &offset)
        }
        None => inner.list(Some(&prefix)),
    };
    // Keep only the `limit + 1` smallest keys: listing order is not guaranteed by every
    // backend, and memory stays bounded by the page size.
    let mut smallest = BTreeSet::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(crate::store::StoreError::from)?;
        let Some(item) = meta.location.as_ref().strip_prefix(&prefix_text) else {
            continue;
        };
        if is_bookkeeping(item) || after.as_deref().is_some_and(|a| item <= a) {
            continue;
        }
        smallest.insert(item.to_owned());
        if smallest.len() > limit + 1 {
            smallest.pop_last();
        }
    }
    let has_more = smallest.len() > limit;
    let items: Vec<String> = smallest.into_iter().take(limit).collect();
    Ok(Json(json!({ "items": items, "hasMore": has_more })).into_response())
}
