//! The admin API, under `/_starfish/admin/`, off unless
//! [`crate::app::state::SyncOptions::with_admin_key`] is set:
//!
//! | Route | Does |
//! |---|---|
//! | `POST /_starfish/admin/namespaces` `{"name","template","trustedRoots"?}` | creates a namespace from a template (201; 409 if the name is taken) |
//! | `PUT /_starfish/admin/namespaces/{name}/limits` | sets a namespace's request limits (super-admin key) |
//! | `PUT /_starfish/admin/namespaces/{name}/quota` | sets a namespace's quota (super-admin key) |
//! | `GET /_starfish/admin/namespaces?after=&limit=` | lists namespaces with their collection counts (`usage=1`: objects and bytes too) |
//! | `GET /_starfish/admin/namespaces/<name>` | one namespace with its objects and bytes |
//! | `POST /_starfish/admin/namespaces/<name>/suspend` and `/resume` | its routes answer 403 / are served again |
//! | `DELETE /_starfish/admin/namespaces/<name>` | deletes its data, then its record (404 everywhere after) |
//! | `POST /_starfish/admin/keys` `{"grants":{ns:[rights]},"admin"?,"expiresAt"?,"label"?}` | a new API key; its token appears in this answer only (201) |
//! | `GET /_starfish/admin/keys/<id>` | a key's grants, state and use count (never its hash) |
//! | `POST /_starfish/admin/keys/<id>/revoke` | refused on every node within the refresh bound |
//!
//! Every route takes `Authorization: Bearer <admin key>` (compared in constant time
//! with the configured key's SHA-256), or an API key with `admin`, which manages only
//! the namespaces it names (every one with `*`).

use crate::app::state::AppState;
use crate::store::StoreError;
use crate::tenants::keys::{KeyRecord, MAX_GRANTS, Right};
use crate::tenants::{TenantError, TenantRecord, TenantState, Tenants};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 16 * 1024;
/// Largest page of a namespace listing.
const MAX_PAGE: usize = 1000;

/// Who is calling the admin API.
pub(super) enum Principal {
    /// The admin key: everything.
    Super,
    /// An API key with `admin`: the namespaces it names (all with `*`).
    Key(Arc<KeyRecord>),
}

impl Principal {
    /// May administer `namespace` of `generation` (`None`: a config namespace).
    pub(super) fn may(&self, namespace: &str, generation: Option<&str>) -> Result<(), AdminError> {
        match self {
            Self::Super => Ok(()),
            Self::Key(k) if k.administers(namespace, generation) => Ok(()),
            Self::Key(_) => Err(AdminError::Forbidden),
        }
    }

    /// May ask about `namespace` at all: decided from the key alone, before anything
    /// is looked up, so a namespace admin key gets the same answer for a namespace
    /// outside its grants whether it exists, is the config's, or is another tenant's.
    pub(super) fn may_ask(&self, namespace: &str) -> Result<(), AdminError> {
        match self {
            Self::Super => Ok(()),
            Self::Key(k) if k.names(namespace) => Ok(()),
            Self::Key(_) => Err(AdminError::Forbidden),
        }
    }

    fn may_all(&self) -> Result<(), AdminError> {
        match self {
            Self::Super => Ok(()),
            Self::Key(k) if k.administers_all() => Ok(()),
            Self::Key(_) => Err(AdminError::Forbidden),
        }
    }
}

/// An admin answer that is not a success.
#[derive(Debug)]
pub(crate) enum AdminError {
    NotFound,
    Unauthorized,
    Forbidden,
    KeyMissing,
    BadRequest(&'static str),
    Tenant(TenantError),
}

impl From<TenantError> for AdminError {
    fn from(e: TenantError) -> Self {
        Self::Tenant(e)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        Self::Tenant(TenantError::Store(e))
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            // A path not mounted (the API is off, or no such route): the same
            // plain-text 404 as any other, the reference's.
            Self::NotFound => return crate::routes::error::ApiError::NotFound.into_response(),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
            Self::KeyMissing => (StatusCode::NOT_FOUND, "Key not found"),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, *m),
            Self::Tenant(e) => match e {
                TenantError::InvalidName => (StatusCode::BAD_REQUEST, "Invalid namespace name"),
                TenantError::UnknownTemplate => {
                    (StatusCode::BAD_REQUEST, "Unknown namespace template")
                }
                TenantError::Exists => (StatusCode::CONFLICT, "Namespace exists"),
                TenantError::InConfig => {
                    (StatusCode::CONFLICT, "Namespace is defined in the config")
                }
                TenantError::Missing => (StatusCode::NOT_FOUND, "Namespace not found"),
                TenantError::Contended => (StatusCode::SERVICE_UNAVAILABLE, "Registry busy"),
                TenantError::StoreUnopenable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The namespace's store cannot be opened",
                ),
                TenantError::Store(e) => {
                    tracing::warn!(error = %e, "admin: store failed");
                    (StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable")
                }
            },
        };
        (status, Json(json!({ "error": message }))).into_response()
    }
}

