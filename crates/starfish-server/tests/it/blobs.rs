//! Binary collections: MIME rules, limits with and without Content-Length, ETags,
//! owner-only writes, and the filesystem layout.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use starfish_protocol::sha256_hex;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "avatars", "storagePath": "avatars/{identity}", "readRoles": ["public"], "writeRoles": ["self"],
     "allowedMimeTypes": ["image/*"], "maxBodyBytes": 4096, "cacheDurationMs": 60000},
    {"name": "drop", "storagePath": "drop/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["image/png", "application/pdf"], "maxBodyBytes": 4096}
  ]
}"#;

fn app(store: DocStore) -> axum::Router {
    let config = SyncConfig::from_json_str(CONFIG).unwrap();
    create_sync_router(SyncOptions::new(config, store).with_clock(Arc::new(ManualClock::new(T0))))
        .unwrap()
}

fn upload(uri: &str, content_type: &str, bytes: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .header("content-length", bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

async fn object_count(store: &DocStore) -> usize {
    store.inner().list(None).count().await
}

#[tokio::test]
async fn blobs_round_trip_with_type_etag_and_304() {
    let store = DocStore::memory();
    let app = app(store.clone());
    let png = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
    let res = send(
        &app,
        upload("/push/drop/a", "image/png; charset=binary", png.clone()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let hash = sha256_hex(&png);
    assert_eq!(json_body(res).await, serde_json::json!({"hash": hash}));

    let res = send(&app, get("/pull/drop/a")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["etag"], format!("\"{hash}\"").as_str());
    assert_eq!(body_bytes(res).await, png);
    let res = send(
        &app,
        Request::get("/pull/drop/a")
            .header("if-none-match", format!("\"{hash}\""))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(body_bytes(res).await.is_empty());

    let res = send(&app, get("/pull/drop/missing")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(body_bytes(res).await.is_empty());
}

#[tokio::test]
async fn other_media_types_are_415_with_the_allowed_list() {
    let store = DocStore::memory();
    let app = app(store.clone());
    for ct in ["image/gif", "text/plain", "", "image", "application/json"] {
        let res = send(&app, upload("/push/drop/a", ct, vec![1, 2, 3])).await;
        assert_error(
            res,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "Content-Type '{ct}' is not allowed. Allowed: [\"image/png\",\"application/pdf\"]"
            ),
        )
        .await;
    }
    assert_eq!(object_count(&store).await, 0);
}

#[tokio::test]
async fn an_anonymous_6kb_chunked_upload_to_a_4kb_collection_is_413_and_stores_nothing() {
    let store = DocStore::memory();
    let app = app(store.clone());
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|_| Ok(vec![7u8; 1024])).collect();
    let req = Request::post("/push/drop/a")
        .header("content-type", "image/png")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert!(req.headers().get("content-length").is_none());
    assert_error(
        send(&app, req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Payload too large",
    )
    .await;
    assert_eq!(object_count(&store).await, 0);
    // With a declared length the answer comes before anything is read.
    let res = send(&app, upload("/push/drop/a", "image/png", vec![0; 6000])).await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").await;
    assert_eq!(object_count(&store).await, 0);
    // And a failed overwrite leaves the previous blob in place.
    assert_eq!(
        send(&app, upload("/push/drop/a", "image/png", vec![1; 10]))
            .await
            .status(),
        StatusCode::OK
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..6).map(|_| Ok(vec![7u8; 1024])).collect();
    let req = Request::post("/push/drop/a")
        .header("content-type", "image/png")
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    assert_eq!(
        send(&app, req).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        body_bytes(send(&app, get("/pull/drop/a")).await).await,
        vec![1; 10]
    );
}

#[tokio::test]
async fn only_the_owner_writes_a_self_blob_and_anyone_reads_it() {
    let app = app(DocStore::memory());
    let (a, b) = (user(1), user(2));
    let uri = format!("/push/avatars/{}", a.id);
    let signed_upload = |u: &User, bytes: Vec<u8>| {
        let mut s = Signed::new("POST", &uri, device_cap(u), &u.device);
        s.body = None; // blob uploads are signed over an empty body
        let mut req = s.build();
        *req.body_mut() = Body::from(bytes.clone());
        req.headers_mut()
            .insert("content-type", "image/png".parse().unwrap());
        req.headers_mut()
            .insert("content-length", bytes.len().into());
        req
    };
    assert_eq!(
        send(&app, signed_upload(&b, vec![2; 8])).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, upload(&uri, "image/png", vec![0; 8]))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&app, signed_upload(&a, vec![1; 8])).await.status(),
        StatusCode::OK
    );
    let res = send(&app, get(&format!("/pull/avatars/{}", a.id))).await;
    assert_eq!(res.headers()["cache-control"], "max-age=60");
    assert_eq!(body_bytes(res).await, vec![1; 8]);
}

#[tokio::test]
async fn the_filesystem_layout_is_the_references() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local(dir.path()).unwrap();
    let app = app(store.clone());
    assert_eq!(
        send(
            &app,
            upload("/push/drop/a", "application/pdf", b"%PDF".to_vec())
        )
        .await
        .status(),
        StatusCode::OK
    );
    store.flush().await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("drop/a")).unwrap(), b"%PDF");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("drop/a.__meta__")).unwrap())
            .unwrap();
    assert_eq!(meta["contentType"], "application/pdf");
    // A blob written by the reference (no hash in its sidecar) is hashed on read.
    std::fs::write(dir.path().join("drop/b"), b"ref").unwrap();
    std::fs::write(
        dir.path().join("drop/b.__meta__"),
        br#"{"contentType":"image/png"}"#,
    )
    .unwrap();
    let res = send(&app, get("/pull/drop/b")).await;
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(
        res.headers()["etag"],
        format!("\"{}\"", sha256_hex(b"ref")).as_str()
    );
}
