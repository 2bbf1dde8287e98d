//! The store suite on an S3-compatible bucket: conditional writes must make every
//! guarantee hold across nodes. Run by `tests/s3/run.sh`, which starts a local
//! S3-compatible server and sets `STARFISH_TEST_S3=1` and the `AWS_*` variables.
#![cfg(feature = "aws")]

mod common;

use axum::http::StatusCode;
use common::*;
use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use serde_json::json;
use starfish_server::auth::ManualClock;
use starfish_server::store::{Capabilities, DocStore};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const CONFIG: &str = r#"{"version":1,"collections":[
  {"name":"counter","storagePath":"c/{id}","readRoles":["public"],"writeRoles":["public"]},
  {"name":"log","storagePath":"l/{id}","readRoles":["public"],"writeRoles":["public"],
   "appendOnly":{"requireAuthorSignature":false,"chunkSize":3}},
  {"name":"files","storagePath":"f/{id}","readRoles":["public"],"writeRoles":["public"],
   "allowedMimeTypes":["image/*"],"maxBodyBytes":8000000}]}"#;

/// One "node": its own DocStore over a fresh client of the shared bucket.
fn node(prefix: &str) -> Option<axum::Router> {
    if std::env::var_os("STARFISH_TEST_S3").is_none() {
        eprintln!("STARFISH_TEST_S3 is not set: run tests/s3/run.sh");
        return None;
    }
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
        .build()
        .expect("S3 from the AWS_* environment");
    let store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(s3, prefix));
    let store = DocStore::new(
        store,
        Capabilities {
            conditional_update: true,
            attributes: true,
        },
    );
    let config = SyncConfig::from_json_str(CONFIG).unwrap();
    Some(
        create_sync_router(
            SyncOptions::new(config, store).with_clock(Arc::new(ManualClock::new(T0))),
        )
        .unwrap(),
    )
}

fn run_prefix() -> String {
    format!("test-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_winner_per_base_hash_on_s3() {
    let Some(app) = node(&format!("{}/race", run_prefix())) else {
        return;
    };
    let (_, first) = push_doc(&app, "/push/c/x", json!({"n": 0}), None).await;
    let base = first["hash"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (app, base) = (app.clone(), base.clone());
            tokio::spawn(async move {
                push_doc(&app, "/push/c/x", json!({"n": i + 1}), Some(&base))
                    .await
                    .0
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_bucket_lose_no_update_or_element() {
    let prefix = format!("{}/nodes", run_prefix());
    let (Some(a), Some(b)) = (node(&prefix), node(&prefix)) else {
        return;
    };
    let mut tasks = Vec::new();
    for app in [a.clone(), b.clone(), a.clone(), b.clone()] {
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < 5 {
                let body = json_body(send(&app, get("/pull/c/shared")).await).await;
                let n = body["data"]["n"].as_u64().unwrap_or(0);
                let hash = body["hash"].as_str().unwrap().to_owned();
                let base = (!hash.is_empty()).then_some(hash.as_str());
                if push_doc(&app, "/push/c/shared", json!({"n": n + 1}), base)
                    .await
                    .0
                    == StatusCode::OK
                {
                    done += 1;
                }
            }
            for i in 0..3 {
                let res = send(&app, push("/push/l/shared", &json!({"data": {"i": i}}))).await;
                assert_eq!(res.status(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let body = json_body(send(&b, get("/pull/c/shared")).await).await;
    assert_eq!(body["data"]["n"], 20, "every accepted increment is there");
    let log = json_body(send(&a, get("/pull/l/shared?checkpoint=0")).await).await;
    let ts: Vec<u64> = log["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ts"].as_u64().unwrap())
        .collect();
    assert_eq!(ts.len(), 12, "every append is there");
    assert!(ts.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn blobs_keep_their_type_on_s3() {
    let Some(app) = node(&format!("{}/blobs", run_prefix())) else {
        return;
    };
    let bytes: Vec<u8> = (0..6_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let req = axum::http::Request::post("/push/f/big")
        .header("content-type", "image/png")
        .header("content-length", bytes.len())
        .body(axum::body::Body::from(bytes.clone()))
        .unwrap();
    assert_eq!(send(&app, req).await.status(), StatusCode::OK);
    let res = send(&app, get("/pull/f/big")).await;
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(
        body_bytes(res).await,
        bytes,
        "a multipart upload round-trips"
    );
}
