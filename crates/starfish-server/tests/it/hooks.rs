//! The embedder's hooks: `authorize` has the last word on every access (each bundle
//! member and batch entry too), and `after_write` hears of every accepted write once
//! and of no refused one.

use crate::common;

use axum::http::{Request, StatusCode};
use common::*;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use starfish_server::access::{AccessRequest, Action, Authorize, HookError};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{
    AfterWrite, SyncConfig, SyncOptions, WriteAction, WriteEvent, create_sync_router,
};
use std::sync::{Arc, Mutex};

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "profile", "storagePath": "p/{identity}", "bundle": "user", "readRoles": ["public"], "writeRoles": ["self"]},
    {"name": "prefs", "storagePath": "p/{identity}", "bundle": "user", "readRoles": ["public"], "writeRoles": ["self"]},
    {"name": "log", "storagePath": "log/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"type": "by_timestamp", "requireAuthorSignature": false}},
    {"name": "pics", "storagePath": "pics/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["image/*"], "maxBodyBytes": 1024},
    {"name": "queue", "storagePath": "q/{topic}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"persist": false, "requireAuthorSignature": false}}
  ],
  "namespaces": {"acme": {"collections": [
    {"name": "docs", "storagePath": "acme/docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
  ]}}
}"#;

fn options() -> SyncOptions {
    SyncOptions::new(
        SyncConfig::from_json_str(CONFIG).unwrap(),
        DocStore::memory(),
    )
    .with_clock(Arc::new(ManualClock::new(T0)))
}

/// (namespace, collection, action, key) of one question to the hook.
type Asked = (Option<String>, String, Action, String);

/// What an event says, borrowed: (namespace, collection, key, hash, action, identity).
type Seen<'a> = (
    Option<&'a str>,
    &'a str,
    &'a str,
    &'a str,
    WriteAction,
    Option<&'a str>,
);

/// Refuses one identity everywhere, and every access to the `prefs` bundle member;
/// records what it was asked.
struct Refuse {
    identity: String,
    asked: Mutex<Vec<Asked>>,
}

impl Authorize for Refuse {
    fn authorize<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<bool, HookError>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push((
                request.namespace().map(str::to_owned),
                request.collection().to_owned(),
                request.action(),
                request.key().to_owned(),
            ));
            let refused = request.caller().identity() == Some(self.identity.as_str())
                || request.collection() == "prefs";
            Ok(!refused)
        })
    }
}

#[tokio::test]
async fn an_authorize_hook_refuses_one_identity_and_sees_every_key() {
    let (a, b) = (user(1), user(2));
    let hook = Arc::new(Refuse {
        identity: b.id.clone(),
        asked: Mutex::new(Vec::new()),
    });
    let app = create_sync_router(options().with_authorize(hook.clone())).unwrap();

    // Alice is let through; Bob, refused by the hook alone, gets 403 and stores nothing.
    let res = send(
        &app,
        Signed::push("/push/docs/x", &a, &json!({"data": {"v": 1}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(
        &app,
        Signed::push("/push/docs/y", &b, &json!({"data": {"v": 2}})).build(),
    )
    .await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    let res = send(&app, Signed::get("/pull/docs/x", &b).build()).await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    assert_eq!(
        json_body(send(&app, get("/pull/docs/y")).await).await["hash"],
        "",
        "a refused push stores nothing"
    );
    // The hook is asked with the resolved key, the namespace and the action.
    send(&app, get("/acme/pull/acme/docs/z")).await;
    let asked = hook.asked.lock().unwrap().clone();
    assert!(asked.contains(&(None, "docs".into(), Action::Push, "docs/x".into())));
    assert!(asked.contains(&(
        Some("acme".into()),
        "docs".into(),
        Action::Pull,
        "acme/docs/z".into()
    )));

    // Per bundle member and per batch entry: the refused member is left out.
    for (member, data) in [
        ("profile", json!({"n": "Ann"})),
        ("prefs", json!({"dark": true})),
    ] {
        let uri = format!("/push/p/{}/{member}", a.id);
        let res = send(&app, Signed::push(&uri, &a, &json!({"data": data})).build()).await;
        // `prefs` writes are refused by the hook too.
        let want = if member == "prefs" {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::OK
        };
        assert_eq!(res.status(), want, "{member}");
    }
    let bundle = json_body(send(&app, get(&format!("/pull/p/{}", a.id))).await).await;
    assert_eq!(
        bundle["collections"],
        json!({"profile": {"data": {"n": "Ann"}, "hash": bundle["collections"]["profile"]["hash"]}})
    );
    let batch = json_body(
        send(
            &app,
            Signed::get("/batch/pull?collections=docs,prefs&params=%7B%22docs%22%3A%5B%7B%22id%22%3A%22x%22%7D%5D%7D", &a).build(),
        )
        .await,
    )
    .await;
    assert_eq!(batch["collections"]["docs"][0]["data"], json!({"v": 1}));
    assert_eq!(
        batch["collections"]["prefs"],
        json!([{"error": "Forbidden"}])
    );
}

/// Records every event.
#[derive(Default)]
struct Record(Mutex<Vec<WriteEvent>>);

impl AfterWrite for Record {
    fn after_write(&self, event: &WriteEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

fn blob(uri: &str, content_type: &str, bytes: &'static [u8]) -> Request<axum::body::Body> {
    Request::post(uri)
        .header("content-type", content_type)
        .header("content-length", bytes.len())
        .body(axum::body::Body::from(bytes))
        .unwrap()
}

#[tokio::test]
async fn after_write_hears_every_accepted_write_once_and_no_refused_one() {
    let a = user(1);
    let record = Arc::new(Record::default());
    let app = create_sync_router(options().with_after_write(record.clone())).unwrap();

    // Accepted: a create, an update, an append, a blob, a namespaced write, a signed write.
    let (_, created) = push_doc(&app, "/push/docs/a", json!({"v": 1}), None).await;
    let created = created["hash"].as_str().unwrap().to_owned();
    let (_, updated) = push_doc(&app, "/push/docs/a", json!({"v": 2}), Some(&created)).await;
    let appended =
        json_body(send(&app, push("/push/log/l", &json!({"data": {"m": 1}}))).await).await;
    let res = send(&app, blob("/push/pics/p", "image/png", b"\x89PNG")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let pic = json_body(res).await;
    let (status, ns) = push_doc(&app, "/acme/push/acme/docs/n", json!({"v": 3}), None).await;
    assert_eq!(status, StatusCode::OK);
    let uri = format!("/push/users/{}/notes", a.id);
    let res = send(
        &app,
        Signed::push(&uri, &a, &json!({"data": {"t": 1}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let note = json_body(res).await;

    // Refused: a conflict, a bad body, a wrong media type, an over-size blob, a 403, a 404.
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"v": 9}), Some("stale")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        send(&app, push_raw("/push/docs/b", "[1]")).await.status(),
        StatusCode::BAD_REQUEST
    );
    let res = send(&app, blob("/push/docs/c", "text/plain", b"{}")).await;
    assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let res = send(&app, blob("/push/pics/q", "image/png", &[0u8; 2048])).await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = send(
        &app,
        push(&format!("/push/users/{}/notes", a.id), &json!({"data": {}})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        send(&app, push("/push/nope/x", &json!({"data": {}})))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let events = record.0.lock().unwrap().clone();
    let seen: Vec<Seen<'_>> = events
        .iter()
        .map(|e| {
            (
                e.namespace.as_deref(),
                &*e.collection,
                &*e.key,
                e.hash.as_str(),
                e.action,
                e.identity.as_deref(),
            )
        })
        .collect();
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    let (updated, appended, pic, ns, note) = (
        s(&updated["hash"]),
        s(&appended["hash"]),
        s(&pic["hash"]),
        s(&ns["hash"]),
        s(&note["hash"]),
    );
    let notes_key = format!("users/{}/notes", a.id);
    assert_eq!(
        seen,
        vec![
            (
                None,
                "docs",
                "docs/a",
                created.as_str(),
                WriteAction::Push,
                None
            ),
            (
                None,
                "docs",
                "docs/a",
                updated.as_str(),
                WriteAction::Push,
                None
            ),
            (
                None,
                "log",
                "log/l",
                appended.as_str(),
                WriteAction::Append,
                None
            ),
            (
                None,
                "pics",
                "pics/p",
                pic.as_str(),
                WriteAction::Blob,
                None
            ),
            (
                Some("acme"),
                "docs",
                "acme/docs/n",
                ns.as_str(),
                WriteAction::Push,
                None
            ),
            (
                None,
                "notes",
                notes_key.as_str(),
                note.as_str(),
                WriteAction::Push,
                Some(a.id.as_str())
            ),
        ]
    );
    assert!(events.iter().all(|e| e.timestamp >= T0));
}

/// Records every event, with the pushed data.
#[derive(Default)]
struct RecordBodies(Mutex<Vec<WriteEvent>>);

impl AfterWrite for RecordBodies {
    fn after_write(&self, event: &WriteEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
    fn wants_body(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn events_carry_the_path_parameters_and_the_data_as_sent_only_when_asked() {
    let plain = Arc::new(Record::default());
    let app = create_sync_router(options().with_after_write(plain.clone())).unwrap();
    push_doc(&app, "/push/docs/a", json!({"v": 1}), None).await;
    let event = plain.0.lock().unwrap()[0].clone();
    assert_eq!(event.param("id"), Some("a"));
    assert_eq!(event.body, None, "no data unless the hook asks");

    let bodies = Arc::new(RecordBodies::default());
    let app = create_sync_router(options().with_after_write(bodies.clone())).unwrap();
    let sent = json!({"v": 2, "nested": {"__proto__": {"x": 1}, "k": "v"}});
    push_doc(&app, "/push/docs/b", sent.clone(), None).await;
    send(&app, push("/push/log/l", &json!({"data": {"m": 1}}))).await;
    let events = bodies.0.lock().unwrap().clone();
    assert_eq!(events.len(), 2);
    assert_eq!(
        Value::Object((*events[0].body.clone().unwrap()).clone()),
        sent,
        "as sent, before sanitising"
    );
    assert_eq!(
        events[1].body.as_deref().map(|b| Value::Object(b.clone())),
        Some(json!({"m": 1}))
    );
    assert!(events.iter().all(|e| e.stored));
}

#[tokio::test]
async fn a_queue_only_collection_tells_its_hooks_and_stores_nothing() {
    let store = DocStore::memory();
    let record = Arc::new(RecordBodies::default());
    let app = create_sync_router(
        SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_after_write(record.clone()),
    )
    .unwrap();
    for n in 0..3 {
        let res = send(&app, push("/push/q/orders", &json!({"data": {"n": n}}))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let body = json_body(res).await;
        let expected = starfish_protocol::sha256_hex(format!("{{\"n\":{n}}}").as_bytes());
        assert_eq!(
            body["hash"],
            expected.as_str(),
            "the reference's hash of the item"
        );
    }
    // Nothing stored: the store holds no object at all.
    let listed: Vec<_> = futures::StreamExt::collect(store.inner().list(None)).await;
    assert!(listed.is_empty(), "{listed:?}");
    // Every pull reads as a document never written, whatever its bounds.
    for uri in [
        "/pull/q/orders",
        "/pull/q/orders?last=10",
        "/pull/q/orders?since=0",
    ] {
        let res = send(&app, get(uri)).await;
        assert_eq!(res.status(), StatusCode::OK, "{uri}");
        let body = json_body(res).await;
        assert_eq!(
            (&body["data"], &body["hash"]),
            (&json!({}), &json!("")),
            "{uri}"
        );
    }
    let events = record.0.lock().unwrap().clone();
    assert_eq!(events.len(), 3);
    assert!(
        events
            .iter()
            .all(|e| !e.stored && e.action == WriteAction::Append)
    );
    assert_eq!(events[2].param("topic"), Some("orders"));
    assert_eq!(
        events[2].body.as_deref().map(|b| Value::Object(b.clone())),
        Some(json!({"n": 2}))
    );
}
