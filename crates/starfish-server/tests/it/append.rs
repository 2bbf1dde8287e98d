//! Append-only logs: author proofs, timestamps, bounds, the segmented layout, and
//! concurrent appenders on one node and on two nodes sharing a store.

use crate::common;

use axum::http::StatusCode;
use common::*;
use ed25519_dalek::Signer;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use serde_json::{Value, json};
use starfish_protocol::author::{APPEND_AUTHOR_DOMAIN, author_signing_input};
use starfish_server::auth::ManualClock;
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
    // A null ts is an omitted one (the reference's `ts ?? …`; the OpenAPI says so).
    let (_, b) = append(&app, "/push/open/x", json!({"data": {"i": 3}, "ts": null})).await;
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
    assert_eq!(b["hash"], starfish_protocol::sha256_hex(b"{\"a\":1}"));
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
    let expected = starfish_protocol::append::append_hash(30, last.as_object().unwrap());
    assert_eq!(
        head["hash"], expected,
        "the head's hash caught up with the last append"
    );
}

#[tokio::test]
async fn the_segmented_layout_is_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local(dir.path()).unwrap();
    let app = app_on(store.clone(), &ManualClock::new(T0));
    for i in 0..6 {
        append(
            &app,
            "/push/seg/log",
            json!({"data": {"i": i}, "ts": 100 + i}),
        )
        .await;
    }
    store.flush().await.unwrap();
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

// ---- bounded logs ---------------------------------------------------------------

/// A log config without `maxPullLimit`: only the server's default bound applies.
const BOUNDS_CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "flat", "storagePath": "flat/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false}},
    {"name": "seg", "storagePath": "seg/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false, "chunkSize": 64}},
    {"name": "capped", "storagePath": "capped/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false, "maxPullLimit": 30}}
  ]
}"#;

fn bounds_app(store: DocStore) -> axum::Router {
    let config = SyncConfig::from_json_str(BOUNDS_CONFIG).unwrap();
    create_sync_router(SyncOptions::new(config, store).with_clock(Arc::new(ManualClock::new(T0))))
        .unwrap()
}

/// `n` elements `{ts: 1000 + i, data: {i}}`, as the reference stores them.
fn elements(n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"ts": 1000 + i, "data": {"i": i}}))
        .collect()
}

async fn put(store: &DocStore, key: &str, value: &Value) {
    object_store::ObjectStoreExt::put(
        store.inner(),
        &object_store::path::Path::from(key),
        value.to_string().into_bytes().into(),
    )
    .await
    .unwrap();
}

/// A single-document log of `n` elements, written as the reference writes it.
async fn seed_single(store: &DocStore, key: &str, n: u64) {
    let doc = json!({"v": 1, "data": {"items": elements(n)}, "ts": 1000 + n - 1, "hash": "h"});
    put(store, key, &doc).await;
}

/// A segmented log of `n` elements in chunks of `chunk`, in the reference's layout.
async fn seed_segmented(store: &DocStore, key: &str, n: u64, chunk: u64) {
    let all = elements(n);
    let mut tail = String::new();
    for part in all.chunks(chunk as usize) {
        tail = format!("{key}__seg/{:016}", part[0]["ts"].as_u64().unwrap());
        put(store, &tail, &Value::Array(part.to_vec())).await;
    }
    let sealed = n - (n % chunk);
    let head = json!({"v": 1, "seg": true, "data": {}, "n": n, "sealedN": sealed,
                      "ts": 1000 + n - 1, "hash": "h", "chunkSize": chunk, "tailKey": tail});
    put(store, key, &head).await;
}

fn stamps(body: &Value, field: &str) -> Vec<u64> {
    body["data"][field]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ts"].as_u64().unwrap())
        .collect()
}

/// Pulls `uri`, then keeps pulling from the last element seen while the server says
/// there is more, as the official `AppendLogCursor` does (`?checkpoint=<last ts>`).
async fn pull_all(app: &axum::Router, path: &str, first: &str) -> (Vec<u64>, usize) {
    let mut uri = format!("{path}?{first}");
    let mut all = Vec::new();
    for pulls in 1.. {
        let body = json_body(send(app, get(&uri)).await).await;
        let page = stamps(&body, "items");
        assert!(page.len() <= 1000, "{uri}: {} elements", page.len());
        all.extend(&page);
        if body.get("hasMore") != Some(&json!(true)) {
            return (all, pulls);
        }
        uri = format!("{path}?checkpoint={}", page.last().unwrap());
    }
    unreachable!()
}

