//! The read cache (`DocStore::with_read_cache`): a pull through it never returns a
//! document older than an acknowledged push, whatever runs concurrently; hot pulls do
//! not touch the store; blobs, logs and bundles stay current; the cache stays within
//! its bytes.

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use starfish_server::store::DocStore;
use starfish_server::{Metrics, SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [
            {"name": "docs", "storagePath": "docs/{id}",
             "readRoles": ["public"], "writeRoles": ["public"]},
            {"name": "feed", "storagePath": "feed/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "appendOnly": {"requireAuthorSignature": false, "chunkSize": 3}},
            {"name": "files", "storagePath": "files/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "allowedMimeTypes": ["image/*"], "maxBodyBytes": 4096}
        ]
    }))
    .unwrap()
}

fn router(store: &DocStore, metrics: &Metrics) -> Router {
    create_sync_router(SyncOptions::new(config(), store.clone()).with_metrics(metrics.clone()))
        .unwrap()
}

fn gets(metrics: &Metrics) -> f64 {
    metrics
        .render()
        .lines()
        .filter(|l| l.starts_with("starfish_store_request_seconds_count{op=\"get\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_never_returns_a_document_older_than_an_acknowledged_push() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local(dir.path())
        .unwrap()
        .with_read_cache(1 << 20);
    let app = router(&store, &Metrics::new());
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (status, first) = push_doc(&app, "/push/docs/counter", json!({"n": 0}), None).await;
    assert_eq!(status, StatusCode::OK);
    let writer = {
        let (app, acked, done) = (app.clone(), acked.clone(), done.clone());
        tokio::spawn(async move {
            let mut base = first["hash"].as_str().unwrap().to_owned();
            for n in 1..=300u64 {
                let (status, body) =
                    push_doc(&app, "/push/docs/counter", json!({"n": n}), Some(&base)).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                base = body["hash"].as_str().unwrap().to_owned();
                acked.store(n, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (app, acked, done) = (app.clone(), acked.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut pulls = 0u64;
            while !done.load(Ordering::SeqCst) {
                let before = acked.load(Ordering::SeqCst);
                let body = json_body(send(&app, get("/pull/docs/counter")).await).await;
                let n = body["data"]["n"].as_u64().unwrap();
                assert!(n >= before, "pulled {n} after {before} was acknowledged");
                pulls += 1;
            }
            pulls
        }));
    }
    writer.await.unwrap();
    let mut pulls = 0;
    for r in readers {
        pulls += r.await.unwrap();
    }
    assert!(pulls > 0);
    let last = json_body(send(&app, get("/pull/docs/counter")).await).await;
    assert_eq!(last["data"]["n"], 300);
}

#[tokio::test]
async fn hot_pulls_do_not_touch_the_store_and_everything_stays_current() {
    let metrics = Metrics::new();
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local(dir.path())
        .unwrap()
        .with_read_cache(1 << 20);
    let app = router(&store, &metrics);
    let (status, a) = push_doc(&app, "/push/docs/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        send(&app, get("/pull/docs/a")).await.status(),
        StatusCode::OK
    );
    let reads = gets(&metrics);
    for _ in 0..20 {
        let body = json_body(send(&app, get("/pull/docs/a")).await).await;
        assert_eq!(body["hash"], a["hash"]);
    }
    assert_eq!(gets(&metrics), reads, "served from memory");
    // A missing document is remembered too, until it is written.
    assert_eq!(
        send(&app, get("/pull/docs/none")).await.status(),
        StatusCode::OK
    );
    let reads = gets(&metrics);
    let empty = json_body(send(&app, get("/pull/docs/none")).await).await;
    assert_eq!(gets(&metrics), reads);
    let (status, _) = push_doc(&app, "/push/docs/none", json!({"now": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let now = json_body(send(&app, get("/pull/docs/none")).await).await;
    assert_ne!(now, empty);
    assert_eq!(now["data"], json!({"now": 1}));

    // Logs: every append is seen.
    for i in 0..7 {
        let res = send(&app, push("/push/feed/f", &json!({"data": {"i": i}}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let log = json_body(send(&app, get("/pull/feed/f?checkpoint=0")).await).await;
        assert_eq!(
            log["data"]["items"].as_array().unwrap().len(),
            i + 1,
            "{log}"
        );
    }
    // Blobs: a new upload's type and hash are seen at once.
    let upload = |ct: &str, bytes: &'static [u8]| {
        Request::post("/push/files/p")
            .header("content-type", ct)
            .header("content-length", bytes.len())
            .body(Body::from(bytes))
            .unwrap()
    };
    assert_eq!(
        send(&app, upload("image/png", b"one")).await.status(),
        StatusCode::OK
    );
    let res = send(&app, get("/pull/files/p")).await;
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(
        send(&app, upload("image/gif", b"two")).await.status(),
        StatusCode::OK
    );
    let res = send(&app, get("/pull/files/p")).await;
    assert_eq!(res.headers()["content-type"], "image/gif");
    assert_eq!(body_bytes(res).await, b"two");
}

#[tokio::test]
async fn the_cache_stays_within_its_bytes() {
    let bound = 64 * 1024;
    let store = DocStore::memory().with_read_cache(bound);
    let app = router(&store, &Metrics::new());
    let text: Value = json!("x".repeat(1000));
    for i in 0..300 {
        let (status, _) =
            push_doc(&app, &format!("/push/docs/d{i}"), json!({"t": text}), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            send(&app, get(&format!("/pull/docs/d{i}"))).await.status(),
            StatusCode::OK
        );
    }
    let (entries, bytes) = store.read_cache_usage().unwrap();
    assert!(bytes <= bound, "{bytes} > {bound}");
    assert!(entries > 10 && entries < 300, "{entries}");
    assert_eq!(DocStore::memory().read_cache_usage(), None);
}
