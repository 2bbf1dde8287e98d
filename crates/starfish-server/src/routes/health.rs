//! `GET /health`.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

pub(super) async fn health(State(state): State<AppState>) -> Json<Value> {
    Json(json!({ "ok": true, "ts": state.clock.now_ms() }))
}
