//! Metrics (`Metrics::render`: requests by namespace, collection, action and status;
//! refused credentials by reason class; store latency; gauges) and the health
//! routes (`/health/live`, `/health/ready` with a dependency that fails).

use crate::common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{Metrics, ReadinessCheck, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn router(metrics: &Metrics, clock: &ManualClock) -> axum::Router {
    create_sync_router(
        SyncOptions::new(config(), DocStore::memory())
            .with_clock(Arc::new(clock.clone()))
            .with_metrics(metrics.clone()),
    )
    .unwrap()
}

/// The value of the series `line` starts with (name and labels, exactly).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn requests_refusals_and_store_calls_are_counted() {
    let metrics = Metrics::new();
    let clock = ManualClock::new(T0);
    let app = router(&metrics, &clock);
    let (status, first) = push_doc(&app, "/push/docs/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"v": 2}), None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        send(&app, get("/pull/docs/a")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/acme/pull/docs/a")).await.status(),
        StatusCode::OK
    );
    assert!(first["hash"].is_string());
    // Refused credentials: a certificate without a signature, then a forged one.
    let u = user(7);
    let uri = format!("/pull/users/{}/notes", u.id);
    let unsigned = axum::http::Request::get(&uri)
        .header("authorization", cap_header(&device_cap(&u)))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, unsigned).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let mut forged = Signed::get(&uri, &u);
    forged.signed_path = "/pull/elsewhere".into();
    assert_eq!(
        send(&app, forged.build()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let signed = Signed::get(&uri, &u);
    assert_eq!(send(&app, signed.build()).await.status(), StatusCode::OK);
    // The same request again is a replay.
    assert_eq!(
        send(&app, signed.build()).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let text = metrics.render();
    let requests = |ns: &str, collection: &str, action: &str, status: u16| {
        value(
            &text,
            &format!(
                "starfish_requests_total{{namespace=\"{ns}\",collection=\"{collection}\",action=\"{action}\",status=\"{status}\"}}"
            ),
        )
    };
    assert_eq!(requests("", "docs", "push", 200), Some(1.0), "{text}");
    assert_eq!(requests("", "docs", "push", 409), Some(1.0));
    assert_eq!(requests("", "docs", "pull", 200), Some(1.0));
    assert_eq!(requests("acme", "docs", "pull", 200), Some(1.0));
    assert_eq!(requests("", "notes", "pull", 401), Some(3.0));
    assert_eq!(requests("", "notes", "pull", 200), Some(1.0));
    let refused = |reason: &str| {
        value(
            &text,
            &format!("starfish_auth_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("missing"), Some(1.0), "{text}");
    assert_eq!(refused("bad_signature"), Some(1.0));
    assert_eq!(refused("replay"), Some(1.0));
    // Store calls are timed (reads and conditional writes).
    let gets = value(
        &text,
        "starfish_store_request_seconds_count{op=\"get\",outcome=\"ok\"}",
    );
    assert!(gets.is_some_and(|n| n >= 3.0), "{text}");
    let puts = value(
        &text,
        "starfish_store_request_seconds_count{op=\"put\",outcome=\"ok\"}",
    );
    assert!(puts.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(value(&text, "starfish_replay_cache_entries"), Some(1.0));
    assert_eq!(value(&text, "starfish_requests_in_flight"), Some(0.0));
}

#[derive(Default)]
struct Switch(AtomicBool);

#[async_trait::async_trait]
impl ReadinessCheck for Switch {
    async fn check(&self) -> Result<(), String> {
        if self.0.load(Ordering::SeqCst) {
            Err("down".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn ready_waits_for_every_dependency() {
    let clock = ManualClock::new(T0);
    let redis = Arc::new(Switch::default());
    let app = create_sync_router(
        SyncOptions::new(config(), DocStore::memory())
            .with_clock(Arc::new(clock.clone()))
            .with_readiness_check("redis", redis.clone()),
    )
    .unwrap();
    assert_eq!(
        send(&app, get("/health/live")).await.status(),
        StatusCode::OK
    );
    let (status, body) = call(&app, get("/health/ready")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"ready": true, "checks": {"store": "ok", "redis": "ok"}})
    );
    redis.0.store(true, Ordering::SeqCst);
    // The answer is kept for a second (probes cost the store at most one call a second).
    assert_eq!(call(&app, get("/health/ready")).await.0, StatusCode::OK);
    clock.advance(1_000);
    let (status, body) = call(&app, get("/health/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"ready": false, "checks": {"store": "ok", "redis": "unavailable"}})
    );
    assert_eq!(
        send(&app, get("/health/live")).await.status(),
        StatusCode::OK
    );
}
