//! No input reaches a 500: generated paths and bodies through every route, on the
//! memory and the filesystem store; every refusal leaves the store as it was.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use proptest::prelude::*;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::collections::BTreeMap;
use std::sync::Arc;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"], "listable": true},
    {"name": "notes", "storagePath": "docs/{id}/{note}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "keyring", "storagePath": "docs/{id}/_keyring", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "log", "storagePath": "log/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"type": "by_timestamp", "requireAuthorSignature": false, "chunkSize": 3}},
    {"name": "pics", "storagePath": "pics/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["image/*"], "maxBodyBytes": 1024},
    {"name": "a", "storagePath": "b/{id}", "bundle": "bb", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "c", "storagePath": "b/{id}", "bundle": "bb", "readRoles": ["public"], "writeRoles": ["public"]}
  ],
  "namespaces": {"acme": {"collections": [
    {"name": "docs", "storagePath": "acme/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
  ]}}
}"#;

/// Segments a client might send: ordinary, dotted, encoded, reserved, long, odd.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,8}",
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2E".to_owned()),
        Just("%2e%2E".to_owned()),
        Just("%2F".to_owned()),
        Just("a%2Fb".to_owned()),
        Just("%".to_owned()),
        Just("%ZZ".to_owned()),
        Just("%C3%BC".to_owned()),
        Just("_keyring".to_owned()),
        Just("x.__meta__".to_owned()),
        Just("x__seg".to_owned()),
        Just("x.tmp".to_owned()),
        Just("__seg".to_owned()),
        "[a-z]{250,300}",
        "[a-z]{1000,1100}",
        Just("pull".to_owned()),
        Just("push".to_owned()),
        Just("batch".to_owned()),
        Just("acme".to_owned()),
        Just("docs".to_owned()),
        Just("log".to_owned()),
        Just("pics".to_owned()),
        Just("b".to_owned()),
        Just("a".to_owned()),
        Just("".to_owned()),
        Just("d".to_owned()),
        Just("n".to_owned()),
        Just("l".to_owned()),
        Just("l__seg".to_owned()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just(""), Just("/acme")],
        prop_oneof![Just("pull"), Just("push"), Just("list"), Just("batch")],
        proptest::collection::vec(segment(), 0..5),
        prop_oneof![
            Just(String::new()),
            Just("?withKeyring=1".to_owned()),
            Just("?last=2".to_owned()),
            Just("?checkpoint=99999999999999999999".to_owned()),
            Just("?full=true".to_owned()),
            Just("?limit=5&after=..".to_owned()),
            Just("?collections=docs,log,pics,a&params=%7B%22docs%22%3A%5B%7B%22id%22%3A%22..%22%7D%5D%7D".to_owned()),
            Just("?collections=log&appendParams=%7B%22log%22%3A%5B%7B%22since%22%3A1e30%7D%5D%7D".to_owned()),
        ],
    )
        .prop_map(|(ns, verb, segs, q)| format!("{ns}/{verb}/{}{q}", segs.join("/")))
}

fn body() -> impl Strategy<Value = (String, String)> {
    (
        prop_oneof![
            Just("application/json"),
            Just("image/png"),
            Just("text/plain"),
            Just("application/json-x"),
            Just(""),
        ],
        prop_oneof![
            Just(r#"{"data":{"v":1}}"#.to_owned()),
            Just(r#"{"data":{"v":1},"baseHash":null}"#.to_owned()),
            Just(r#"{"data":{"v":1},"ts":1e300}"#.to_owned()),
            Just(r#"{"data":{"v":1},"authorPubkey":"zz","authorSignature":"!"}"#.to_owned()),
            Just("[1,2]".to_owned()),
            Just("{".to_owned()),
            Just("\u{0}".to_owned()),
            Just("x".repeat(3000)),
        ],
    )
        .prop_map(|(ct, b)| (ct.to_owned(), b))
}

async fn snapshot(store: &DocStore) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let metas: Vec<_> = store.inner().list(None).collect().await;
    for meta in metas.into_iter().flatten() {
        if let Ok(r) = object_store::ObjectStoreExt::get(store.inner(), &meta.location).await {
            out.insert(meta.location.to_string(), r.bytes().await.unwrap().to_vec());
        }
    }
    out
}

fn request(method: &str, uri: &str, content_type: &str, body: &str) -> Option<Request<Body>> {
    let mut b = Request::builder().method(method).uri(uri);
    if method == "POST" {
        if !content_type.is_empty() {
            b = b.header("content-type", content_type);
        }
        b = b.header("content-length", body.len());
    }
    b.body(Body::from(body.to_owned())).ok()
}

fn check(store: DocStore, cases: Vec<(bool, String, (String, String))>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)));
        let app = create_sync_router(options).unwrap();
        // Some documents to collide with.
        for uri in [
            "/push/docs/d",
            "/push/docs/x/n",
            "/push/log/l",
            "/push/log/l",
        ] {
            let res = send(&app, push(uri, &serde_json::json!({"data": {"seed": 1}}))).await;
            assert_eq!(res.status(), StatusCode::OK, "{uri}");
        }
        for (post, uri, (content_type, body)) in cases {
            let method = if post { "POST" } else { "GET" };
            let Some(req) = request(method, &uri, &content_type, &body) else {
                continue;
            };
            let before = snapshot(&store).await;
            let res = send(&app, req).await;
            let status = res.status();
            assert!(
                status.as_u16() < 500,
                "{method} {uri} ({content_type}) -> {status}: {:?}",
                String::from_utf8_lossy(&body_bytes(res).await)
            );
            if status != StatusCode::OK {
                assert_eq!(
                    before,
                    snapshot(&store).await,
                    "{method} {uri} -> {status} wrote"
                );
            }
        }
    });
}

fn cases() -> impl Strategy<Value = Vec<(bool, String, (String, String))>> {
    proptest::collection::vec((any::<bool>(), path(), body()), 1..24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_input_reaches_a_500_on_memory(cases in cases()) {
        check(DocStore::memory(), cases);
    }

    #[test]
    fn no_input_reaches_a_500_on_the_filesystem(cases in cases()) {
        let dir = tempfile::tempdir().unwrap();
        check(DocStore::local(dir.path()).unwrap(), cases);
    }
}

#[tokio::test]
async fn documents_nested_in_each_other_on_the_filesystem_are_not_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local(dir.path()).unwrap();
    let options = SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store.clone())
        .with_clock(Arc::new(ManualClock::new(T0)));
    let app = create_sync_router(options).unwrap();
    let doc = |v: i32| serde_json::json!({"data": {"v": v}});
    // `docs/d` is a file, so `docs/d/n` cannot be one; `docs/x/n` makes `docs/x` a folder.
    assert_eq!(
        send(&app, push("/push/docs/d", &doc(1))).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, push("/push/docs/x/n", &doc(2))).await.status(),
        StatusCode::OK
    );
    for uri in ["/push/docs/d/n", "/push/docs/x", "/push/docs/d/_keyring"] {
        let before = snapshot(&store).await;
        let res = send(&app, push(uri, &doc(3))).await;
        assert_error(
            res,
            StatusCode::CONFLICT,
            "Key conflicts with another document",
        )
        .await;
        assert_eq!(before, snapshot(&store).await, "{uri}");
    }
    for uri in [
        "/pull/docs/d/n",
        "/pull/docs/x",
        "/pull/docs/d?withKeyring=1",
    ] {
        assert_eq!(send(&app, get(uri)).await.status(), StatusCode::OK, "{uri}");
    }
}
