//! `GET /config`: what clients may know about the collections (§2.1), when enabled.

use super::authenticate;
use crate::app::state::{AppState, ConfigEndpoint};
use crate::auth::Caller;
use crate::config::{Collection, Role};
use crate::routes::error::ApiError;
use crate::tenants::Scope;
use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use std::sync::Arc;

fn visible(collection: &Collection, caller: &Caller, mode: ConfigEndpoint) -> bool {
    if mode == ConfigEndpoint::Public {
        return true;
    }
    let holds = |role: &Role| match role {
        Role::Public => true,
        Role::Owner => false,
        Role::Named(name) => caller.roles().iter().any(|r| **r == **name),
    };
    collection
        .read_roles
        .iter()
        .chain(collection.write_roles.iter())
        .any(holds)
}

fn list(collections: &[Arc<Collection>], caller: &Caller, mode: ConfigEndpoint) -> Value {
    Value::Array(
        collections
            .iter()
            .filter(|c| visible(c, caller, mode))
            .map(|c| c.client_info.clone())
            .collect(),
    )
}

/// The caller `/config` describes collections to.
async fn config_caller(
    state: &AppState,
    parts: &Parts,
    body: Body,
    mode: ConfigEndpoint,
    scope: Option<&Scope>,
) -> Result<Caller, ApiError> {
    if mode != ConfigEndpoint::RoleFiltered && !parts.headers.contains_key(AUTHORIZATION) {
        return Ok(Caller::anonymous());
    }
    // A failed authentication lists what an anonymous caller may see; never a 5xx.
    // A valid API key with no rights in this namespace is refused.
    match authenticate(state, parts, body, false, scope).await {
        Ok((caller, _)) => Ok(caller),
        Err(ApiError::Forbidden) => Err(ApiError::Forbidden),
        Err(e) => {
            tracing::debug!(error = %e, "/config: authentication failed");
            Ok(Caller::anonymous())
        }
    }
}

/// `GET /<ns>/config`: the namespace's collections; a caller from a root the
/// namespace does not trust gets 403.
pub(super) async fn namespace(
    state: &AppState,
    parts: Parts,
    body: Body,
    scope: &Scope,
) -> Result<Response, ApiError> {
    let Some(mode) = state.config_endpoint else {
        return Err(ApiError::NotFound);
    };
    let caller = config_caller(state, &parts, body, mode, Some(scope)).await?;
    // A namespace that names its roots is described only to callers it trusts.
    let anonymous = caller.identity().is_none();
    if !scope.trusts(&caller) || (scope.trusted_roots.is_some() && anonymous) {
        return Err(ApiError::Forbidden);
    }
    super::charge(state, &parts, scope, &caller).await?;
    let collections = list(&scope.routes.ordered, &caller, mode);
    Ok(Json(json!({ "collections": collections })).into_response())
}

pub(super) async fn config(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let Some(mode) = state.config_endpoint else {
        return Err(ApiError::NotFound);
    };
    let caller = if mode == ConfigEndpoint::RoleFiltered {
        let (parts, body) = request.into_parts();
        config_caller(&state, &parts, body, mode, None)
            .await
            .unwrap_or_else(|_| Caller::anonymous())
    } else {
        Caller::anonymous()
    };
    let mut out = Map::new();
    out.insert(
        "collections".into(),
        list(&state.config.collections, &caller, mode),
    );
    if !state.config.namespaces.is_empty() {
        let namespaces: Map<String, Value> = state
            .config
            .namespaces
            .iter()
            // A namespace that names its trusted roots is described only at its own
            // `/<ns>/config`, to callers it trusts.
            .filter(|ns| ns.trusted_roots.is_none())
            .map(|ns| {
                (
                    ns.name.to_string(),
                    json!({ "collections": list(&ns.collections, &caller, mode) }),
                )
            })
            .collect();
        out.insert("namespaces".into(), Value::Object(namespaces));
    }
    Ok(Json(Value::Object(out)).into_response())
}
