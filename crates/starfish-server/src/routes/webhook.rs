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
        return refuse(StatusCode::NOT_FOUND, "unknown_webhook");
    };
    serve(state, &id, &route, request).await
}

/// Verifies, transforms, claims and pushes one delivery to `route` (`id` keys its
/// claims).
pub(crate) async fn serve(
    state: AppState,
    id: &str,
    route: &webhooks::WebhookRoute,
    request: Request<Body>,
) -> Response {
    if request.method() != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let ingress = state.webhooks.clone();
    let (parts, body) = request.into_parts();
    let declared = super::body::content_length(&parts.headers).ok().flatten();
    let Ok(raw) = super::body::read_limited(body, declared, webhooks::MAX_BODY_BYTES).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    };
    let now_ms = state.clock.now_ms();
    let signature = match webhooks::verify(route, &parts.headers, &raw, now_ms / 1000) {
        Ok(signature) => signature,
        Err(error) => return refuse(StatusCode::UNAUTHORIZED, error),
    };
    // Transformed before it is claimed: a delivery refused here takes no room.
    let Some((data, target)) = webhooks::transformed(route, &raw) else {
        return refuse(StatusCode::BAD_REQUEST, "rejected_by_transform");
    };
    match ingress.claim(id, route, &signature, now_ms).await {
        Seen::First => {}
        Seen::Again => return refuse(StatusCode::UNAUTHORIZED, "replayed"),
        Seen::Unknown => {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "Replay cache unavailable");
        }
    }
    let Some(push) = webhooks::forwarded(&ingress, route, &target, data, &parts, now_ms) else {
        ingress.release(id, &signature).await;
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "ingest_failed");
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
    answer
}