#[tokio::test]
async fn an_unbounded_log_pull_gets_the_oldest_1000_and_says_there_is_more() {
    let store = DocStore::memory();
    seed_single(&store, "flat/big", 2500).await;
    seed_segmented(&store, "seg/big", 2500, 64).await;
    let app = bounds_app(store);
    for path in ["/pull/flat/big", "/pull/seg/big"] {
        for first in ["full=true", "checkpoint=0", "checkpoint=1"] {
            let body = json_body(send(&app, get(&format!("{path}?{first}"))).await).await;
            let page = stamps(&body, "items");
            assert_eq!(page.len(), 1000, "{path}?{first}");
            assert_eq!(page[0], 1000, "{path}?{first}: the oldest first");
            assert!(page.windows(2).all(|w| w[1] == w[0] + 1), "no gap");
            assert_eq!(body["hasMore"], true, "{path}?{first}");
            assert_eq!(body["hash"], "h");
            // A client that pulls again from the last element it holds gets the rest,
            // each element once.
            let (all, pulls) = pull_all(&app, path, first).await;
            assert_eq!(all, (1000..3500).collect::<Vec<u64>>(), "{path}?{first}");
            assert_eq!(pulls, 3);
        }
        // From the middle: the next 1000 after the checkpoint.
        let body = json_body(send(&app, get(&format!("{path}?checkpoint=1499"))).await).await;
        let page = stamps(&body, "items");
        assert_eq!((page[0], page.len()), (1500, 1000), "{path}");
        assert_eq!(body["hasMore"], true);
        // Exactly the bound left: no `hasMore`, the body is the reference's.
        let body = json_body(send(&app, get(&format!("{path}?checkpoint=2499"))).await).await;
        assert_eq!(stamps(&body, "items").len(), 1000, "{path}");
        assert_eq!(body.get("hasMore"), None, "{path}");
        assert_eq!(
            body.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["data", "hash", "timestamp"]
        );
    }
}

#[tokio::test]
async fn a_tail_pull_is_clamped_to_the_default_bound() {
    let store = DocStore::memory();
    seed_single(&store, "flat/big", 2500).await;
    seed_segmented(&store, "seg/big", 2500, 64).await;
    let app = bounds_app(store);
    for path in ["/pull/flat/big", "/pull/seg/big"] {
        for q in ["last=5000", "limit=1001", "checkpoint=0&last=2000"] {
            let body = json_body(send(&app, get(&format!("{path}?{q}"))).await).await;
            let page = stamps(&body, "items");
            // The newest 1000, as `maxPullLimit` clamps a tail.
            assert_eq!(page, (2500..3500).collect::<Vec<u64>>(), "{path}?{q}");
            assert_eq!(body.get("hasMore"), None, "{path}?{q}");
        }
        let body = json_body(send(&app, get(&format!("{path}?last=3"))).await).await;
        assert_eq!(stamps(&body, "items"), [3497, 3498, 3499]);
    }
}

#[tokio::test]
async fn a_collection_max_pull_limit_is_the_bound_of_its_unbounded_pulls() {
    let store = DocStore::memory();
    seed_single(&store, "capped/x", 100).await;
    let app = bounds_app(store);
    let (all, pulls) = pull_all(&app, "/pull/capped/x", "full=1").await;
    assert_eq!(all, (1000..1100).collect::<Vec<u64>>());
    assert_eq!(pulls, 4, "30 + 30 + 30 + 10");
}

