//! `GET /health`, `GET /health/live` and `GET /health/ready`.
//!
//! Ready means every dependency answers: the store (one `head` of a key that need not
//! exist; "not found" is an answer), and every [`crate::hooks::ReadinessCheck`] given to the
//! router (Redis, NATS). The answer is kept for a second, so a flood of readiness
//! probes costs the store at most one request a second.

use crate::app::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};
use std::time::Duration;

/// How long a dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness answer is reused.
const READY_CACHE_MS: u64 = 1_000;

pub(super) async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "ok": true, "ts": state.clock.now_ms() }))
}

/// Alive: the process serves requests.
pub(super) async fn live() -> Json<Value> {
    Json(json!({ "ok": true }))
}

/// Ready: every dependency answers (`503` and which did not, otherwise).
pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let now = state.clock.now_ms();
    let mut cached = state.readiness.lock().await;
    if let Some((at, answer)) = &*cached {
        if now.saturating_sub(*at) < READY_CACHE_MS {
            return answer.clone();
        }
    }
    let mut checks = Map::new();
    let store = tokio::time::timeout(PROBE_TIMEOUT, state.root.store.answers())
        .await
        .unwrap_or_else(|_| Err("timed out".into()));
    checks.insert("store".into(), verdict(&store));
    let mut ok = store.is_ok();
    for (name, check) in &state.readiness_checks {
        let answer = tokio::time::timeout(PROBE_TIMEOUT, check.check())
            .await
            .unwrap_or_else(|_| Err("timed out".into()));
        ok &= answer.is_ok();
        checks.insert(name.clone(), verdict(&answer));
    }
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let answer = (status, Json(json!({ "ready": ok, "checks": checks })));
    *cached = Some((now, answer.clone()));
    answer
}

fn verdict(answer: &Result<(), String>) -> Value {
    match answer {
        Ok(()) => json!("ok"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            json!("unavailable")
        }
    }
}
