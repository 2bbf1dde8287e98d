//! `GET /[ns/]pull/<bundle path>`: every member the caller may read, in one response.

use super::endpoint::Doc;
use super::{admit, allow, authenticate, is_public};
use crate::access::{Action, check_binding};
use crate::app::state::AppState;
use crate::routes::error::ApiError;
use crate::sync::read::{Read, read};
use crate::sync::{LogQuery, SyncError};
use crate::tenants::Scope;
use axum::Json;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub(super) async fn pull(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    members: &[Doc],
) -> Result<Response, ApiError> {
    let public = members
        .iter()
        .all(|m| is_public(&m.collection, Action::Pull));
    let (caller, _) = authenticate(state, parts, Body::empty(), public, Some(scope)).await?;
    admit(scope, &caller)?;
    super::charge(state, parts, scope, &caller).await?;
    if let Some(first) = members.first() {
        check_binding(&caller, &first.params).map_err(|_| ApiError::Forbidden)?;
    }
    let mut readable = Vec::with_capacity(members.len());
    for member in members {
        // A member the caller may not read is left out, never reported.
        match allow(state, &caller, scope, member, Action::Pull).await {
            Ok(()) => readable.push(member),
            Err(ApiError::Forbidden) => {}
            Err(e) => return Err(e),
        }
    }
    let now = state.clock.now_ms();
    let reads = readable.iter().map(|member| {
        read(
            scope.store_for(&member.collection),
            member.as_ref(),
            &caller,
            LogQuery::default(),
            &state.log_limits,
            now,
        )
    });
    let docs = futures::future::join_all(reads).await;
    let mut collections = Map::new();
    for (member, doc) in readable.iter().zip(docs) {
        let entry = match doc {
            Ok(Read::Document(Some(d))) => json!({ "data": Value::Object(d.data), "hash": d.hash }),
            // A log member (never stored in a bundle) reads as empty.
            Ok(Read::Document(None) | Read::Log(_)) | Err(SyncError::Bound(_)) => {
                json!({ "data": {}, "hash": "" })
            }
            Err(e) => return Err(e.into()),
        };
        collections.insert(member.collection.name.to_string(), entry);
    }
    Ok(Json(json!({ "collections": collections, "timestamp": now })).into_response())
}
