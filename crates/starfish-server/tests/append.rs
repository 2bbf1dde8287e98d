//! Append-only logs: author proofs, timestamps, bounds, the segmented layout, and
//! concurrent appenders on one node and on two nodes sharing a store.

mod common;

use axum::http::StatusCode;
use common::*;
use ed25519_dalek::Signer;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::internals::{APPEND_AUTHOR_DOMAIN, author_signing_input};
use starfish_server::store::{Capabilities, DocStore};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "events", "storagePath": "logs/{identity}/events", "readRoles": ["self"], "writeRoles": ["self"],
     "appendOnly": {"type": "by_timestamp", "maxPullLimit": 50}},
    {"name": "open", "storagePath": "open/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false, "maxItems": 5, "field": "entries", "allowFull": false,
                    "maxCheckpointAgeMs": 3600000}},
    {"name": "seg", "storagePath": "seg/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false, "chunkSize": 4}},
    {"name": "fire", "storagePath": "fire/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false, "persist": false}}
  ]
}"#;

fn app_on(store: DocStore, clock: &ManualClock) -> axum::Router {
    let config = SyncConfig::from_json_str(CONFIG).unwrap();
    create_sync_router(SyncOptions::new(config, store).with_clock(Arc::new(clock.clone()))).unwrap()
}

fn app() -> axum::Router {
    app_on(DocStore::memory(), &ManualClock::new(T0))
}

async fn append(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    let res = send(app, push(uri, &body)).await;
    let status = res.status();
    (status, json_body(res).await)
}

fn signed_item(u: &User, key: &str, item: &Value) -> Value {
    let input = author_signing_input(APPEND_AUTHOR_DOMAIN, item, key);
    json!({"data": item, "authorPubkey": pub_hex(&u.device), "authorSignature": b64(&u.device.sign(input.as_bytes()).to_bytes())})
}

#[tokio::test]
async fn signed_appends_are_verified_and_bound_to_the_presenter() {
    let app = app();
    let (a, b) = (user(1), user(2));
    let key = format!("logs/{}/events", a.id);
    let uri = format!("/push/{key}");
    let item = json!({"msg": "first"});

    let res = send(&app, Signed::push(&uri, &a, &json!({"data": item})).build()).await;
    assert_error(
        res,
        StatusCode::BAD_REQUEST,
        "append requires authorPubkey and authorSignature",
    )
    .await;
    let mut forged = signed_item(&a, &key, &item);
    forged["data"] = json!({"msg": "changed"});
    let res = send(&app, Signed::push(&uri, &a, &forged).build()).await;
    assert_error(
        res,
        StatusCode::FORBIDDEN,
        "invalid append author signature",
    )
    .await;
    // B's key signing an element pushed with A's cap: not the presenter.
    let res = send(
        &app,
        Signed::push(&uri, &a, &signed_item(&b, &key, &item)).build(),
    )
    .await;
    assert_error(
        res,
        StatusCode::FORBIDDEN,
        "append author must be the request presenter",
    )
    .await;

    let res = send(
        &app,
        Signed::push(&uri, &a, &signed_item(&a, &key, &item)).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_body(res).await,
        json!({"hash": "0f66dae7d0cca59dfe1f1da892fa67434b7b3ea1c83ecc605669c302b6dc54e8", "timestamp": T0})
    );
    let res = send(
        &app,
        Signed::get(&format!("/pull/{key}?last=10"), &a).build(),
    )
    .await;
    let body = json_body(res).await;
    assert_eq!(body["data"]["items"][0]["data"], item);
    assert_eq!(body["data"]["items"][0]["authorPubkey"], pub_hex(&a.device));
}

