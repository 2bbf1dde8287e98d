//! A runtime namespace's own webhooks: created, listed and deleted by its admin
//! through the admin API, kept in its part of the store (counted in its quota,
//! sealed with its key, gone with it), and served at
//! `POST /_starfish/webhooks/<namespace>/<id>`, pushing only into that namespace.
//!
//! | route | what |
//! |---|---|
//! | `POST /_starfish/admin/namespaces/<name>/webhooks` `{"id","target","transform","timestampHeader"?,"toleranceSeconds"?}` | creates one (201, with its secret, shown once; 409 if the id is taken) |
//! | `GET /_starfish/admin/namespaces/<name>/webhooks` | its webhooks, without secrets |
//! | `DELETE /_starfish/admin/namespaces/<name>/webhooks/<id>` | deletes one |

use super::admin::{AdminError, check, read_json};
use super::webhook::{refused_delivery, serve};
use crate::app::state::AppState;
use crate::store::{CasError, NsStore, ObjectKey};
use crate::tenants::Scope;
use crate::webhooks::StoredRoute;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// Webhooks a namespace may have.
const MAX_WEBHOOKS: usize = 100;

/// What a create names.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    id: String,
    target: String,
    transform: Value,
    timestamp_header: Option<String>,
    tolerance_seconds: Option<u64>,
}

/// The runtime namespace `name`, once the caller may administer it.
async fn administered(
    state: &AppState,
    name: &str,
    headers: &axum::http::HeaderMap,
) -> Result<Arc<Scope>, AdminError> {
    let principal = check(state, headers).await?;
    principal.may_ask(name)?;
    let record = state.tenants.record(name).await?;
    principal.may(name, Some(&record.generation))?;
    state
        .tenants
        .lookup(name)
        .await?
        .ok_or(AdminError::NotFound)
}

/// Where a namespace keeps its own objects: sealed when it seals at rest.
fn kept(scope: &Scope) -> &NsStore {
    scope.sealed.as_ref().unwrap_or(&scope.store)
}

/// `POST /_starfish/admin/namespaces/<name>/webhooks`.
pub(crate) async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let scope = administered(&state, &name, request.headers()).await?;
    let body: CreateBody = read_json(request.into_body()).await?;
    let key = ObjectKey::webhook(&body.id).ok_or(AdminError::BadRequest("Invalid webhook id"))?;
    let (held, _) = kept(&scope)
        .list_page(&ObjectKey::webhook_folder(), None, MAX_WEBHOOKS)
        .await?;
    if held.len() >= MAX_WEBHOOKS {
        return Err(AdminError::BadRequest("Too many webhooks"));
    }
    let stored = StoredRoute {
        target: body.target,
        secret: StoredRoute::new_secret().ok_or(AdminError::BadRequest("No random source"))?,
        timestamp_header: body.timestamp_header,
        tolerance_seconds: body.tolerance_seconds,
        transform: body.transform,
        created_at: state.clock.now_ms(),
    };
    if let Err(e) = stored.route(&name) {
        tracing::debug!(error = %e, "webhook refused");
        return Err(AdminError::BadRequest("Invalid webhook"));
    }
    let bytes =
        serde_json::to_vec(&stored).map_err(|_| AdminError::BadRequest("Invalid webhook"))?;
    let created = kept(&scope)
        .compare_and_swap(&key, |current| match current {
            None => Ok((bytes.clone(), ())),
            Some(_) => Err(()),
        })
        .await;
    match created {
        Ok(()) => {}
        Err(CasError::Rejected(()) | CasError::Contended) => {
            return Ok((
                StatusCode::CONFLICT,
                Json(json!({"error": "Webhook exists"})),
            )
                .into_response());
        }
        Err(CasError::Store(e)) => return Err(e.into()),
    }
    state.webhooks.forget_tenant_hooks(&name);
    let url = format!("/_starfish/webhooks/{name}/{}", body.id);
    let answer =
        json!({"id": body.id, "url": url, "target": stored.target, "secret": stored.secret});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `GET /_starfish/admin/namespaces/<name>/webhooks`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let scope = administered(&state, &name, request.headers()).await?;
    let store = kept(&scope);
    let (ids, _) = store
        .list_page(&ObjectKey::webhook_folder(), None, MAX_WEBHOOKS)
        .await?;
    let mut webhooks = Vec::new();
    for id in ids {
        let Some(key) = ObjectKey::webhook(&id) else {
            continue;
        };
        let Some(bytes) = store.get(&key).await? else {
            continue;
        };
        if let Ok(route) = serde_json::from_slice::<StoredRoute>(&bytes) {
            webhooks.push(json!({"id": id, "target": route.target,
                                 "timestampHeader": route.timestamp_header,
                                 "createdAt": route.created_at}));
        }
    }
    Ok(Json(json!({ "webhooks": webhooks })).into_response())
}

