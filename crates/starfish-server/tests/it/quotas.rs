//! Per-namespace quotas: an over-quota write is refused before anything is written
//! (`507 {"error":"Quota exceeded"}`), the usage the admin API reports is what the
//! store holds, and two routers over one store never exceed the quota together.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::collections::BTreeMap;

const ADMIN: &str = "admin-secret-0123456789";

fn collections() -> Value {
    json!([
        {"name": "notes", "storagePath": "notes/{id}",
         "readRoles": ["public"], "writeRoles": ["public"]},
        {"name": "feed", "storagePath": "feed/{id}",
         "readRoles": ["public"], "writeRoles": ["public"],
         "appendOnly": {"requireAuthorSignature": false, "chunkSize": 2}},
        {"name": "files", "storagePath": "files/{id}",
         "readRoles": ["public"], "writeRoles": ["public"],
         "allowedMimeTypes": ["image/png"], "maxBodyBytes": 300}
    ])
}

fn config(quota: Value) -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaces": {
            "acme": {"collections": collections(), "isolation": "prefixed", "quota": quota},
            "globex": {"collections": collections(), "isolation": "prefixed"}
        },
        "namespaceTemplates": {"team": {"collections": collections(),
                                        "quota": {"maxDocuments": 3}}}
    }))
    .unwrap()
}

fn node(store: &DocStore, quota: Value) -> Router {
    create_sync_router(SyncOptions::new(config(quota), store.clone()).with_admin_key(ADMIN))
        .unwrap()
}

async fn snapshot(store: &DocStore) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut listing = store.inner().list(None);
    while let Some(meta) = listing.next().await {
        let path = meta.unwrap().location;
        if path.as_ref().starts_with("_starfish/usage/") {
            continue; // the quota's own record
        }
        let bytes = store
            .inner()
            .get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.insert(path.to_string(), bytes.to_vec());
    }
    out
}

/// Bytes and documents under `prefix`, counted from the store.
async fn held(store: &DocStore, prefix: &str) -> (u64, u64) {
    let (mut bytes, mut documents) = (0, 0);
    for (key, value) in snapshot(store).await {
        if let Some(rest) = key.strip_prefix(prefix) {
            bytes += value.len() as u64;
            if !rest.contains("__seg/") && !rest.ends_with(".__meta__") {
                documents += 1;
            }
        }
    }
    (bytes, documents)
}

fn upload(uri: &str, bytes: &[u8]) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "image/png")
        .header("content-length", bytes.len())
        .body(Body::from(bytes.to_vec()))
        .unwrap()
}

async fn assert_quota_exceeded(app: &Router, request: Request<Body>, store: &DocStore) {
    let before = snapshot(store).await;
    assert_error(
        send(app, request).await,
        StatusCode::INSUFFICIENT_STORAGE,
        "Quota exceeded",
    )
    .await;
    assert_eq!(snapshot(store).await, before, "nothing written");
}