#[tokio::test]
async fn timestamps_bounds_and_limits() {
    let clock = ManualClock::new(T0);
    let app = app_on(DocStore::memory(), &clock);
    let (s, b) = append(
        &app,
        "/push/open/x",
        json!({"data": {"i": 1}, "ts": T0 - 10}),
    )
    .await;
    assert_eq!(
        (s, b["timestamp"].as_u64()),
        (StatusCode::OK, Some(T0 - 10))
    );
    let (s, b) = append(
        &app,
        "/push/open/x",
        json!({"data": {"i": 2}, "ts": T0 - 10}),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            StatusCode::CONFLICT,
            json!({"error": "non_monotonic_timestamp"})
        )
    );
    let (s, b) = append(
        &app,
        "/push/open/x",
        json!({"data": {"i": 2}, "ts": T0 + 300_001}),
    )
    .await;
    assert_eq!(
        (s, b),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "ts is too far in the future"})
        )
    );
    let (s, b) = append(&app, "/push/open/x", json!({"data": {"i": 2}, "ts": -1})).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "ts must be a non-negative integer"})
        )
    );
    // Omitted ts: max(now, last + 1).
    let (_, b) = append(&app, "/push/open/x", json!({"data": {"i": 2}})).await;
    assert_eq!(b["timestamp"], T0);
    let (_, b) = append(&app, "/push/open/x", json!({"data": {"i": 3}})).await;
    assert_eq!(b["timestamp"], T0 + 1);
    for i in 4..=5 {
        assert_eq!(
            append(&app, "/push/open/x", json!({"data": {"i": i}}))
                .await
                .0,
            StatusCode::OK
        );
    }
    let (s, b) = append(&app, "/push/open/x", json!({"data": {"i": 6}})).await;
    assert_eq!(
        (s, b),
        (
            StatusCode::CONFLICT,
            json!({"error": "append_limit_exceeded", "limit": 5})
        )
    );

    let pull = |q: &str| get(&format!("/pull/open/x{q}"));
    for (q, err) in [
        ("", "pull_bound_required"),
        ("?full=true", "full_not_allowed"),
        ("?full=1&last=1", "full_with_bounds"),
        ("?last=01", "Invalid last"),
        ("?checkpoint=-1", "Invalid checkpoint"),
        (
            &format!("?checkpoint={}", T0 - 3_600_001),
            "checkpoint_too_old",
        ),
    ] {
        assert_error(send(&app, pull(q)).await, StatusCode::BAD_REQUEST, err).await;
    }
    let body = json_body(send(&app, pull(&format!("?checkpoint={T0}&limit=1"))).await).await;
    let ts: Vec<u64> = body["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ts"].as_u64().unwrap())
        .collect();
    assert_eq!(ts, [T0 + 3]);
    let body = json_body(send(&app, pull(&format!("?checkpoint={T0}"))).await).await;
    assert_eq!(body["data"]["entries"].as_array().unwrap().len(), 3);
    // A missing log pulls as empty.
    let body = json_body(send(&app, get("/pull/open/none?last=5")).await).await;
    assert_eq!(
        body,
        json!({"data": {"entries": []}, "hash": "", "timestamp": T0})
    );
}

#[tokio::test]
async fn persist_false_acknowledges_and_stores_nothing() {
    let store = DocStore::memory();
    let app = app_on(store.clone(), &ManualClock::new(T0));
    let (s, b) = append(&app, "/push/fire/x", json!({"data": {"a": 1}})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b["hash"],
        starfish_server::internals::sha256_hex(b"{\"a\":1}")
    );
    use futures::StreamExt;
    assert_eq!(store.inner().list(None).count().await, 0);
}

async fn concurrent_appends(
    apps: Vec<axum::Router>,
    uri: &'static str,
    per_app: usize,
) -> Vec<u64> {
    let mut tasks = Vec::new();
    for (n, app) in apps.into_iter().enumerate() {
        for i in 0..per_app {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                append(&app, uri, json!({"data": {"node": n, "i": i}})).await
            }));
        }
    }
    let mut stamps = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
        stamps.push(body["timestamp"].as_u64().unwrap());
    }
    stamps
}