/// `DELETE /_starfish/admin/namespaces/<name>/webhooks/<id>`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path((name, id)): Path<(String, String)>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let scope = administered(&state, &name, request.headers()).await?;
    let key = ObjectKey::webhook(&id).ok_or(AdminError::NotFound)?;
    if kept(&scope).get(&key).await?.is_none() {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Webhook not found"})),
        )
            .into_response());
    }
    kept(&scope).remove(&key).await?;
    state.webhooks.forget_tenant_hooks(&name);
    Ok(Json(json!({ "id": id, "deleted": true })).into_response())
}

/// `POST /_starfish/webhooks/<namespace>/<id>`: a namespace's own webhook.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    Path((namespace, id)): Path<(String, String)>,
    request: Request<Body>,
) -> Response {
    let hook = format!("{namespace}/{id}");
    let asked = super::webhook::request_id(request.headers());
    // Refused before a namespace is known: the node's trail only.
    let unknown = || {
        let refused = (StatusCode::NOT_FOUND, "unknown_webhook");
        refused_delivery(&state, &hook, asked.clone(), None, refused)
    };
    // Nothing is read for what cannot be a delivery.
    if request.method() != axum::http::Method::POST {
        let refused = (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
        return refused_delivery(&state, &hook, asked, None, refused);
    }
    let Some(key) = ObjectKey::webhook(&id) else {
        return unknown();
    };
    let scope = match state.tenants.lookup(&namespace).await {
        Ok(Some(scope)) => scope,
        Ok(None) => return unknown(),
        Err(e) => {
            tracing::error!(error = %e, "webhook: namespace lookup failed");
            let refused = (StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable");
            return refused_delivery(&state, &hook, asked, None, refused);
        }
    };
    // Read from the store at most every few seconds, whatever arrives: a delivery
    // is verified with its route's secret, so reading it is the price of every
    // request, signed or not. One listing answers for every id the namespace does
    // not have.
    let generation = scope.generation.as_deref().unwrap_or("");
    let tenant = scope
        .namespace
        .clone()
        .map(|name| (name, kept(&scope).clone()));
    let route = match cached_route(&state, &scope, &namespace, generation, &id, &key).await {
        Ok(route) => route,
        Err(refused) => return refused_delivery(&state, &hook, asked, tenant, refused),
    };
    let Some(route) = route else {
        let refused = (StatusCode::NOT_FOUND, "unknown_webhook");
        return refused_delivery(&state, &hook, asked, tenant, refused);
    };
    serve(state, &hook, &route, request, tenant).await
}

/// The route of webhook `id` of the namespace, as this node read it lately or as
/// its store holds it now; `None` when it has no such webhook.
async fn cached_route(
    state: &AppState,
    scope: &Scope,
    namespace: &str,
    generation: &str,
    id: &str,
    key: &ObjectKey,
) -> Result<Option<Arc<crate::webhooks::WebhookRoute>>, (StatusCode, &'static str)> {
    use crate::webhooks::Known;
    let hooks = &state.webhooks;
    let epoch = hooks.tenant_epoch();
    match hooks.tenant_route(namespace, generation, id) {
        Known::Route(route) => return Ok(Some(route)),
        Known::Unknown => return Ok(None),
        Known::Listed => {}
        Known::Nothing => {
            let listed = kept(scope)
                .list_page(&ObjectKey::webhook_folder(), None, MAX_WEBHOOKS)
                .await;
            let Ok((ids, _)) = listed else {
                return Err((StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable"));
            };
            let ids: std::collections::HashSet<String> = ids.into_iter().collect();
            let known = ids.contains(id);
            hooks.listed_tenant_hooks(namespace, generation, ids, epoch);
            if !known {
                return Ok(None);
            }
        }
    }
    let Some(route) = stored_route(scope, key, namespace, id).await? else {
        return Ok(None);
    };
    let route = Arc::new(route);
    hooks.read_tenant_route(namespace, generation, id, route.clone(), epoch);
    Ok(Some(route))
}

/// The route of the webhook at `key` as the namespace's store holds it: `None`
/// when it holds none; an answer when it cannot be read.
async fn stored_route(
    scope: &Scope,
    key: &ObjectKey,
    namespace: &str,
    id: &str,
) -> Result<Option<crate::webhooks::WebhookRoute>, (StatusCode, &'static str)> {
    let bytes = match kept(scope).get(key).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Ok(None),
        Err(e) => {
            tracing::error!(error = %e, "webhook: route read failed");
            return Err((StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable"));
        }
    };
    let route = serde_json::from_slice::<StoredRoute>(&bytes)
        .map_err(|e| e.to_string())
        .and_then(|stored| stored.route(namespace));
    match route {
        Ok(route) => Ok(Some(route)),
        Err(e) => {
            tracing::error!(namespace = %namespace, webhook = %id, error = %e, "webhook: a stored route is not one");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "ingest_failed"))
        }
    }
}