#[tokio::test]
async fn a_batch_since_pull_gets_the_oldest_elements_after_it_and_says_there_is_more() {
    let store = DocStore::memory();
    seed_segmented(&store, "seg/big", 2500, 64).await;
    let app = bounds_app(store);
    let batch = |ap: &str| {
        let q = format!(
            "collections=seg&params={}&appendParams={}",
            percent_encoding::utf8_percent_encode(
                r#"{"seg":[{"id":"big"}]}"#,
                percent_encoding::NON_ALPHANUMERIC
            ),
            percent_encoding::utf8_percent_encode(ap, percent_encoding::NON_ALPHANUMERIC),
        );
        get(&format!("/batch/pull?{q}"))
    };
    let body = json_body(send(&app, batch(r#"{"seg":[{"since":1009}]}"#)).await).await;
    let entry = &body["collections"]["seg"][0];
    let page = stamps(entry, "items");
    assert_eq!((page[0], page.len()), (1010, 1000), "{entry}");
    assert_eq!(entry["hasMore"], true);
    // With a tail bound, the tail, as before.
    let body = json_body(send(&app, batch(r#"{"seg":[{"since":1009,"last":3}]}"#)).await).await;
    assert_eq!(
        stamps(&body["collections"]["seg"][0], "items"),
        [3497, 3498, 3499]
    );
}

/// Bytes of the single-document log at `key` as stored, `None` when absent.
async fn raw(store: &DocStore, key: &str) -> Option<Vec<u8>> {
    let got =
        object_store::ObjectStoreExt::get(store.inner(), &object_store::path::Path::from(key))
            .await;
    match got {
        Ok(r) => Some(r.bytes().await.unwrap().to_vec()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn an_append_that_would_grow_a_single_document_log_past_4_mib_is_refused() {
    let store = DocStore::memory();
    // About 30 KB under 4 MiB, in elements of about 4 KB: room for a small element,
    // not for a 60 KB one.
    const CAP: usize = 4 * 1024 * 1024;
    let big = "x".repeat(4000);
    let element = |i: usize| json!({"ts": 1000 + i, "data": {"i": i, "pad": big}});
    let per_element = element(1000).to_string().len() + 1;
    let n = (CAP - 30_000) / per_element;
    let items: Vec<Value> = (0..n).map(element).collect();
    let doc = json!({"v": 1, "data": {"items": items}, "ts": 1000 + n - 1, "hash": "h"});
    let len = doc.to_string().len();
    assert!((CAP - 40_000..CAP - 20_000).contains(&len), "{len}");
    put(&store, "flat/full", &doc).await;
    let app = bounds_app(store.clone());
    let before = raw(&store, "flat/full").await;
    let (status, body) = append(
        &app,
        "/push/flat/full",
        json!({"data": {"pad": "y".repeat(60_000)}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        body,
        json!({"error": "append_limit_exceeded", "limit": n, "maxBytes": CAP})
    );
    assert_eq!(raw(&store, "flat/full").await, before, "nothing is written");
    // A smaller element still fits.
    let (status, _) = append(&app, "/push/flat/full", json!({"data": {"i": n}})).await;
    assert_eq!(status, StatusCode::OK);
    // A log in the segmented layout has no such cap: its appends touch one chunk.
    seed_segmented(&store, "seg/full", 10, 64).await;
    let (status, _) = append(
        &app,
        "/push/seg/full",
        json!({"data": {"pad": "y".repeat(60_000)}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

fn bounds_app_with(store: DocStore, tune: impl FnOnce(&mut SyncOptions)) -> axum::Router {
    let config = SyncConfig::from_json_str(BOUNDS_CONFIG).unwrap();
    let mut options = SyncOptions::new(config, store).with_clock(Arc::new(ManualClock::new(T0)));
    tune(&mut options);
    create_sync_router(options).unwrap()
}

#[tokio::test]
async fn the_pull_bound_is_a_server_option() {
    assert_eq!(starfish_server::DEFAULT_MAX_APPEND_PULL_ELEMENTS, 1000);
    let store = DocStore::memory();
    seed_single(&store, "flat/x", 20).await;
    seed_segmented(&store, "seg/x", 20, 3).await;
    seed_single(&store, "capped/x", 40).await;
    let app = bounds_app_with(store, |o| o.max_append_pull_elements = 7);
    for path in ["/pull/flat/x", "/pull/seg/x"] {
        let body = json_body(send(&app, get(&format!("{path}?full=true"))).await).await;
        assert_eq!(stamps(&body, "items"), (1000..1007).collect::<Vec<u64>>());
        assert_eq!(body["hasMore"], true);
        let (all, pulls) = pull_all(&app, path, "checkpoint=0").await;
        assert_eq!(all, (1000..1020).collect::<Vec<u64>>(), "{path}");
        assert_eq!(pulls, 3, "{path}: 7 + 7 + 6");
        let body = json_body(send(&app, get(&format!("{path}?last=100"))).await).await;
        assert_eq!(stamps(&body, "items"), (1013..1020).collect::<Vec<u64>>());
    }
    // A collection's own maxPullLimit wins, larger or smaller.
    let body = json_body(send(&app, get("/pull/capped/x?checkpoint=0")).await).await;
    assert_eq!(stamps(&body, "items").len(), 30);
    assert_eq!(body["hasMore"], true);
}

#[tokio::test]
async fn the_single_document_cap_is_a_server_option_and_a_refusal_writes_nothing() {
    assert_eq!(
        starfish_server::DEFAULT_MAX_SINGLE_LOG_BYTES,
        4 * 1024 * 1024
    );
    let store = DocStore::memory();
    let app = bounds_app_with(store.clone(), |o| o.max_single_log_bytes = 600);
    let mut accepted = 0u64;
    let refusal = loop {
        let (status, body) =
            append(&app, "/push/flat/small", json!({"data": {"msg": "hello"}})).await;
        if status != StatusCode::OK {
            break (status, body);
        }
        accepted += 1;
        assert!(raw(&store, "flat/small").await.unwrap().len() <= 600);
    };
    assert!(accepted > 3, "{accepted}");
    assert_eq!(
        refusal,
        (
            StatusCode::CONFLICT,
            json!({"error": "append_limit_exceeded", "limit": accepted, "maxBytes": 600})
        )
    );
    let before = raw(&store, "flat/small").await;
    let again = append(&app, "/push/flat/small", json!({"data": {"msg": "hello"}})).await;
    assert_eq!(again.0, StatusCode::CONFLICT);
    assert_eq!(
        raw(&store, "flat/small").await,
        before,
        "nothing is written"
    );
    let body = json_body(send(&app, get("/pull/flat/small?checkpoint=0")).await).await;
    assert_eq!(stamps(&body, "items").len() as u64, accepted);
    // A segmented log is not capped: its appends rewrite one chunk.
    for _ in 0..=accepted {
        let (status, _) = append(&app, "/push/seg/small", json!({"data": {"msg": "hello"}})).await;
        assert_eq!(status, StatusCode::OK);
    }
}
