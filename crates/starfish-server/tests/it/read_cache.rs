//! The read cache (`DocStore::with_read_cache`): a pull through it never returns a
//! document older than an acknowledged push, whatever runs concurrently; hot pulls do
//! not touch the store; blobs, logs and bundles stay current; the cache stays within
//! its bytes.

use crate::common;

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
    // What the cached entry worked out for those pulls goes with it on the next write.
    let base = a["hash"].as_str().unwrap();
    let (status, a2) = push_doc(&app, "/push/docs/a", json!({"v": 2}), Some(base)).await;
    assert_eq!(status, StatusCode::OK);
    let body = json_body(send(&app, get("/pull/docs/a")).await).await;
    assert_eq!(
        (&body["data"], &body["hash"]),
        (&json!({"v": 2}), &a2["hash"])
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_two_nodes_over_one_store_a_revalidated_cache_is_never_stale() {
    use object_store::ObjectStore;
    let bucket: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let caps = DocStore::memory().capabilities();
    let over_bucket = || DocStore::new(bucket.clone(), caps);
    let a = router(&over_bucket(), &Metrics::new());
    let b_metrics = Metrics::new();
    let b = router(
        &over_bucket().with_revalidated_read_cache(1 << 20),
        &b_metrics,
    );
    // What a cache that trusts itself would do on B: serve what it saw first.
    let blind = router(&over_bucket().with_read_cache(1 << 20), &Metrics::new());
    let (status, first) = push_doc(&a, "/push/docs/shared", json!({"n": 0}), None).await;
    assert_eq!(status, StatusCode::OK);
    let pull = |app: &Router| {
        let app = app.clone();
        async move {
            json_body(send(&app, get("/pull/docs/shared")).await).await["data"]["n"]
                .as_u64()
                .unwrap()
        }
    };
    assert_eq!(pull(&blind).await, 0);
    let acked = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (a, acked, done) = (a.clone(), acked.clone(), done.clone());
        tokio::spawn(async move {
            let mut base = first["hash"].as_str().unwrap().to_owned();
            for n in 1..=200u64 {
                let (status, body) =
                    push_doc(&a, "/push/docs/shared", json!({"n": n}), Some(&base)).await;
                assert_eq!(status, StatusCode::OK, "{body}");
                base = body["hash"].as_str().unwrap().to_owned();
                acked.store(n, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (b, acked, done) = (b.clone(), acked.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let mut pulls = 0u64;
            while !done.load(Ordering::SeqCst) {
                let before = acked.load(Ordering::SeqCst);
                let n = pull(&b).await;
                assert!(n >= before, "B pulled {n} after A acknowledged {before}");
                pulls += 1;
            }
            pulls
        }));
    }
    writer.await.unwrap();
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_eq!(pull(&b).await, 200);
    assert_eq!(
        pull(&blind).await,
        0,
        "a cache that is not revalidated is stale"
    );
    // Unchanged, B's pulls are hits confirmed by "not modified": no whole reads.
    let count = |op: &str, outcome: &str| {
        let series =
            format!("starfish_store_request_seconds_count{{op=\"{op}\",outcome=\"{outcome}\"}} ");
        b_metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()).map(str::to_owned))
            .map_or(0.0, |v| v.parse::<f64>().unwrap())
    };
    let (gets, confirmed) = (count("get", "ok"), count("revalidate", "not_modified"));
    for _ in 0..10 {
        assert_eq!(pull(&b).await, 200);
    }
    assert_eq!(count("get", "ok"), gets);
    assert_eq!(count("revalidate", "not_modified"), confirmed + 10.0);
    // What the revalidation rests on: the store answers "not modified", without the
    // bytes, to a read naming the current ETag.
    use futures::StreamExt;
    let stored: Vec<_> = bucket.list(None).collect().await;
    assert_eq!(stored.len(), 1);
    let path = stored[0].as_ref().unwrap().location.clone();
    let current = bucket.get_opts(&path, Default::default()).await.unwrap();
    let etag = current.meta.e_tag.unwrap();
    let options = object_store::GetOptions {
        if_none_match: Some(etag),
        ..Default::default()
    };
    assert!(matches!(
        bucket.get_opts(&path, options).await,
        Err(object_store::Error::NotModified { .. })
    ));
}
