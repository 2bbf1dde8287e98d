//! `POST /[ns/]push/<storage path>` for regular JSON documents.

use super::body::{content_length, read_limited};
use super::{RequestBody, ResolvedRoute, rate_check};
use crate::access::Action;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::protocol::StoredDoc;
use crate::protocol::author::{DOC_AUTHOR_DOMAIN, verify_author};
use crate::protocol::document::parse_push_body;
use crate::state::AppState;
use crate::store::{CasError, DocStore};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

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
    if collection.append_only.is_some() {
        return Err(ApiError::NotImplemented);
    }
    let declared = content_length(headers)?;
    let limit = collection.max_body_bytes.get();
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge("Payload too large".into()));
    }
    rate_check(state, parts, route, caller, Action::Push)?;
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
    let envelope = parse_push_body(&bytes)?;
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
