//! The store's own objects (a blob's `.__meta__` sidecar, a log's `__seg/` chunks,
//! `_keyring` and `_members` siblings) can never be named by a client's parameter,
//! and reads stay within their bounds whatever numbers a client sends.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "avatars", "storagePath": "avatars/{id}/{name}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["image/*"], "maxBodyBytes": 4096},
    {"name": "chat", "storagePath": "chat/{room}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"type": "by_timestamp", "requireAuthorSignature": false, "chunkSize": 2,
                    "allowFull": false, "maxCheckpointAgeMs": 86400000}},
    {"name": "files", "storagePath": "chat/{room}/{file}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["*/*"]},
    {"name": "rooms", "storagePath": "rooms/{room}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "msgs", "storagePath": "rooms/{room}/{msg}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "days", "storagePath": "diary/{id}/{day}", "readRoles": ["public"], "writeRoles": ["public"], "listable": true},
    {"name": "attachments", "storagePath": "diary/{id}/{day}/{file}", "readRoles": ["public"], "writeRoles": ["public"]}
  ]
}"#;

fn options(store: DocStore) -> SyncOptions {
    SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store)
        .with_clock(Arc::new(ManualClock::new(T0)))
}

fn app() -> axum::Router {
    create_sync_router(options(DocStore::memory())).unwrap()
}

fn raw(uri: &str, content_type: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(Body::from(body.to_owned()))
        .unwrap()
}

async fn append(app: &axum::Router, room: &str, n: u64) {
    let res = send(
        app,
        push(&format!("/push/chat/{room}"), &json!({"data": {"n": n}})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_blob_sidecar_cannot_be_written_through_a_parameter() {
    let app = app();
    let res = send(&app, raw("/push/avatars/a/x.png", "image/png", "<html>")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let forged = r#"{"contentType":"text/html"}"#;
    for name in ["x.png.__meta__", "x.png%2E__meta__"] {
        let res = send(
            &app,
            raw(&format!("/push/avatars/a/{name}"), "image/png", forged),
        )
        .await;
        assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    }
    let res = send(&app, get("/pull/avatars/a/x.png")).await;
    assert_eq!(res.headers()[header::CONTENT_TYPE], "image/png");
}

#[tokio::test]
async fn log_chunks_and_siblings_cannot_be_named_by_a_parameter() {
    let app = app();
    for n in 0..3 {
        append(&app, "general", n).await;
    }
    // A chunk of `chat/general` lives under `chat/general__seg/`.
    let forged = r#"[{"ts":1,"data":{"text":"forged"}}]"#;
    let res = send(
        &app,
        raw(
            "/push/chat/general__seg/9999999999999999",
            "application/octet-stream",
            forged,
        ),
    )
    .await;
    assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    let log = json_body(send(&app, get("/pull/chat/general?last=10")).await).await;
    let ns: Vec<&Value> = log["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"]["n"])
        .collect();
    assert_eq!(ns, [&json!(0), &json!(1), &json!(2)]);
    // `_keyring` and `_members` siblings: only a literal template segment names them.
    for name in ["_keyring", "_members"] {
        let res = send(
            &app,
            push(&format!("/push/rooms/r/{name}"), &json!({"data": {}})),
        )
        .await;
        assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    }
}

#[tokio::test]
async fn huge_log_bounds_neither_widen_a_read_nor_overflow() {
    let app = app();
    for n in 0..5 {
        append(&app, "r", n).await;
    }
    // Past i64::MAX a checkpoint is still "newer than everything": no element.
    let res = send(&app, get("/pull/chat/r?checkpoint=9223372036854775808")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["data"]["items"], json!([]));
    let res = send(&app, get("/pull/chat/r?last=18446744073709551615")).await;
    assert_eq!(
        json_body(res).await["data"]["items"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn a_batch_entry_reads_what_its_budget_counted() {
    let mut options = options(DocStore::memory());
    options.max_batch_append_elements = 3;
    let app = create_sync_router(options).unwrap();
    for n in 0..5 {
        append(&app, "r", n).await;
    }
    let ask = |entry: Value| {
        let ap = json!({ "chat": [entry] }).to_string();
        let params = json!({ "chat": [{"room": "r"}] }).to_string();
        get(&format!(
            "/batch/pull?collections=chat&params={}&appendParams={}",
            percent_encoding::utf8_percent_encode(&params, percent_encoding::NON_ALPHANUMERIC),
            percent_encoding::utf8_percent_encode(&ap, percent_encoding::NON_ALPHANUMERIC),
        ))
    };
    // `limit` wins over `last` when reading, so it is what the budget counts.
    let res = send(&app, ask(json!({"last": 1, "limit": 100}))).await;
    assert_error(
        res,
        StatusCode::BAD_REQUEST,
        "Batch append element budget exceeded",
    )
    .await;
    let res = send(&app, ask(json!({"last": 2}))).await;
    let body = json_body(res).await;
    assert_eq!(
        body["collections"]["chat"][0]["data"]["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_list_shows_one_level_and_no_bookkeeping() {
    let app = app();
    for uri in [
        "/push/diary/a/d1",
        "/push/diary/a/d2",
        "/push/diary/a/d1/att",
    ] {
        let res = send(&app, push(uri, &json!({"data": {}}))).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
    }
    let body = json_body(send(&app, get("/list/diary/a")).await).await;
    assert_eq!(body, json!({"items": ["d1", "d2"], "hasMore": false}));
}

#[tokio::test]
async fn with_keyring_on_the_filesystem_layout_is_not_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let app = create_sync_router(options(DocStore::local(dir.path()).unwrap())).unwrap();
    let res = send(&app, push("/push/rooms/r", &json!({"data": {"v": 1}}))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(&app, get("/pull/rooms/r?withKeyring=1")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_body(res).await;
    assert_eq!(body["data"], json!({"v": 1}));
    assert_eq!(body["keyring"], Value::Null);
}
