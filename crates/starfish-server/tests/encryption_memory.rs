//! Encryption at rest, memory: a 50 MiB blob goes in and out of a sealed namespace
//! through a bounded amount of memory (alone in its test binary, so the peak is its
//! own).

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};
use starfish_server::store::{DocStore, MasterKey};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

fn node(store: &DocStore, encrypt: bool) -> Router {
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaces": {"acme": {"isolation": "prefixed", "encryptAtRest": encrypt, "collections": [
            {"name": "files", "storagePath": "files/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "allowedMimeTypes": ["application/octet-stream"], "maxBodyBytes": 60_000_000u64}
        ]}}
    }))
    .unwrap();
    let master = Arc::new(MasterKey::parse(&"42".repeat(32)).unwrap());
    create_sync_router(SyncOptions::new(config, store.clone()).with_key_wrap(master)).unwrap()
}

/// Peak resident memory of this process, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_50_mib_blob_round_trips_in_bounded_memory() {
    const SIZE: usize = 50 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local(dir.path()).unwrap();
    let app = node(&store, true);
    let before = peak_kib();
    // Streamed in 1 MiB pieces of a pattern: never whole in memory on either side.
    let piece: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut expected = Sha256::new();
    for _ in 0..SIZE / piece.len() {
        expected.update(&piece);
    }
    let expected = hex::encode(expected.finalize());
    let pieces = futures::stream::iter(
        (0..SIZE / piece.len())
            .map(move |_| Ok::<_, std::io::Error>(bytes::Bytes::from(piece.clone()))),
    );
    let req = Request::post("/acme/push/files/big")
        .header("content-type", "application/octet-stream")
        .header("content-length", SIZE)
        .body(Body::from_stream(pieces))
        .unwrap();
    let res = send(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["hash"], expected);
    let res = send(&app, get("/acme/pull/files/big")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut body = res.into_body().into_data_stream();
    let mut got = Sha256::new();
    let mut len = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        got.update(&chunk);
    }
    assert_eq!(len, SIZE);
    assert_eq!(hex::encode(got.finalize()), expected);
    // Stored sealed, with the format's overhead only.
    let stored = std::fs::metadata(dir.path().join("_starfish/ns/acme/files/big"))
        .unwrap()
        .len();
    assert!(
        (stored > SIZE as u64 && stored < SIZE as u64 + 20_000),
        "{stored}"
    );
    let grown_mib = (peak_kib() - before) / 1024;
    assert!(grown_mib < 40, "peak memory grew by {grown_mib} MiB");
}