/// Admits an admin request, or says why not (404 when the admin API is off).
pub(super) async fn check(state: &AppState, headers: &HeaderMap) -> Result<Principal, AdminError> {
    let key = state.admin_key.as_ref().ok_or(AdminError::NotFound)?;
    if key.admits(headers) {
        return Ok(Principal::Super);
    }
    if let (Some(keys), Some(token)) = (&state.keys, crate::routes::bearer(headers)) {
        if let Ok(Ok(record)) = keys.check(token).await {
            if record.admin {
                return Ok(Principal::Key(record));
            }
        }
    }
    Err(AdminError::Unauthorized)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    name: String,
    template: String,
    #[serde(default)]
    trusted_roots: Option<Value>,
}

fn record_json(record: &TenantRecord, tenants: &Tenants) -> Value {
    json!({
        "name": record.name,
        "template": record.template,
        "state": record.state,
        "trustedRoots": record.trusted_roots,
        "createdAt": record.created_at,
        "collections": tenants.collections_of(&record.template),
        "limits": tenants.limits_of(record),
        "source": "api",
    })
}

/// `POST /_starfish/admin/namespaces`.
pub(crate) async fn create(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let (parts, body) = request.into_parts();
    let principal = check(&state, &parts.headers).await?;
    let body: CreateBody = read_json(body).await?;
    let name = body.name.clone();
    let answer = create_namespace(&state, &principal, body).await;
    // The name is in the body, not the path: the answer tells the audit record.
    Ok(AuditedTarget::new(&name, [name.as_str()]).on(answer.into_response()))
}

async fn create_namespace(
    state: &AppState,
    principal: &Principal,
    body: CreateBody,
) -> Result<Response, AdminError> {
    // Choosing a template and trusted roots is the operator's: a namespace admin
    // key cannot create (or re-create) a namespace.
    principal.may_all()?;
    let mut errors = Vec::new();
    let trusted_roots = crate::config::trusted_roots(body.trusted_roots.as_ref(), "", &mut errors);
    if !errors.is_empty() {
        return Err(AdminError::BadRequest("Invalid trustedRoots"));
    }
    let record = state
        .tenants
        .create(&body.name, &body.template, trusted_roots)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(record_json(&record, &state.tenants)),
    )
        .into_response())
}