#[tokio::test]
async fn an_over_quota_write_is_refused_and_the_store_is_unchanged() {
    let store = DocStore::memory();
    let first_node = node(&store, json!({"maxDocuments": 4}));
    // Four documents: a note, a log (with its chunks), a blob (with its sidecar), and
    // another note.
    let (status, first) = push_doc(&first_node, "/acme/push/notes/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    for i in 0..3 {
        let res = send(
            &first_node,
            push("/acme/push/feed/f", &json!({"data": {"i": i}})),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = send(
        &first_node,
        upload("/acme/push/files/p", b"\x89PNG\r\n\x1a\nsmall"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (status, _) = push_doc(&first_node, "/acme/push/notes/b", json!({"v": 2}), None).await;
    assert_eq!(status, StatusCode::OK);
    // A node configured with 400 bytes to spare (the record is shared).
    let (used, documents) = held(&store, "_starfish/ns/acme/").await;
    assert_eq!(documents, 4);
    let app = node(&store, json!({"maxDocuments": 4, "maxBytes": used + 400}));

    // A fifth document of any kind is refused, with nothing written.
    let fifth = push(
        "/acme/push/notes/c",
        &json!({"data": {"v": 3}, "baseHash": null}),
    );
    assert_quota_exceeded(&app, fifth, &store).await;
    let new_log = push("/acme/push/feed/g", &json!({"data": {"i": 0}}));
    assert_quota_exceeded(&app, new_log, &store).await;
    let new_blob = upload("/acme/push/files/q", b"\x89PNG\r\n\x1a\n");
    assert_quota_exceeded(&app, new_blob, &store).await;
    // Writing an existing document, or appending to an existing log, adds no document.
    let (status, _) = push_doc(
        &app,
        "/acme/push/notes/a",
        json!({"v": 10}),
        first["hash"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let res = send(&app, push("/acme/push/feed/f", &json!({"data": {"i": 3}}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Bytes: a document that would grow past maxBytes is refused and stays as it was.
    let a = json_body(send(&app, get("/acme/pull/notes/a")).await).await;
    let big = push(
        "/acme/push/notes/a",
        &json!({"data": {"text": "x".repeat(1000)}, "baseHash": a["hash"]}),
    );
    assert_quota_exceeded(&app, big, &store).await;
    let still = json_body(send(&app, get("/acme/pull/notes/a")).await).await;
    assert_eq!(still["data"], json!({"v": 10}));
    // A blob upload sets aside the collection's largest body (300 bytes) and room for
    // its sidecar first: more than is left, so it is refused before its body is read.
    let blob = upload("/acme/push/files/p", &[0x89; 290]);
    assert_quota_exceeded(&app, blob, &store).await;
    // Another namespace has no quota.
    for i in 0..6 {
        let (status, _) =
            push_doc(&app, &format!("/globex/push/notes/n{i}"), json!({}), None).await;
        assert_eq!(status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_quota_needs_an_isolated_namespace() {
    let config = SyncConfig::from_value(json!({
        "version": 1, "collections": [],
        "namespaces": {"acme": {"collections": collections(), "quota": {"maxDocuments": 1}}}
    }))
    .unwrap();
    let e = create_sync_router(SyncOptions::new(config, DocStore::memory()))
        .err()
        .unwrap();
    assert!(e.to_string().contains("a quota needs isolation"), "{e}");
    for bad in [
        json!({}),
        json!({"maxBytes": -1}),
        json!({"maxDocs": 3}),
        json!(7),
    ] {
        let e = SyncConfig::from_value(json!({
            "version": 1, "collections": [],
            "namespaces": {"acme": {"collections": collections(), "isolation": "prefixed",
                                    "quota": bad}}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("quota"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routers_never_exceed_the_quota_together() {
    let store = DocStore::memory();
    let quota = json!({"maxDocuments": 20});
    let (a, b) = (node(&store, quota.clone()), node(&store, quota));
    let write = |app: Router, who: &'static str| async move {
        let mut ok = 0;
        for i in 0..30 {
            let uri = format!("/acme/push/notes/{who}{i}");
            let res = send(&app, push(&uri, &json!({"data": {"i": i}}))).await;
            match res.status() {
                StatusCode::OK => ok += 1,
                StatusCode::INSUFFICIENT_STORAGE => {}
                other => panic!("{other}"),
            }
        }
        ok
    };
    let (ok_a, ok_b) = tokio::join!(
        tokio::spawn(write(a.clone(), "a")),
        tokio::spawn(write(b.clone(), "b"))
    );
    let accepted = ok_a.unwrap() + ok_b.unwrap();
    let (_, documents) = held(&store, "_starfish/ns/acme/").await;
    assert_eq!(documents, accepted, "every acknowledged write is stored");
    assert!(documents <= 20, "never past the quota: {documents}");
    // A lease is at most a sixteenth of the quota (here one document): at most one
    // per node is left unspent when the writes stop.
    assert!(documents >= 18, "{documents}");
}

#[tokio::test]
async fn the_usage_the_admin_api_reports_is_what_the_store_holds() {
    let store = DocStore::memory();
    let a = node(&store, json!({"maxDocuments": 10}));
    let (status, _) = call(
        &a,
        req(
            "POST",
            "/_starfish/admin/namespaces",
            Some(ADMIN),
            Some(json!({"name": "initech", "template": "team"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    for i in 0..3 {
        let (status, _) = push_doc(
            &a,
            &format!("/initech/push/notes/n{i}"),
            json!({"i": i}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let res = send(&a, push("/initech/push/feed/f", &json!({"data": {"i": 0}}))).await;
    assert_error(res, StatusCode::INSUFFICIENT_STORAGE, "Quota exceeded").await;
    let (status, item) = call(
        &a,
        req(
            "GET",
            "/_starfish/admin/namespaces/initech",
            Some(ADMIN),
            None,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (bytes, documents) = held(&store, "_starfish/t/initech/").await;
    assert_eq!(item["quota"]["documents"], json!(documents));
    assert_eq!(item["quota"]["bytes"], json!(bytes));
    assert_eq!(item["quota"]["maxDocuments"], json!(3));
    assert_eq!(item["bytes"], json!(bytes), "the store's own count agrees");

    // The super-admin raises the quota: the next write fits.
    let (status, item) = call(
        &a,
        req(
            "PUT",
            "/_starfish/admin/namespaces/initech/quota",
            Some(ADMIN),
            Some(json!({"maxDocuments": 5})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["quota"]["maxDocuments"], json!(5));
    let res = send(&a, push("/initech/push/feed/f", &json!({"data": {"i": 0}}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    // A namespace's own admin key cannot.
    let (status, key) = call(
        &a,
        req(
            "POST",
            "/_starfish/admin/keys",
            Some(ADMIN),
            Some(json!({"grants": {"initech": ["read", "write"]}, "admin": true})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let (status, _) = call(
        &a,
        req(
            "PUT",
            "/_starfish/admin/namespaces/initech/quota",
            key["key"].as_str(),
            Some(json!({"maxDocuments": 1000})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
