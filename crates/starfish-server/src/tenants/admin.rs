//! The admin API, under `/_starfish/admin/`, off unless
//! [`crate::SyncOptions::with_admin_key`] is set:
//!
//! | Route | Does |
//! |---|---|
//! | `POST /_starfish/admin/namespaces` `{"name","template","trustedRoots"?}` | creates a namespace from a template (201; 409 if the name is taken) |
//! | `GET /_starfish/admin/namespaces?after=&limit=` | lists namespaces with their collection counts (`usage=1`: objects and bytes too) |
//! | `GET /_starfish/admin/namespaces/<name>` | one namespace with its objects and bytes |
//! | `POST /_starfish/admin/namespaces/<name>/suspend` and `/resume` | its routes answer 403 / are served again |
//! | `DELETE /_starfish/admin/namespaces/<name>` | deletes its data, then its record (404 everywhere after) |
//!
//! Every route takes `Authorization: Bearer <admin key>`, compared in constant time
//! with the configured key's SHA-256.

use super::{TenantError, TenantRecord, TenantState, Tenants};
use crate::config::names::SYSTEM_ROOT;
use crate::state::AppState;
use crate::store::StoreError;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 16 * 1024;
/// Largest page of a namespace listing.
const MAX_PAGE: usize = 1000;

/// The admin key, kept only as its SHA-256.
#[derive(Clone)]
pub(crate) struct AdminKey([u8; 32]);

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminKey(..)")
    }
}

impl AdminKey {
    pub(crate) fn new(key: &str) -> Self {
        Self(Sha256::digest(key.as_bytes()).into())
    }

    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.0).into()
    }
}

/// An admin answer that is not a success.
#[derive(Debug)]
pub(crate) enum AdminError {
    NotFound,
    Unauthorized,
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
            Self::NotFound => return StatusCode::NOT_FOUND.into_response(),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "Unauthorized"),
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
fn check(state: &AppState, headers: &HeaderMap) -> Result<(), AdminError> {
    let key = state.admin_key.as_ref().ok_or(AdminError::NotFound)?;
    if key.admits(headers) {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
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
        "source": "api",
    })
}

/// `POST /_starfish/admin/namespaces`.
pub(crate) async fn create(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, AdminError> {
    let (parts, body) = request.into_parts();
    check(&state, &parts.headers)?;
    let bytes = axum::body::to_bytes(body, MAX_ADMIN_BODY)
        .await
        .map_err(|_| AdminError::BadRequest("Invalid request body"))?;
    let body: CreateBody = serde_json::from_slice(&bytes)
        .map_err(|_| AdminError::BadRequest("Invalid request body"))?;
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
    check(&state, request.headers())?;
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
    check(&state, &headers)?;
    let tenants = &state.tenants;
    let record = tenants.record(&name).await?;
    let mut item = record_json(&record, tenants);
    add_usage(&mut item, tenants, &record).await?;
    Ok(Json(item).into_response())
}

/// `POST /_starfish/admin/namespaces/<name>/<suspend|resume>`.
pub(crate) async fn action(
    State(state): State<AppState>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    check(&state, &headers)?;
    let to = match action.as_str() {
        "suspend" => TenantState::Suspended,
        "resume" => TenantState::Active,
        _ => return Err(AdminError::NotFound),
    };
    let record = state.tenants.set_state(&name, to).await?;
    Ok(Json(record_json(&record, &state.tenants)).into_response())
}

/// `DELETE /_starfish/admin/namespaces/<name>`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    check(&state, &headers)?;
    let deleted = state.tenants.delete(&name).await?;
    Ok(Json(json!({ "name": name, "deleted": true, "objectsDeleted": deleted })).into_response())
}

