//! `POST /[ns/]push/<storage path>`: a JSON document or log element, or a blob.

use super::body::{content_length, read_limited};
use super::endpoint::Doc;
use super::{
    RequestBody, admit, after_write, allow, authenticate, blob, is_public, rate_check,
    request_media_type,
};
use crate::access::Action;
use crate::app::state::AppState;
use crate::auth::Caller;
use crate::hooks::WriteAction;
use crate::routes::error::ApiError;
use crate::sync::write;
use crate::tenants::Scope;
use axum::body::Body;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

#[tracing::instrument(level = "debug", skip_all, fields(collection = %doc.collection.name))]
pub(super) async fn push(
    state: &AppState,
    parts: &Parts,
    body: Body,
    scope: &Scope,
    doc: &Doc,
) -> Result<Response, ApiError> {
    let collection = &doc.collection;
    let public = is_public(collection, Action::Push);
    let (caller, body) = authenticate(state, parts, body, public, Some(scope)).await?;
    admit(scope, &caller)?;
    super::charge(state, parts, scope, &caller).await?;
    allow(state, &caller, scope, doc, Action::Push).await?;
    // The declared length against `maxBodyBytes`, then the rate limit, before any
    // unsigned body is read.
    let declared = content_length(&parts.headers)?;
    if declared.is_some_and(|n| n > collection.max_body_bytes.get()) {
        return Err(ApiError::PayloadTooLarge);
    }
    rate_check(state, parts, scope, collection, &caller, Action::Push).await?;
    let now = state.clock.now_ms();
    if collection.is_binary() {
        return Box::pin(push_blob(state, parts, body, scope, doc, &caller, now)).await;
    }
    // A JSON collection takes exactly `application/json`: the media type the
    // authenticator signed the body for.
    if request_media_type(&parts.headers) != "application/json" {
        return Err(ApiError::JsonMediaTypeRequired);
    }
    let limit = collection.max_body_bytes.get();
    let bytes = match body {
        // Signed writes were read under the pre-auth limit; this collection's may be lower.
        RequestBody::Buffered(bytes) if bytes.len() as u64 > limit => {
            return Err(ApiError::PayloadTooLarge);
        }
        RequestBody::Buffered(bytes) => bytes,
        RequestBody::Streaming(body) => read_limited(body, declared, limit).await?,
    };
    let bytes = match intercept(state, scope, doc, &caller, bytes).await? {
        Intercepted::Answer(answer) => return Ok(answer),
        // A plugin's body keeps the collection's limit too.
        Intercepted::Go { body, .. } if body.len() as u64 > limit => {
            return Err(ApiError::PayloadTooLarge);
        }
        Intercepted::Go { body, .. } => body,
    };
    let written = write::push(
        scope.store_for(collection),
        doc.as_ref(),
        &caller,
        &bytes,
        &state.log_limits,
        now,
        state.keep_bodies,
    )
    .await?;
    let action = if collection.append_only.is_some() {
        WriteAction::Append
    } else {
        WriteAction::Push
    };
    let body = json!({ "hash": written.hash, "timestamp": written.timestamp });
    let stored = written.stored;
    after_write(state, scope, doc, &caller, action, written);
    if stored && action == WriteAction::Push && !state.projections.is_empty() {
        // Awaited: the answer comes once the projections show the write.
        project(state, scope, doc, now).await;
    }
    Ok(axum::Json(body).into_response())
}

/// A blob, streamed to the store: its plugin hooks see no body, and may not
/// transform it.
async fn push_blob(
    state: &AppState,
    parts: &Parts,
    body: RequestBody,
    scope: &Scope,
    doc: &Doc,
    caller: &Caller,
    now: u64,
) -> Result<Response, ApiError> {
    match intercept(state, scope, doc, caller, Bytes::new()).await? {
        Intercepted::Answer(answer) => return Ok(answer),
        Intercepted::Go { transformed, .. } if transformed => {
            tracing::error!(collection = %doc.collection.name, "a plugin transformed a blob push");
            return Err(ApiError::PluginFailed);
        }
        Intercepted::Go { .. } => {}
    }
    let store = scope.store_for(&doc.collection);
    let written = blob::push(store, parts, doc, body, now).await?;
    let answer = json!({ "hash": written.hash });
    after_write(state, scope, doc, caller, WriteAction::Blob, written);
    Ok(axum::Json(answer).into_response())
}

/// Keeps the projections of `doc`'s collection; a failure is logged, never
/// answered (the write stands; `reproject` repairs).
async fn project(state: &AppState, scope: &Scope, doc: &Doc, now: u64) {
    let store = scope.store_for(&doc.collection);
    let projected = crate::projections::project(
        &state.projections,
        store,
        &doc.collection,
        &doc.key,
        &doc.params,
        now,
    );
    if let Err(e) = Box::pin(projected).await {
        tracing::warn!(collection = %doc.collection.name, key = %doc.key, error = %e, "projection not updated");
    }
}

/// What the plugins' push hooks made of a push.
enum Intercepted {
    /// Go on with this body (`transformed`: not the one the client sent).
    Go { body: Bytes, transformed: bool },
    /// Answered on the route's behalf, or refused: nothing is stored.
    Answer(Response),
}

/// The plugins' `intercept_push`, in order (nothing to do without plugins).
async fn intercept(
    state: &AppState,
    scope: &Scope,
    doc: &Doc,
    caller: &Caller,
    body: Bytes,
) -> Result<Intercepted, ApiError> {
    use crate::hooks::plugin::PushOutcome;
    if state.plugins.is_empty() {
        return Ok(Intercepted::Go {
            body,
            transformed: false,
        });
    }
    let ctx = super::hook_context(scope, doc, caller);
    match Box::pin(state.plugins.intercept_push(ctx, body)).await? {
        PushOutcome::Proceed { body, transformed } => Ok(Intercepted::Go { body, transformed }),
        PushOutcome::Reject { status, error } => Err(ApiError::PluginRefused { status, error }),
        PushOutcome::Respond { status, body } => Ok(Intercepted::Answer(
            (status, axum::Json(body)).into_response(),
        )),
    }
}
