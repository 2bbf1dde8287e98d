//! Encryption at rest (`encryptAtRest`): nothing the store holds contains the
//! plaintext of what was written, pulls answer exactly as without encryption, a
//! 50 MiB blob round-trips through a bounded amount of memory, a flipped or cut byte
//! is refused with a clear error, and delegated collections are stored as the client
//! sent them.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use serde_json::{Value, json};
use starfish_server::store::{DocStore, MasterKey};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const MARK: &str = "plaintext-marker-7f3a";

fn config(encrypt: bool) -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaces": {"acme": {"isolation": "prefixed", "encryptAtRest": encrypt, "collections": [
            {"name": "notes", "storagePath": "notes/{id}",
             "readRoles": ["public"], "writeRoles": ["public"]},
            {"name": "feed", "storagePath": "feed/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "appendOnly": {"requireAuthorSignature": false, "chunkSize": 2}},
            {"name": "vault", "storagePath": "vault/{id}", "encryption": "delegated",
             "readRoles": ["public"], "writeRoles": ["public"]},
            {"name": "files", "storagePath": "files/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "allowedMimeTypes": ["application/octet-stream"], "maxBodyBytes": 60_000_000u64}
        ]}}
    }))
    .unwrap()
}

fn master() -> Arc<MasterKey> {
    Arc::new(MasterKey::parse(&"42".repeat(32)).unwrap())
}

fn options(store: &DocStore, encrypt: bool) -> SyncOptions {
    SyncOptions::new(config(encrypt), store.clone()).with_key_wrap(master())
}

fn node(store: &DocStore, encrypt: bool) -> Router {
    create_sync_router(options(store, encrypt)).unwrap()
}

/// The key version of each sealed object of acme.
async fn versions(store: &DocStore) -> Vec<(String, u32)> {
    raw_objects(store)
        .await
        .into_iter()
        .filter(|(p, b)| p.starts_with("_starfish/ns/acme/") && b.starts_with(b"SFSEAL1\0"))
        .map(|(p, b)| (p, u32::from_be_bytes([b[8], b[9], b[10], b[11]])))
        .collect()
}

