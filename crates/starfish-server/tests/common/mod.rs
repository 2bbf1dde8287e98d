//! Helpers for router tests: a router over a store with a frozen clock, requests,
//! and response readers.
#![allow(dead_code, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use tower::ServiceExt;

/// 2026-01-01T00:00:00Z in ms.
pub const T0: u64 = 1_767_225_600_000;

pub const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "maxBodyBytes": 256, "cacheDurationMs": 60000},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "shared", "storagePath": "shared/counter", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "board", "storagePath": "board/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "ttlMs": 1000, "cacheDurationMs": 5000},
    {"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"], "pushOnly": true}
  ],
  "namespaces": {
    "acme": {"collections": [
      {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
    ]}
  }
}"#;

pub fn config() -> SyncConfig {
    SyncConfig::from_json_str(CONFIG).unwrap()
}

pub fn router_with(store: DocStore, clock: &ManualClock) -> Router {
    create_sync_router(SyncOptions::new(config(), store).with_clock(Arc::new(clock.clone())))
        .unwrap()
}

pub fn router(store: DocStore) -> Router {
    router_with(store, &ManualClock::new(T0))
}

pub async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn push_raw(uri: &str, body: impl Into<String>) -> Request<Body> {
    let body = body.into();
    Request::post(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap()
}

pub fn push(uri: &str, body: &Value) -> Request<Body> {
    push_raw(uri, body.to_string())
}

pub async fn body_bytes(res: Response<Body>) -> Vec<u8> {
    res.into_body().collect().await.unwrap().to_bytes().to_vec()
}

pub async fn json_body(res: Response<Body>) -> Value {
    let bytes = body_bytes(res).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Asserts the status and the exact `{"error": ...}` body with a JSON content type.
pub async fn assert_error(res: Response<Body>, status: StatusCode, message: &str) {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        json_body(res).await,
        serde_json::json!({ "error": message })
    );
}

/// Pushes `data` with `base` and returns (status, body).
pub async fn push_doc(
    app: &Router,
    uri: &str,
    data: Value,
    base: Option<&str>,
) -> (StatusCode, Value) {
    let res = send(
        app,
        push(uri, &serde_json::json!({ "data": data, "baseHash": base })),
    )
    .await;
    let status = res.status();
    (status, json_body(res).await)
}
