//! `POST /[ns/]push/<storage path>` for JSON collections: regular documents
//! (compare-and-swap on `baseHash`) and append-only logs.

use super::body::read_limited;
use super::{RequestBody, ResolvedRoute, push_gate};
use crate::access::holds_any;
use crate::auth::Caller;
use crate::config::{AppendOnly, Collection};
use crate::error::ApiError;
use crate::protocol::append::AppendError;
use crate::protocol::append::MAX_FUTURE_MS;
use crate::protocol::author::{APPEND_AUTHOR_DOMAIN, DOC_AUTHOR_DOMAIN, verify_author};
use crate::protocol::document::{AppendEnvelope, parse_body_object};
use crate::protocol::{PushEnvelope, StoredDoc, sha256_hex, stable_stringify};
use crate::state::AppState;
use crate::store::{AppendFailure, AppendOp, CasError, DocStore};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

#[tracing::instrument(skip_all, fields(collection = %route.target.collection.name))]
pub(super) async fn push(
    state: &AppState,
    route: &ResolvedRoute,
    caller: &Caller,
    parts: &Parts,
    body: RequestBody,
) -> Result<Response, ApiError> {
    let headers = &parts.headers;
    let collection = &route.target.collection;
    let declared = push_gate(state, parts, route, caller)?;
    let limit = collection.max_body_bytes.get();
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ));
    }
    let bytes = match body {
        // Signed writes were read under the pre-auth limit; this collection's may be lower.
        RequestBody::Buffered(bytes) if bytes.len() as u64 > limit => {
            return Err(ApiError::PayloadTooLarge("Payload too large".into()));
        }
        RequestBody::Buffered(bytes) => bytes,
        RequestBody::Streaming(body) => read_limited(body, declared, limit).await?,
    };
    let body = parse_body_object(&bytes)?;
    if let Some(Value::Object(data)) = body.get("data") {
        check_field_writes(data, collection, caller, &route.params)?;
        if let Some(schema) = &collection.object_schema {
            schema
                .validate(&Value::Object(data.clone()))
                .map_err(|v| ApiError::Schema {
                    message: v.message,
                    path: v.path,
                    validator: v.validator,
                })?;
        }
    }
    match &collection.append_only {
        Some(append) => push_append(state, route, caller, append, body).await,
        None => push_document(state, route, caller, body).await,
    }
}

/// `fieldPermissions` writeRoles: 403 naming the first field the caller may not write.
fn check_field_writes(
    data: &Map<String, Value>,
    collection: &Collection,
    caller: &Caller,
    params: &[(String, String)],
) -> Result<(), ApiError> {
    let identity = super::identity_of(params);
    for (field, perm) in &collection.field_permissions {
        if !perm.write.is_empty()
            && data.contains_key(field)
            && !holds_any(caller, &[], &perm.write, identity)
        {
            return Err(ApiError::ForbiddenText(format!(
                "Field '{field}' is not writable with your roles"
            )));
        }
    }
    Ok(())
}

async fn push_document(
    state: &AppState,
    route: &ResolvedRoute,
    caller: &Caller,
    body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let envelope = PushEnvelope::from_body(body)?;
    let data = Value::Object(envelope.data);
    if let Some(author) = &envelope.author {
        if caller.presenter().is_some_and(|p| p != author.pubkey) {
            return Err(ApiError::ForbiddenMessage(
                "document author must be the request presenter",
            ));
        }
        if !verify_author(
            DOC_AUTHOR_DOMAIN,
            &data,
            &route.key,
            &author.pubkey,
            &author.signature,
        ) {
            return Err(ApiError::ForbiddenMessage(
                "invalid document author signature",
            ));
        }
    }
    let Value::Object(data) = data else {
        return Err(ApiError::Envelope(
            crate::protocol::EnvelopeError::MissingData,
        ));
    };
    let now = state.clock.now_ms();
    let new_doc = StoredDoc::new(data, now, envelope.author);
    let new_bytes = new_doc.to_bytes();
    let key = DocStore::key(&route.key)?;
    let base_hash = envelope.base_hash;
    let result = state
        .store
        .compare_and_swap(&key, |current| {
            let accepted = match (current, &base_hash) {
                // Create: nothing may be stored yet, not even a corrupt object.
                (Some(_), None) => false,
                (None, None) => true,
                (current, Some(base)) => {
                    let current_hash = current
                        .and_then(StoredDoc::parse)
                        .map(|d| d.hash)
                        .unwrap_or_default();
                    *base == current_hash
                }
            };
            if accepted {
                Ok((new_bytes.clone(), ()))
            } else {
                Err(())
            }
        })
        .await;
    match result {
        Ok(()) => Ok(axum::Json(json!({ "hash": new_doc.hash, "timestamp": now })).into_response()),
        Err(CasError::Rejected(()) | CasError::Contended) => Err(ApiError::HashMismatch),
        Err(CasError::Store(e)) => Err(e.into()),
    }
}

async fn push_append(
    state: &AppState,
    route: &ResolvedRoute,
    caller: &Caller,
    config: &AppendOnly,
    body: Map<String, Value>,
) -> Result<Response, ApiError> {
    let envelope = AppendEnvelope::from_body(body, config.require_author_signature)
        .map_err(|e| ApiError::BadRequest(e.to_string().into()))?;
    if let Some(author) = &envelope.author {
        if caller.presenter().is_some_and(|p| p != author.pubkey) {
            return Err(ApiError::ForbiddenMessage(
                "append author must be the request presenter",
            ));
        }
        // Verified even when not required: an unverified proof is never stored.
        let item = Value::Object(envelope.item.clone());
        if !verify_author(
            APPEND_AUTHOR_DOMAIN,
            &item,
            &route.key,
            &author.pubkey,
            &author.signature,
        ) {
            return Err(ApiError::ForbiddenMessage(
                "invalid append author signature",
            ));
        }
    }
    let now = state.clock.now_ms();
    if envelope
        .ts
        .is_some_and(|ts| ts > now.saturating_add(MAX_FUTURE_MS))
    {
        return Err(ApiError::BadRequest("ts is too far in the future".into()));
    }
    if !config.persist {
        let ts = envelope.ts.unwrap_or(now);
        let hash = sha256_hex(stable_stringify(&Value::Object(envelope.item)).as_bytes());
        return Ok(axum::Json(json!({ "hash": hash, "timestamp": ts })).into_response());
    }
    let op = AppendOp {
        key: &route.key,
        field: &config.field,
        item: &envelope.item,
        ts: envelope.ts,
        author: envelope.author.as_ref(),
        max_items: config.max_items.map(|m| m.get()),
        chunk_size: config.chunk_size.map(|c| c.get()),
        now,
    };
    match state.store.append(&op).await {
        Ok((hash, ts)) => Ok(axum::Json(json!({ "hash": hash, "timestamp": ts })).into_response()),
        Err(AppendFailure::Refused(AppendError::NonMonotonic)) => {
            Err(ApiError::ConflictText("non_monotonic_timestamp".into()))
        }
        Err(AppendFailure::Refused(AppendError::LimitExceeded(limit))) => {
            Err(ApiError::AppendLimitExceeded { limit })
        }
        Err(AppendFailure::Contended) => Err(ApiError::HashMismatch),
        Err(AppendFailure::Store(e)) => Err(e.into()),
    }
}