async fn keyring(store: &DocStore) -> Value {
    let path = object_store::path::Path::from("_starfish/datakeys/ns/acme");
    let bytes = store
        .inner()
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn raw_objects(store: &DocStore) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut listing = store.inner().list(None);
    while let Some(meta) = listing.next().await {
        let path = meta.unwrap().location;
        let bytes = store
            .inner()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((path.to_string(), bytes.to_vec()));
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn upload(uri: &str, bytes: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

/// Writes the same things to `app`: a document, a log, a delegated document, a blob.
async fn write_all(app: &Router) -> Vec<Value> {
    let mut out = Vec::new();
    let (s, mut body) = push_doc(app, "/acme/push/notes/n1", json!({"text": MARK}), None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body.as_object_mut().map(|o| o.remove("timestamp"));
    out.push(body);
    for i in 0..3 {
        let res = send(
            app,
            push(
                "/acme/push/feed/f1",
                &json!({"data": {"elements": [{"i": i, "t": MARK}]}}),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let (s, _) = push_doc(
        app,
        "/acme/push/vault/v1",
        json!({"ct": "opaque-ciphertext"}),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let res = send(
        app,
        upload("/acme/push/files/b1", MARK.repeat(100).into_bytes()),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    out.push(json_body(res).await);
    out
}

async fn pulled(app: &Router) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for uri in [
        "/acme/pull/notes/n1",
        "/acme/pull/feed/f1?last=10",
        "/acme/pull/vault/v1",
        "/acme/pull/files/b1",
    ] {
        let res = send(app, get(uri)).await;
        let status = res.status();
        let mut body = body_bytes(res).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{uri} {}",
            String::from_utf8_lossy(&body)
        );
        if let Ok(mut v) = serde_json::from_slice::<Value>(&body) {
            v.as_object_mut().map(|o| o.remove("timestamp"));
            // A log's entries carry the time they were appended.
            if let Some(items) = v["data"]["items"].as_array_mut() {
                items.iter_mut().for_each(|i| {
                    i.as_object_mut().map(|o| o.remove("ts"));
                });
            }
            body = serde_json::to_vec(&v).unwrap();
        }
        out.push(body);
    }
    out
}

#[tokio::test]
async fn no_stored_object_holds_plaintext_and_pulls_are_unchanged() {
    let sealed_store = DocStore::memory();
    let sealed = node(&sealed_store, true);
    let plain_store = DocStore::memory();
    let plain = node(&plain_store, false);
    // The same hashes and the same answers, with and without encryption.
    assert_eq!(write_all(&sealed).await, write_all(&plain).await);
    assert_eq!(pulled(&sealed).await, pulled(&plain).await);

    let objects = raw_objects(&sealed_store).await;
    let mut sealed_count = 0;
    for (path, bytes) in &objects {
        if path.contains("/vault/") {
            // Delegated: the client's own ciphertext, stored as sent.
            assert!(contains(bytes, "opaque-ciphertext"), "{path}");
            continue;
        }
        assert!(!contains(bytes, MARK), "{path} holds plaintext");
        if path.starts_with("_starfish/ns/acme/") {
            assert!(bytes.starts_with(b"SFSEAL1\0"), "{path} is not sealed");
            sealed_count += 1;
        }
    }
    // The document, the log's head and chunks, the blob and its sidecar.
    assert!(sealed_count >= 5, "{objects:?}");
    // Without encryption the marker is there to be found: the search can fail.
    let plain_objects = raw_objects(&plain_store).await;
    assert!(plain_objects.iter().any(|(_, b)| contains(b, MARK)));
    // The keyring holds only wrapped keys.
    let ring = objects
        .iter()
        .find(|(p, _)| p == "_starfish/datakeys/ns/acme")
        .expect("a keyring");
    let ring: Value = serde_json::from_slice(&ring.1).unwrap();
    assert_eq!(ring["current"], 1);
    assert!(
        ring["keys"]["1"]["by"]
            .as_str()
            .unwrap()
            .starts_with("master:")
    );
}

#[tokio::test]
async fn a_flipped_or_cut_byte_is_refused_with_a_clear_error() {
    let store = DocStore::memory();
    let app = node(&store, true);
    write_all(&app).await;
    let doc = object_store::path::Path::from("_starfish/ns/acme/notes/n1");
    let original = store
        .inner()
        .get(&doc)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    for damaged in [
        {
            let mut b = original.to_vec();
            let at = b.len() - 20;
            b[at] ^= 1;
            b
        },
        original[..original.len() - 1].to_vec(),
        original[..60].to_vec(),
        br#"{"data":{"text":"forged"},"hash":"x"}"#.to_vec(),
    ] {
        store
            .inner()
            .put(&doc, PutPayload::from(damaged))
            .await
            .unwrap();
        let res = send(&app, get("/acme/pull/notes/n1")).await;
        assert_error(
            res,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Stored data failed its integrity check",
        )
        .await;
    }
    // Another object's sealed bytes moved here do not open either (bound to the path).
    let other = store
        .inner()
        .get(&object_store::path::Path::from(
            "_starfish/ns/acme/files/b1",
        ))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    store
        .inner()
        .put(&doc, PutPayload::from(other))
        .await
        .unwrap();
    let res = send(&app, get("/acme/pull/notes/n1")).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_damaged_blob_is_never_served_whole() {
    let store = DocStore::memory();
    let app = node(&store, true);
    write_all(&app).await;
    let blob = object_store::path::Path::from("_starfish/ns/acme/files/b1");
    let mut damaged = store
        .inner()
        .get(&blob)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x80;
    store
        .inner()
        .put(&blob, PutPayload::from(damaged))
        .await
        .unwrap();
    let res = send(&app, get("/acme/pull/files/b1")).await;
    if res.status() == StatusCode::OK {
        // Headers may be out before the first chunk is opened: the body then fails.
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await;
        assert!(body.is_err(), "a damaged blob was served: {body:?}");
    } else {
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}

#[tokio::test]
async fn encryption_needs_a_master_key_and_an_isolated_namespace() {
    let err = create_sync_router(SyncOptions::new(config(true), DocStore::memory()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("master key"), "{err}");
    // A template that seals needs one too.
    let err = create_sync_router(SyncOptions::new(template_config(), DocStore::memory()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("master key"), "{err}");
}

fn template_config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1, "collections": [],
        "namespaceTemplates": {"team": {"encryptAtRest": true, "collections": [
            {"name": "notes", "storagePath": "notes/{id}",
             "readRoles": ["public"], "writeRoles": ["public"]}]}}
    }))
    .unwrap()
}

#[tokio::test]
async fn a_namespace_made_from_a_sealing_template_is_sealed_and_its_keys_go_with_it() {
    const ADMIN: &str = "admin-secret-0123456789";
    let store = DocStore::memory();
    let app = create_sync_router(
        SyncOptions::new(template_config(), store.clone())
            .with_key_wrap(master())
            .with_admin_key(ADMIN),
    )
    .unwrap();
    let create = json!({"name": "initech", "template": "team"});
    let (status, _) = call(
        &app,
        req(
            "POST",
            "/_starfish/admin/namespaces",
            Some(ADMIN),
            Some(create),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (s, pushed) = push_doc(&app, "/initech/push/notes/n1", json!({"text": MARK}), None).await;
    assert_eq!(s, StatusCode::OK);
    let res = send(&app, get("/initech/pull/notes/n1")).await;
    let pulled = json_body(res).await;
    assert_eq!(
        (&pulled["data"], &pulled["hash"]),
        (&json!({"text": MARK}), &pushed["hash"])
    );
    let objects = raw_objects(&store).await;
    let doc = objects
        .iter()
        .find(|(p, _)| p.starts_with("_starfish/t/initech/") && p.ends_with("/notes/n1"))
        .expect("the document");
    assert!(doc.1.starts_with(b"SFSEAL1\0"));
    assert!(
        objects.iter().all(|(_, b)| !contains(b, MARK)),
        "plaintext stored"
    );
    assert!(
        objects
            .iter()
            .any(|(p, _)| p.starts_with("_starfish/datakeys/t/initech/"))
    );
    // Deleted: its keys go with its data.
    let (status, _) = call(
        &app,
        req(
            "DELETE",
            "/_starfish/admin/namespaces/initech",
            Some(ADMIN),
            None,
        ),
    )
    .await;
    assert!(status.is_success(), "{status}");
    let left = raw_objects(&store).await;
    assert!(
        !left
            .iter()
            .any(|(p, _)| p.starts_with("_starfish/datakeys/")),
        "{left:?}"
    );
}

#[tokio::test]
async fn after_a_rotation_old_and_new_objects_read_and_rotate_keys_leaves_only_the_new_key() {
    let store = DocStore::memory();
    let clock = starfish_server::auth::ManualClock::new(T0);
    let app =
        create_sync_router(options(&store, true).with_clock(Arc::new(clock.clone()))).unwrap();
    write_all(&app).await;
    let before = pulled(&app).await;
    assert!(versions(&store).await.iter().all(|(_, v)| *v == 1));

    // The rotation runs (with a grace), and meanwhile the server, past its keyring
    // refresh, writes with the new key while the old objects still read.
    let rotation = tokio::spawn({
        let store = store.clone();
        async move {
            starfish_server::rotate::rotate_keys(
                &options(&store, true),
                "acme",
                starfish_server::rotate::RotateOptions {
                    grace: std::time::Duration::from_millis(500),
                    offline: false,
                },
                |_| {},
            )
            .await
        }
    });
    while keyring(&store).await["current"] != 2 {
        tokio::task::yield_now().await;
    }
    clock.advance(6_000);
    let (s, _) = push_doc(&app, "/acme/push/notes/n2", json!({"text": "new"}), None).await;
    assert_eq!(s, StatusCode::OK);
    let held = versions(&store).await;
    assert!(
        held.iter().any(|(p, v)| p.ends_with("notes/n2") && *v == 2),
        "{held:?}"
    );
    assert!(
        held.iter().any(|(p, v)| p.ends_with("notes/n1") && *v == 1),
        "{held:?}"
    );
    assert_eq!(pulled(&app).await, before);
    let res = send(&app, get("/acme/pull/notes/n2")).await;
    assert_eq!(json_body(res).await["data"], json!({"text": "new"}));

    let report = rotation.await.unwrap().unwrap();
    assert_eq!(report.version, 2);
    assert!(!report.resumed);
    assert!(report.resealed >= 5, "{report:?}");
    assert_eq!(report.plain, 1, "the delegated document is left as sent");
    // Only the new version remains, everything reads as before, the mark is gone.
    let held = versions(&store).await;
    assert!(held.iter().all(|(_, v)| *v == 2), "{held:?}");
    assert_eq!(pulled(&app).await, before);
    let ring = keyring(&store).await;
    assert!(ring.get("resealing").is_none(), "{ring}");
    assert_eq!(ring["current"], 2);
    assert!(ring["keys"]["1"].is_object(), "old versions stay, unused");
}

#[tokio::test]
async fn an_interrupted_rotation_resumes_without_a_new_key() {
    let store = DocStore::memory();
    let app = node(&store, true);
    write_all(&app).await;
    let before = pulled(&app).await;
    let doc = object_store::path::Path::from("_starfish/ns/acme/notes/n1");
    let old = store
        .inner()
        .get(&doc)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let no_grace = starfish_server::rotate::RotateOptions::default();
    // A delegated object that happens to start like a sealed one cannot hold the
    // rotation up.
    let lookalike = object_store::path::Path::from("_starfish/ns/acme/vault/odd");
    let mut odd = b"SFSEAL1\0".to_vec();
    odd.extend_from_slice(&[1u8; 120]);
    store
        .inner()
        .put(&lookalike, PutPayload::from(odd.clone()))
        .await
        .unwrap();
    let first =
        starfish_server::rotate::rotate_keys(&options(&store, true), "acme", no_grace, |_| {})
            .await
            .unwrap();
    assert_eq!(first.version, 2);
    assert_eq!(first.unopenable, 1);
    assert_eq!(first.unopenable_keys, ["vault/odd"]);
    let kept = store
        .inner()
        .get(&lookalike)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(kept.to_vec(), odd, "left as it is");
    // As if it had stopped before reaching this document.
    store
        .inner()
        .put(&doc, PutPayload::from(old))
        .await
        .unwrap();
    let mut ring = keyring(&store).await;
    ring["resealing"] = json!(2);
    let ring_path = object_store::path::Path::from("_starfish/datakeys/ns/acme");
    store
        .inner()
        .put(
            &ring_path,
            PutPayload::from(serde_json::to_vec(&ring).unwrap()),
        )
        .await
        .unwrap();
    let resumed =
        starfish_server::rotate::rotate_keys(&options(&store, true), "acme", no_grace, |_| {})
            .await
            .unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.version, 2, "no third key");
    assert_eq!(resumed.resealed, 1);
    assert!(
        versions(&store)
            .await
            .iter()
            .all(|(p, v)| *v == 2 || p.ends_with("vault/odd"))
    );
    assert_eq!(pulled(&app).await, before);
    assert!(keyring(&store).await.get("resealing").is_none());
    // Not a namespace that seals: a clear refusal.
    let err =
        starfish_server::rotate::rotate_keys(&options(&store, false), "acme", no_grace, |_| {})
            .await
            .unwrap_err();
    assert!(err.to_string().contains("encryptAtRest"), "{err}");
}

#[tokio::test]
async fn a_vanished_or_altered_keyring_is_never_silently_replaced() {
    let store = DocStore::memory();
    let clock = starfish_server::auth::ManualClock::new(T0);
    let app =
        create_sync_router(options(&store, true).with_clock(Arc::new(clock.clone()))).unwrap();
    write_all(&app).await;
    let ring_path = object_store::path::Path::from("_starfish/datakeys/ns/acme");
    let ring = store
        .inner()
        .get(&ring_path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    store.inner().delete(&ring_path).await.unwrap();
    // Past the refresh, a write must not mint a new key beside the one in use.
    clock.advance(6_000);
    let (s, _) = push_doc(&app, "/acme/push/notes/n9", json!({"text": "x"}), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(store.inner().head(&ring_path).await.is_err(), "recreated");
    // A record holding another key under a learnt version is refused too.
    let mut altered: Value = serde_json::from_slice(&ring).unwrap();
    altered["keys"]["1"]["wrapped"] = json!(b64(&[0u8; 60]));
    store
        .inner()
        .put(
            &ring_path,
            PutPayload::from(serde_json::to_vec(&altered).unwrap()),
        )
        .await
        .unwrap();
    clock.advance(6_000);
    let (s, _) = push_doc(&app, "/acme/push/notes/n9", json!({"text": "x"}), None).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // Put back, everything works again.
    store
        .inner()
        .put(&ring_path, PutPayload::from(ring))
        .await
        .unwrap();
    clock.advance(6_000);
    let (s, _) = push_doc(&app, "/acme/push/notes/n9", json!({"text": "x"}), None).await;
    assert_eq!(s, StatusCode::OK);
}
