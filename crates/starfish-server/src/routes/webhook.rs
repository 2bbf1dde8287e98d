//! `POST /webhook/<id>`: webhook ingress ([`crate::webhooks`]): verified, replay
//! checked, transformed, and pushed through the whole pipeline.

use crate::app::state::AppState;
use crate::webhooks;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

fn refuse(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(json!({ "error": error }))).into_response()
}

/// `POST /webhook/<id>`.
pub(crate) async fn ingest(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request<Body>,
) -> Response {
    let Some(ingress) = state.webhooks.clone() else {
        return refuse(StatusCode::NOT_FOUND, "unknown_webhook");
    };
    let Some(route) = ingress.route(&id) else {
        return refuse(StatusCode::NOT_FOUND, "unknown_webhook");
    };
    if request.method() != Method::POST {
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
    let (parts, body) = request.into_parts();
    let declared = super::body::content_length(&parts.headers).ok().flatten();
    let Ok(raw) = super::body::read_limited(body, declared, webhooks::MAX_BODY_BYTES).await else {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    };
    let now_ms = state.clock.now_ms();
    let signature = match webhooks::verify(&route, &parts.headers, &raw, now_ms / 1000) {
        Ok(signature) => signature,
        Err(error) => return refuse(StatusCode::UNAUTHORIZED, error),
    };
    match ingress.first(&id, &route, &signature, now_ms).await {
        Ok(true) => {}
        Ok(false) => return refuse(StatusCode::UNAUTHORIZED, "replayed"),
        Err(()) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "Replay cache unavailable"),
    }
    let Some((data, target)) = webhooks::transformed(&route, &raw) else {
        return refuse(StatusCode::BAD_REQUEST, "rejected_by_transform");
    };
    let push = webhooks::forwarded(&ingress, &route, &target, data, &parts, now_ms);
    super::dispatch(State(state), push).await
}