/// `GET /_starfish/admin/namespaces`.
pub(crate) async fn list(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    check(&state, request.headers()).await?.may_all()?;
    let query = request.uri().query();
    let param = |name: &str| crate::routes::query::param(query, name);
    let limit = match param("limit") {
        None => 100,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or(AdminError::BadRequest("Invalid limit parameter"))?,
    };
    let with_usage = param("usage").is_some_and(|v| v == "1" || v == "true");
    let after = param("after");
    let tenants = &state.tenants;
    let (records, has_more) = tenants.list(after.as_deref(), limit).await?;
    let mut items = Vec::with_capacity(records.len());
    for record in &records {
        let mut item = record_json(record, tenants);
        if with_usage {
            add_usage(&mut item, tenants, record).await?;
        }
        items.push(item);
    }
    // The config's own namespaces, on the first page.
    let configured: Vec<Value> = if after.is_none() {
        state
            .config
            .namespaces
            .iter()
            .map(|ns| {
                json!({
                    "name": ns.name.as_str(),
                    "state": "active",
                    "collections": ns.collections.len(),
                    "isolation": state.config.isolation_of(ns).as_str(),
                    "source": "config",
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(
        Json(json!({ "items": items, "hasMore": has_more, "configured": configured }))
            .into_response(),
    )
}

async fn add_usage(
    item: &mut Value,
    tenants: &Tenants,
    record: &TenantRecord,
) -> Result<(), AdminError> {
    if let Some((objects, bytes)) = tenants.usage(record).await? {
        item["objects"] = json!(objects);
        item["bytes"] = json!(bytes);
    }
    Ok(())
}

/// `GET /_starfish/admin/namespaces/<name>`.
pub(crate) async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let principal = check(&state, &headers).await?;
    principal.may_ask(&name)?;
    let tenants = &state.tenants;
    let record = tenants.record(&name).await?;
    principal.may(&name, Some(&record.generation))?;
    let mut item = record_json(&record, tenants);
    add_usage(&mut item, tenants, &record).await?;
    if let Some(ledger) = tenants.ledger_of(&record) {
        item["quota"] = json!(ledger.report().await?);
    }
    Ok(Json(item).into_response())
}

/// `PUT /_starfish/admin/namespaces/<name>/limits`: the namespace's request limits
/// (`{"windowMs", "maxRequests", "maxRequestsPerIdentity", "maxConcurrent"}`), or
/// `null` for its template's. Only the super-admin key. Every node applies them
/// within its refresh (1 s).
pub(crate) async fn set_limits(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    check(&state, request.headers()).await?.may_all()?;
    let limits: Option<crate::config::NamespaceLimits> = read_json(request.into_body()).await?;
    if limits.is_some_and(|l| l.problem().is_some()) {
        return Err(AdminError::BadRequest("Invalid limits"));
    }
    let tenants = &state.tenants;
    let valid = tenants.runtime_name(&name)?;
    let record = tenants
        .update(&valid, |record| {
            record.limits = limits;
            Ok(())
        })
        .await?;
    Ok(Json(record_json(&record, tenants)).into_response())
}

/// `PUT /_starfish/admin/namespaces/<name>/quota`: `{"maxBytes": N, "maxDocuments":
/// N}` (either `null`: the template's). Only the super-admin key: a namespace's own
/// admin cannot raise its quota. Every node applies it at its next lease (within 1 s
/// of its next write).
pub(crate) async fn set_quota(
    State(state): State<AppState>,
    Path(name): Path<String>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    check(&state, request.headers()).await?.may_all()?;
    let tenants = &state.tenants;
    let record = tenants.record(&name).await?;
    let quota: crate::config::Quota = read_json(request.into_body()).await?;
    let ledger = tenants.ledger_of(&record).ok_or(AdminError::BadRequest(
        "Namespace has no quota (give its template one)",
    ))?;
    ledger.set_limits(quota).await?;
    let mut item = record_json(&record, tenants);
    item["quota"] = json!(ledger.report().await?);
    Ok(Json(item).into_response())
}

/// `POST /_starfish/admin/namespaces/<name>/<suspend|resume>`.
pub(crate) async fn action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let principal = check(&state, &headers).await?;
    principal.may_ask(&name)?;
    let record = state.tenants.record(&name).await?;
    principal.may(&name, Some(&record.generation))?;
    let to = match action.as_str() {
        "suspend" => TenantState::Suspended,
        "resume" => TenantState::Active,
        _ => return Err(AdminError::NotFound),
    };
    let record = state.tenants.set_state(&name, to).await?;
    Ok(Json(record_json(&record, &state.tenants)).into_response())
}

/// Source documents a reproject call projects at most, unless it asks fewer.
const REPROJECT_PAGE: usize = 500;

/// `POST /_starfish/admin/namespaces/<name>/reproject/<collection>?after=&limit=`:
/// projects `collection`'s documents again, a page at a time (`~` names the
/// root, for the admin key only); call again with the answer's `after` until
/// `done` ([`crate::projections::reproject`]).
pub(crate) async fn reproject(
    State(state): State<AppState>,
    Path((name, collection)): Path<(String, String)>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let principal = check(&state, request.headers()).await?;
    let scope = if name == "~" {
        // The root is the operator's: the admin key only.
        if !matches!(principal, Principal::Super) {
            return Err(AdminError::Forbidden);
        }
        std::sync::Arc::new(state.root.clone())
    } else {
        principal.may_ask(&name)?;
        match state.namespaces.get(&name) {
            Some(scope) => {
                principal.may(&name, None)?;
                std::sync::Arc::new(scope.clone())
            }
            // A runtime namespace: this generation of it (a key of a deleted one
            // of the same name acts nowhere).
            None => {
                let record = state.tenants.record(&name).await?;
                principal.may(&name, Some(&record.generation))?;
                state
                    .tenants
                    .lookup(&name)
                    .await?
                    .ok_or(AdminError::NotFound)?
            }
        }
    };
    let Some(collection) = scope.routes.by_name.get(&collection).cloned() else {
        return Err(AdminError::NotFound);
    };
    let query = request.uri().query();
    let param = |p: &str| crate::routes::query::param(query, p);
    let limit = param("limit")
        .map_or(Ok(REPROJECT_PAGE), |v| v.parse::<usize>())
        .ok()
        .filter(|n| (1..=REPROJECT_PAGE).contains(n))
        .ok_or(AdminError::BadRequest("Invalid limit"))?;
    let after = param("after");
    let report = crate::projections::reproject(
        &state.projections,
        scope.store_for(&collection),
        &collection,
        after.as_deref(),
        limit,
        state.clock.now_ms(),
    )
    .await?;
    Ok(Json(report).into_response())
}

/// `DELETE /_starfish/admin/namespaces/<name>`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let principal = check(&state, &headers).await?;
    principal.may_ask(&name)?;
    let record = state.tenants.record(&name).await?;
    principal.may(&name, Some(&record.generation))?;
    let deleted = state.tenants.delete(&name).await?;
    Ok(Json(json!({ "name": name, "deleted": true, "objectsDeleted": deleted })).into_response())
}

/// Reads a JSON admin body of at most [`MAX_ADMIN_BODY`] bytes.
pub(super) async fn read_json<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, AdminError> {
    let bytes = axum::body::to_bytes(body, MAX_ADMIN_BODY)
        .await
        .map_err(|_| AdminError::BadRequest("Invalid request body"))?;
    serde_json::from_slice(&bytes).map_err(|_| AdminError::BadRequest("Invalid request body"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct KeyBody {
    grants: BTreeMap<String, Vec<Right>>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    label: Option<String>,
}

/// A key record as the admin API shows it: never its hash.
fn key_json(record: &KeyRecord) -> Value {
    json!({
        "id": record.id,
        "grants": record.grants,
        "admin": record.admin,
        "expiresAt": record.expires_at,
        "revoked": record.revoked,
        "createdAt": record.created_at,
        "label": record.label,
        "uses": record.uses,
        "createdBy": record.created_by,
    })
}

/// The principal may administer every namespace `record` names.
fn may_manage(principal: &Principal, record: &KeyRecord) -> Result<(), AdminError> {
    for ns in record.grants.keys() {
        if ns == "*" {
            principal.may_all()?;
        } else {
            principal.may(ns, record.generations.get(ns).map(String::as_str))?;
        }
    }
    Ok(())
}

/// What a namespace admin key may hand on: rights it holds itself in each namespace,
/// no admin unless it administers all, never past its own expiry (the child's expiry
/// is capped to it).
fn may_delegate(
    principal: &Principal,
    body: &mut KeyBody,
    generations: &BTreeMap<String, String>,
) -> Result<Option<String>, AdminError> {
    let Principal::Key(parent) = principal else {
        return Ok(None);
    };
    if body.admin && !parent.administers_all() {
        return Err(AdminError::Forbidden);
    }
    for (ns, rights) in &body.grants {
        let held = if ns == "*" {
            parent.grants.get("*").map(Vec::as_slice)
        } else {
            parent.rights_in(ns, generations.get(ns).map(String::as_str))
        };
        let held = held.ok_or(AdminError::Forbidden)?;
        if !parent.admin || rights.iter().any(|r| !held.contains(r)) {
            return Err(AdminError::Forbidden);
        }
    }
    if let Some(limit) = parent.expires_at {
        body.expires_at = Some(body.expires_at.map_or(limit, |e| e.min(limit)));
    }
    Ok(Some(parent.id.clone()))
}

/// `POST /_starfish/admin/keys`: a new key; its token is in the answer only.
pub(crate) async fn create_key(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let (parts, body) = request.into_parts();
    let principal = check(&state, &parts.headers).await?;
    let body: KeyBody = read_json(body).await?;
    let valid_grants = !body.grants.is_empty()
        && body.grants.len() <= MAX_GRANTS
        && body.grants.iter().all(|(ns, rights)| {
            !rights.is_empty()
                && rights.len() <= 3
                && (ns == "*" || state.tenants.valid_name(ns).is_some())
        });
    let valid_label = body.label.as_ref().is_none_or(|l| l.len() <= 256);
    if !valid_grants || !valid_label {
        return Err(AdminError::BadRequest("Invalid key grants"));
    }
    for ns in body.grants.keys() {
        principal.may_ask(ns)?;
    }
    let mut body = body;
    // Bind each namespace created at runtime to its current generation.
    let mut generations = BTreeMap::new();
    for ns in body.grants.keys().filter(|ns| *ns != "*") {
        if state.namespaces.contains_key(ns.as_str()) {
            continue;
        }
        let record = state.tenants.record(ns).await.map_err(|e| match e {
            TenantError::Missing => AdminError::BadRequest("Unknown namespace in grants"),
            other => other.into(),
        })?;
        generations.insert(ns.clone(), record.generation);
    }
    let created_by = may_delegate(&principal, &mut body, &generations)?;
    let keys = state.keys.as_ref().ok_or(AdminError::NotFound)?;
    let (record, token) = keys
        .create(
            body.grants,
            generations,
            body.admin,
            body.expires_at,
            body.label,
            created_by,
        )
        .await?;
    let mut out = key_json(&record);
    out["key"] = json!(token);
    let made = (StatusCode::CREATED, Json(out)).into_response();
    Ok(AuditedTarget::of_key(&record).on(made))
}

/// `GET /_starfish/admin/keys/<id>`.
pub(crate) async fn key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let principal = check(&state, &headers).await?;
    let keys = state.keys.as_ref().ok_or(AdminError::NotFound)?;
    let record = keys.get(&id).await.map_err(key_missing)?;
    may_manage(&principal, &record)?;
    Ok(Json(key_json(&record)).into_response())
}

/// `POST /_starfish/admin/keys/<id>/revoke`.
pub(crate) async fn revoke_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let principal = check(&state, &headers).await?;
    let keys = state.keys.as_ref().ok_or(AdminError::NotFound)?;
    let record = keys.get(&id).await.map_err(key_missing)?;
    may_manage(&principal, &record)?;
    let record = keys.revoke(&id).await.map_err(key_missing)?;
    Ok(AuditedTarget::of_key(&record).on(Json(key_json(&record)).into_response()))
}

fn key_missing(e: TenantError) -> AdminError {
    match e {
        TenantError::Missing => AdminError::KeyMissing,
        other => other.into(),
    }
}

/// What an admin answer tells its audit record when the path does not say it all:
/// what it acted on (a namespace named in the body, a key made), and the
/// namespaces whose own trails the record goes to (a key's, each it grants).
#[derive(Debug, Clone)]
pub(crate) struct AuditedTarget {
    target: String,
    namespaces: Vec<String>,
}

impl AuditedTarget {
    fn new<'a>(target: &str, namespaces: impl IntoIterator<Item = &'a str>) -> Self {
        // A record never carries much client text.
        let bounded = |s: &str| s.chars().take(MAX_TARGET_CHARS).collect::<String>();
        Self {
            target: bounded(target),
            namespaces: namespaces.into_iter().map(bounded).collect(),
        }
    }

    fn of_key(record: &crate::tenants::keys::KeyRecord) -> Self {
        Self::new(
            &record.id,
            record
                .grants
                .keys()
                .map(String::as_str)
                .filter(|n| *n != "*"),
        )
    }

    fn on(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// Records every admin request in the audit trail: the action its route names,
/// what it acted on (the namespace or key id of its path, or what the answer
/// names: [`AuditedTarget`]), who asked (an API key by its id; the admin key is
/// named as such, never shown), and the answer. A namespace's record goes to its
/// own trail too.
pub(crate) async fn audited(
    State(state): State<AppState>,
    matched: axum::extract::MatchedPath,
    request: Request<Body>,
    next: axum::middleware::Next,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let api_key_id = crate::routes::bearer(request.headers())
        .and_then(|token| token.strip_prefix(crate::tenants::keys::PREFIX))
        .and_then(|rest| rest.split('_').next())
        .map(str::to_owned);
    let response = next.run(request).await;
    let Some(auditor) = &state.audit else {
        return response;
    };
    let (action, path_target) = admin_action(&method, matched.as_str(), &path);
    let (target, namespaces) = match response.extensions().get::<AuditedTarget>() {
        Some(told) => (Some(told.target.clone()), told.namespaces.clone()),
        None => (path_target.clone(), path_target.into_iter().collect()),
    };
    let status = response.status();
    let success = status.is_success();
    let record = crate::audit::AuditRecord {
        timestamp: state.clock.now_ms(),
        action,
        success,
        status_code: status.as_u16(),
        target,
        reason: (!success)
            .then(|| status.canonical_reason().map(str::to_owned))
            .flatten(),
        identity: api_key_id.is_none().then(|| "admin-key".to_owned()),
        api_key_id,
        ..crate::audit::AuditRecord::default()
    };
    let mut tenants = Vec::new();
    if auditor.keeps_tenant_trails() {
        for name in &namespaces {
            tenants.extend(tenant_store(&state, name).await);
        }
    }
    auditor.record(&record, &tenants);
    response
}

/// A namespace's name and the part of the store its own trail is kept in, when it
/// exists (a config namespace, or a runtime one not deleted).
async fn tenant_store(
    state: &AppState,
    name: &str,
) -> Option<(crate::config::NamespaceName, crate::store::NsStore)> {
    let scope = match state.namespaces.get(name) {
        Some(scope) => std::sync::Arc::new(scope.clone()),
        None => state.tenants.lookup(name).await.ok()??,
    };
    let namespace = scope.namespace.clone()?;
    Some((
        namespace,
        scope.sealed.as_ref().unwrap_or(&scope.store).clone(),
    ))
}

/// `GET /_starfish/admin/namespaces/<name>/audit?since=&limit=`: the namespace's
/// own trail, oldest first, for the admin key or an API key that administers it
/// (never another namespace's).
pub(crate) async fn audit_trail(
    State(state): State<AppState>,
    Path((name, what)): Path<(String, String)>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    if what != "audit" {
        return Err(AdminError::NotFound);
    }
    let principal = check(&state, request.headers()).await?;
    principal.may_ask(&name)?;
    let trails = state
        .audit
        .as_ref()
        .and_then(|a| a.tenants.clone())
        .ok_or(AdminError::NotFound)?;
    let query = request.uri().query();
    let param = |p: &str| crate::routes::query::param(query, p);
    let since = param("since")
        .map_or(Ok(0), |v| v.parse::<u64>())
        .map_err(|_| AdminError::BadRequest("Invalid since"))?;
    let limit = param("limit")
        .map_or(Ok(MAX_PAGE), |v| v.parse::<usize>())
        .map_err(|_| AdminError::BadRequest("Invalid limit"))?
        .clamp(1, MAX_PAGE);
    let (namespace, store) = tenant_store(&state, &name)
        .await
        .ok_or(AdminError::NotFound)?;
    if let Some(generation) = state.tenants.record(&name).await.ok().map(|r| r.generation) {
        principal.may(&name, Some(&generation))?;
    } else {
        principal.may(&name, None)?;
    }
    let (records, more) = trails
        .read(&store, &namespace, since, limit, state.clock.now_ms())
        .await?;
    Ok(Json(json!({"records": records, "hasMore": more})).into_response())
}

/// Longest namespace name or key id an admin audit record repeats from a path.
const MAX_TARGET_CHARS: usize = 128;

/// The audit action of an admin route, and the namespace or key its path names.
fn admin_action(method: &axum::http::Method, route: &str, path: &str) -> (String, Option<String>) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // A name or id of the path, bounded: a record never carries much client text.
    let target = segments
        .get(3)
        .map(|s| s.chars().take(MAX_TARGET_CHARS).collect());
    let action = match (method.as_str(), route) {
        ("POST", "/_starfish/admin/namespaces") => "namespace.create",
        ("GET", "/_starfish/admin/namespaces") => "namespace.list",
        ("GET", "/_starfish/admin/namespaces/{name}") => "namespace.show",
        ("DELETE", "/_starfish/admin/namespaces/{name}") => "namespace.delete",
        (_, "/_starfish/admin/namespaces/{name}/quota") => "namespace.quota",
        (_, "/_starfish/admin/namespaces/{name}/limits") => "namespace.limits",
        ("GET", "/_starfish/admin/namespaces/{name}/{action}") => "namespace.audit",
        (_, "/_starfish/admin/namespaces/{name}/reproject/{collection}") => "namespace.reproject",
        ("POST", "/_starfish/admin/namespaces/{name}/webhooks") => "namespace.webhook.create",
        ("GET", "/_starfish/admin/namespaces/{name}/webhooks") => "namespace.webhook.list",
        (_, "/_starfish/admin/namespaces/{name}/webhooks/{id}") => "namespace.webhook.delete",
        (_, "/_starfish/admin/namespaces/{name}/{action}") => match segments.get(4) {
            Some(&"suspend") => "namespace.suspend",
            Some(&"resume") => "namespace.resume",
            _ => "namespace.action",
        },
        ("POST", "/_starfish/admin/keys") => "key.create",
        ("GET", "/_starfish/admin/keys/{id}") => "key.show",
        (_, "/_starfish/admin/keys/{id}/revoke") => "key.revoke",
        _ => "other",
    };
    (format!("admin.{action}"), target)
}