async fn check_log(app: &axum::Router, uri: &str, expected: usize) {
    let body = json_body(send(app, get(uri)).await).await;
    let items = body["data"]["items"].as_array().unwrap();
    assert_eq!(items.len(), expected, "no element lost");
    let ts: Vec<u64> = items.iter().map(|e| e["ts"].as_u64().unwrap()).collect();
    assert!(
        ts.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing: {ts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn six_concurrent_appends_are_all_kept_in_strictly_increasing_order() {
    for store in [
        DocStore::memory(),
        DocStore::local(tempfile::tempdir().unwrap().keep()).unwrap(),
    ] {
        let app = app_on(store, &ManualClock::new(T0));
        let mut stamps = concurrent_appends(vec![app.clone()], "/push/seg/six", 6).await;
        stamps.sort_unstable();
        stamps.dedup();
        assert_eq!(stamps.len(), 6, "distinct timestamps");
        check_log(&app, "/pull/seg/six?checkpoint=0", 6).await;
        // And in the single-document layout.
        concurrent_appends(vec![app.clone()], "/push/open/six", 5).await;
        let body = json_body(send(&app, get("/pull/open/six?limit=50")).await).await;
        assert_eq!(body["data"]["entries"].as_array().unwrap().len(), 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_appending_to_one_segmented_log_lose_nothing() {
    // Store latency makes the writers' reads and writes interleave.
    let shared = Arc::new(ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_get_per_call: Duration::from_millis(2),
            wait_put_per_call: Duration::from_millis(1),
            ..ThrottleConfig::default()
        },
    ));
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    let clock = ManualClock::new(T0);
    let a = app_on(DocStore::new(shared.clone(), caps), &clock);
    let b = app_on(DocStore::new(shared, caps), &clock);
    // Three writers per node, five appends each.
    let mut tasks = Vec::new();
    for (n, app) in [a.clone(), b.clone()].into_iter().enumerate() {
        for w in 0..3 {
            let app = app.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..5 {
                    let (status, body) = append(
                        &app,
                        "/push/seg/shared",
                        json!({"data": {"n": n, "w": w, "i": i}}),
                    )
                    .await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 30 elements in chunks of 4: several chunks opened under contention.
    check_log(&a, "/pull/seg/shared?checkpoint=0", 30).await;
    check_log(&b, "/pull/seg/shared?last=30", 30).await;
    let body = json_body(send(&a, get("/pull/seg/shared?last=3")).await).await;
    assert_eq!(body["data"]["items"].as_array().unwrap().len(), 3);
    let head = json_body(send(&a, get("/pull/seg/shared?last=1")).await).await;
    let last = &head["data"]["items"][0]["data"];
    let expected = starfish_server::internals::append_hash(30, last.as_object().unwrap());
    assert_eq!(
        head["hash"], expected,
        "the head's hash caught up with the last append"
    );
}

#[tokio::test]
async fn the_segmented_layout_is_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_on(DocStore::local(dir.path()).unwrap(), &ManualClock::new(T0));
    for i in 0..6 {
        append(
            &app,
            "/push/seg/log",
            json!({"data": {"i": i}, "ts": 100 + i}),
        )
        .await;
    }
    let head: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("seg/log")).unwrap()).unwrap();
    assert_eq!(head["seg"], true);
    assert_eq!(head["n"], 6);
    assert_eq!(head["sealedN"], 4);
    assert_eq!(head["tailKey"], "seg/log__seg/0000000000000104");
    let sealed: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("seg/log__seg/0000000000000100")).unwrap(),
    )
    .unwrap();
    assert_eq!(sealed.as_array().unwrap().len(), 4);
    let body = json_body(send(&app, get("/pull/seg/log?checkpoint=102")).await).await;
    let ts: Vec<u64> = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ts"].as_u64().unwrap())
        .collect();
    assert_eq!(ts, [103, 104, 105]);
}
