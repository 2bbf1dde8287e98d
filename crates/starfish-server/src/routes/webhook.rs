//! `POST /webhook/<id>`: webhook ingress ([`crate::webhooks`]): verified, replay
//! checked, transformed, and pushed through the whole pipeline.

use crate::app::state::AppState;
use crate::webhooks;
use crate::webhooks::replay::Seen;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub(crate) fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// `POST /webhook/<id>`: a webhook of the config.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let Some(route) = state.webhooks.route(&id) else {
        let refused = (StatusCode::NOT_FOUND, "unknown_webhook");
        return refused_delivery(&state, &id, request_id(request.headers()), None, refused);
    };
    serve(state, &id, &route, request, None).await
}

/// A namespace's own part of the store, for its audit trail.
pub(crate) type Tenant = (
    starfish_protocol::names::NamespaceName,
    crate::store::NsStore,
);

/// Verifies, transforms, claims and pushes one delivery to `route` (`id` keys its
/// claims); a delivery refused before its push is audited here (the push itself
/// is audited as every push is), to `tenant`'s trail too for a namespace's webhook.
pub(crate) async fn serve(
    state: AppState,
    id: &str,
    route: &webhooks::WebhookRoute,
    request: Request<Body>,
    tenant: Option<Tenant>,
) -> Response {
    let asked = request_id(request.headers());
    match deliver(state.clone(), id, route, request).await {
        Ok(answer) => answer,
        Err(refused) => refused_delivery(&state, id, asked, tenant, refused),
    }
}

/// The request's `x-request-id`, when it is short and plain (as the router keeps it).
pub(crate) fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    (id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())).then(|| id.to_owned())
}

/// The most characters of a webhook's id an audit record keeps.
const MAX_TARGET_CHARS: usize = 128;

/// The answer to a delivery refused before its push, recorded in the audit trail
/// (action `webhook`, the webhook as its target, the refusal as its reason).
pub(crate) fn refused_delivery(
    state: &AppState,
    id: &str,
    request_id: Option<String>,
    tenant: Option<Tenant>,
    (status, error): (StatusCode, &'static str),
) -> Response {
    if let Some(auditor) = state.audit.as_ref().filter(|a| a.keeps("webhook", false)) {
        // The id as the caller wrote it in the path: cut as admin targets are.
        let id: String = id.chars().take(MAX_TARGET_CHARS).collect();
        let record = crate::audit::AuditRecord {
            timestamp: state.clock.now_ms(),
            action: "webhook".into(),
            status_code: status.as_u16(),
            namespace: tenant.as_ref().map(|(name, _)| name.as_str().to_owned()),
            request_id,
            reason: Some(error.to_owned()),
            target: Some(format!("webhook:{id}")),
            ..crate::audit::AuditRecord::default()
        };
        let trails: Vec<Tenant> = tenant
            .filter(|_| auditor.keeps_tenant_trails())
            .into_iter()
            .collect();
        auditor.record(&record, &trails);
    }
    refuse(status, error)
}

/// [`serve`] without the audit of refusals: the answer once pushed, or why the
/// delivery was refused before.
async fn deliver(
    state: AppState,
    id: &str,
    route: &webhooks::WebhookRoute,
    request: Request<Body>,
) -> Result<Response, (StatusCode, &'static str)> {
    if request.method() != Method::POST {
        return Err((StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
    }
    let ingress = state.webhooks.clone();
    let (parts, body) = request.into_parts();
    let declared = super::body::content_length(&parts.headers).ok().flatten();
    let Ok(raw) = super::body::read_limited(body, declared, webhooks::MAX_BODY_BYTES).await else {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    };
    let now_ms = state.clock.now_ms();
    let signature = match webhooks::verify(route, &parts.headers, &raw, now_ms / 1000) {
        Ok(signature) => signature,
        Err(error) => return Err((StatusCode::UNAUTHORIZED, error)),
    };
    // Transformed before it is claimed: a delivery refused here takes no room.
    let Some((data, target)) = webhooks::transformed(route, &raw) else {
        return Err((StatusCode::BAD_REQUEST, "rejected_by_transform"));
    };
    match ingress.claim(id, route, &signature, now_ms).await {
        Seen::First => {}
        Seen::Again => return Err((StatusCode::UNAUTHORIZED, "replayed")),
        Seen::Unknown => {
            return Err((StatusCode::SERVICE_UNAVAILABLE, "Replay cache unavailable"));
        }
    }
    let Some(push) = webhooks::forwarded(&ingress, route, &target, data, &parts, now_ms) else {
        ingress.release(id, &signature).await;
        return Err((StatusCode::INTERNAL_SERVER_ERROR, "ingest_failed"));
    };
    let answer = super::dispatch(State(state), push).await;
    // A push that may succeed when sent again: the sender's retry is taken.
    let status = answer.status();
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        ingress.release(id, &signature).await;
    }
    Ok(answer)
}