impl Tenants {
    /// Creates tenant `name` from `template` (a conditional create: one winner).
    pub(crate) async fn create(
        &self,
        name: &str,
        template: &str,
        trusted_roots: Option<Vec<String>>,
    ) -> Result<TenantRecord, TenantError> {
        let valid = self.valid_name(name).ok_or(TenantError::InvalidName)?;
        if self.static_names.contains(name) {
            return Err(TenantError::InConfig);
        }
        if !self.templates.contains_key(template) {
            return Err(TenantError::UnknownTemplate);
        }
        let record = TenantRecord {
            name: name.to_owned(),
            template: template.to_owned(),
            state: TenantState::Active,
            trusted_roots,
            created_at: self.clock.now_ms(),
        };
        let bytes = serde_json::to_vec(&record).map_err(|_| TenantError::InvalidName)?;
        self.registry
            .compare_and_swap(&crate::store::ObjectKey::named(&valid), |current| {
                if current.is_some() {
                    Err(TenantError::Exists)
                } else {
                    Ok((bytes.clone(), ()))
                }
            })
            .await?;
        self.forget(name);
        Ok(record)
    }

    /// The record of `name`.
    pub(crate) async fn record(&self, name: &str) -> Result<TenantRecord, TenantError> {
        let valid = self.valid_name(name).ok_or(TenantError::Missing)?;
        self.read(&valid).await?.ok_or(TenantError::Missing)
    }

    /// Moves tenant `name` to `to` (suspend or resume), by compare-and-swap.
    pub(crate) async fn set_state(
        &self,
        name: &str,
        to: TenantState,
    ) -> Result<TenantRecord, TenantError> {
        let valid = self.valid_name(name).ok_or(TenantError::Missing)?;
        let record = self
            .registry
            .compare_and_swap(&crate::store::ObjectKey::named(&valid), |current| {
                let mut record: TenantRecord = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .ok_or(TenantError::Missing)?;
                if record.state == TenantState::Deleting {
                    return Err(TenantError::Missing);
                }
                record.state = to;
                let bytes = serde_json::to_vec(&record).map_err(|_| TenantError::Missing)?;
                Ok::<_, TenantError>((bytes, record))
            })
            .await?;
        self.forget(name);
        Ok(record)
    }

    /// Deletes tenant `name`: marks it deleting (404 from then on), removes its
    /// data, then its record. An interrupted deletion is finished by the next one.
    pub(crate) async fn delete(&self, name: &str) -> Result<u64, TenantError> {
        let valid = self.valid_name(name).ok_or(TenantError::Missing)?;
        let key = crate::store::ObjectKey::named(&valid);
        let record = self
            .registry
            .compare_and_swap(&key, |current| {
                let mut record: TenantRecord = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .ok_or(TenantError::Missing)?;
                record.state = TenantState::Deleting;
                let bytes = serde_json::to_vec(&record).map_err(|_| TenantError::Missing)?;
                Ok::<_, TenantError>((bytes, record))
            })
            .await?;
        self.forget(name);
        let deleted = match self
            .templates
            .get(&record.template)
            .and_then(|t| self.store_of(&valid, t))
        {
            Some(store) => store.clear().await?,
            None => 0,
        };
        self.registry.remove(&key).await?;
        self.forget(name);
        Ok(deleted)
    }

    /// One page of tenant records, by name, after `after`.
    pub(crate) async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<TenantRecord>, bool), TenantError> {
        let root = object_store::path::Path::from_iter([SYSTEM_ROOT, super::REGISTRY_AREA]);
        let mut listing = self.root.inner().list(Some(&root));
        let mut names = std::collections::BTreeSet::new();
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(StoreError::from)?;
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if after.is_some_and(|a| name <= a) || self.valid_name(name).is_none() {
                continue;
            }
            names.insert(name.to_owned());
            if names.len() > limit + 1 {
                names.pop_last();
            }
        }
        let has_more = names.len() > limit;
        let mut out = Vec::new();
        for name in names.into_iter().take(limit) {
            if let Ok(record) = self.record(&name).await {
                out.push(record);
            }
        }
        Ok((out, has_more))
    }

    /// The objects and bytes tenant `record` holds; `None` when its store cannot
    /// be opened.
    pub(crate) async fn usage(
        &self,
        record: &TenantRecord,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let Some(name) = self.valid_name(&record.name) else {
            return Ok(None);
        };
        match self
            .templates
            .get(&record.template)
            .and_then(|t| self.store_of(&name, t))
        {
            Some(store) => store.usage().await.map(Some),
            None => Ok(None),
        }
    }

    /// How many collections `template` has.
    pub(crate) fn collections_of(&self, template: &str) -> usize {
        self.templates
            .get(template)
            .map_or(0, |t| t.collections.len())
    }
}
