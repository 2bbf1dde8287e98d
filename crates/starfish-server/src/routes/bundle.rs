//! `GET /[ns/]pull/<bundle path>`: every member the caller may read, in one response.

use super::pull::read_json;
use super::{ResolvedRoute, permits};
use crate::access::Action;
use crate::auth::Caller;
use crate::config::Collection;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

pub(super) async fn bundle_pull(
    state: &AppState,
    route: &ResolvedRoute,
    members: &[Arc<Collection>],
    caller: &Caller,
) -> Result<Response, ApiError> {
    let now = state.clock.now_ms();
    let mut readable = Vec::new();
    for member in members {
        // A member the caller may not read is left out, never reported.
        if permits(state, caller, member, &route.params, Action::Pull).await? {
            readable.push(member);
        }
    }
    let reads = readable.iter().map(|member| {
        let key = format!("{}/{}", route.key, member.name);
        async move { read_json(state, member, &key, caller, &route.params, now).await }
    });
    let docs = futures::future::try_join_all(reads).await?;
    let mut collections = Map::new();
    for (member, doc) in readable.iter().zip(docs) {
        let entry = match doc {
            Some(d) => json!({ "data": Value::Object(d.data), "hash": d.hash }),
            None => json!({ "data": {}, "hash": "" }),
        };
        collections.insert(member.name.to_string(), entry);
    }
    Ok(Json(json!({ "collections": collections, "timestamp": now })).into_response())
}
