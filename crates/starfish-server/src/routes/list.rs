//! `GET /[ns/]list/<storage path without its last segment>?limit=&after=`: the keys
//! of a listable collection, in order, with an exclusive cursor.

use super::endpoint::Doc;
use super::query::{canonical_uint, param};
use super::{admit, allow, authenticate, is_public, rate_check};
use crate::access::Action;
use crate::app::state::AppState;
use crate::routes::error::ApiError;
use crate::tenants::Scope;
use axum::Json;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

pub(super) async fn list(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    prefix: Doc,
) -> Result<Response, ApiError> {
    let public = is_public(&prefix.collection, Action::List);
    let (caller, _) = authenticate(state, parts, Body::empty(), public, Some(scope)).await?;
    admit(scope, &caller)?;
    super::charge(state, parts, scope, &caller).await?;
    allow(state, &caller, scope, &prefix, Action::List).await?;
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
    let after = param(query, "after");
    let (items, has_more) = scope
        .store
        .list_page(&prefix.key, after.as_deref(), limit)
        .await?;
    Ok(Json(json!({ "items": items, "hasMore": has_more })).into_response())
}
