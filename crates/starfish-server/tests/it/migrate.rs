//! `starfish migrate`: a `shared` config namespace moves to `prefixed` keys while two
//! routers over one store serve it; nothing acknowledged is lost, every document,
//! log and blob reads the same after, and an interrupted migration goes on from
//! where it stopped.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use starfish_server::migrate::{
    MigrateError, MigrateOptions, MigrateReport, Phase, abort_migration, migrate_to_prefixed,
    migration_status,
};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, TenantOptions, create_sync_router};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Routers notice a migration's phase within this.
const REFRESH: Duration = Duration::from_millis(50);

/// The reference's own example: two namespaces with the same storage paths, which in
/// `shared` isolation are the same documents.
fn config() -> SyncConfig {
    let collections = json!([
        {"name": "notes", "storagePath": "notes/{id}",
         "readRoles": ["public"], "writeRoles": ["public"]},
        {"name": "feed", "storagePath": "feed/{id}",
         "readRoles": ["public"], "writeRoles": ["public"],
         "appendOnly": {"requireAuthorSignature": false, "chunkSize": 4}},
        {"name": "files", "storagePath": "files/{id}",
         "readRoles": ["public"], "writeRoles": ["public"],
         "allowedMimeTypes": ["image/png"], "maxBodyBytes": 4096}
    ]);
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaces": {
            "acme": {"collections": collections},
            "globex": {"collections": collections},
            "solo": {"collections": collections, "isolation": "prefixed"}
        }
    }))
    .unwrap()
}

fn router(store: &DocStore) -> Router {
    let mut tenants = TenantOptions::default();
    tenants.refresh = REFRESH;
    create_sync_router(SyncOptions::new(config(), store.clone()).with_tenant_options(tenants))
        .unwrap()
}

fn options() -> MigrateOptions {
    MigrateOptions::default()
        .with_grace(REFRESH * 6)
        .with_checkpoint_every(7)
}

fn upload(uri: &str, bytes: &[u8]) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "image/png")
        .header("content-length", bytes.len())
        .body(Body::from(bytes.to_vec()))
        .unwrap()
}

/// Status, the headers a client relies on, and the body of a pull (a JSON body
/// without the server's clock, `timestamp`).
async fn pulled(app: &Router, uri: &str) -> (StatusCode, Option<String>, String, Vec<u8>) {
    let res = send(app, get(uri)).await;
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (etag, content_type) = (header("etag"), header("content-type").unwrap_or_default());
    let status = res.status();
    let mut body = body_bytes(res).await;
    if let Ok(Value::Object(mut json)) = serde_json::from_slice::<Value>(&body) {
        json.remove("timestamp");
        body = serde_json::to_vec(&json).unwrap();
    }
    (status, etag, content_type, body)
}

/// Seeds namespace acme (through `app`) and returns the pull URIs that hold data.
async fn seed(app: &Router, notes: usize) -> Vec<String> {
    let mut uris = Vec::new();
    for i in 0..notes {
        let uri = format!("/acme/push/notes/n{i}");
        let (status, _) = push_doc(
            app,
            &uri,
            json!({"i": i, "text": format!("note {i}")}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        uris.push(format!("/acme/pull/notes/n{i}"));
    }
    for i in 0..10 {
        let res = send(app, push("/acme/push/feed/f", &json!({"data": {"i": i}}))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    uris.push("/acme/pull/feed/f?checkpoint=0".into());
    uris.push("/acme/pull/feed/f?last=3".into());
    let res = send(
        app,
        upload("/acme/push/files/a", b"\x89PNG\r\n\x1a\nmigrated"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    uris.push("/acme/pull/files/a".into());
    uris
}

async fn raw_keys(store: &DocStore) -> Vec<String> {
    use futures::StreamExt;
    let mut keys: Vec<String> = store
        .inner()
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    keys.sort();
    keys
}

/// Pushes `notes/live` again and again through both routers until `stop`, waiting
/// out refusals; returns the last acknowledged document and how many were refused.
async fn writer(apps: [Router; 2], stop: Arc<AtomicBool>) -> (Value, usize) {
    let mut base: Option<String> = None;
    let mut last = Value::Null;
    let mut refused = 0;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let app = &apps[(n % 2) as usize];
        let data = json!({"n": n});
        let res = send(
            app,
            push(
                "/acme/push/notes/live",
                &json!({"data": data, "baseHash": base}),
            ),
        )
        .await;
        match res.status() {
            StatusCode::OK => {
                let body = json_body(res).await;
                base = Some(body["hash"].as_str().unwrap().to_owned());
                last = json!({"data": data, "hash": base});
                n += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(res.headers()["retry-after"], "2");
                assert_eq!(
                    json_body(res).await,
                    json!({"error": "Namespace is being migrated"})
                );
                refused += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("push answered {other}: {:?}", json_body(res).await),
        }
        tokio::task::yield_now().await;
    }
    (last, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_moves_to_prefixed_keys_while_two_routers_serve_it() {
    let store = DocStore::memory();
    let (r1, r2) = (router(&store), router(&store));
    let uris = seed(&r1, 30).await;
    // Shared, as in the reference: globex reads acme's document.
    let acme = pulled(&r2, "/acme/pull/notes/n0").await;
    assert_eq!(pulled(&r2, "/globex/pull/notes/n0").await, acme);
    let mut before = Vec::new();
    for uri in &uris {
        before.push(pulled(&r2, uri).await);
    }
    let shared_before = stored(&store, "notes/n0").await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writing = tokio::spawn(writer([r1.clone(), r2.clone()], stop.clone()));
    tokio::time::sleep(REFRESH).await;
    let report = migrate_to_prefixed(&config(), &store, "acme", &options(), |_| {
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(report.phase, Phase::Done);
    assert!(report.copied >= 30, "{report:?}");
    // Both routers serve the new keys within the refresh; the writer goes on.
    tokio::time::sleep(REFRESH * 3).await;
    stop.store(true, Ordering::Relaxed);
    let (last, refused) = writing.await.unwrap();
    assert!(refused > 0, "writes were frozen for the last pass");

    // Nothing acknowledged was lost, and both routers agree.
    for app in [&r1, &r2] {
        let live = json_body(send(app, get("/acme/pull/notes/live")).await).await;
        assert_eq!(live["data"], last["data"]);
        assert_eq!(live["hash"], last["hash"]);
    }
    // Every document, log and blob reads exactly as before.
    for (uri, was) in uris.iter().zip(&before) {
        for app in [&r1, &r2] {
            assert_eq!(&pulled(app, uri).await, was, "{uri}");
        }
    }
    // The data now lives under the namespace's prefix, and acme is isolated: a write
    // to it no longer reaches globex or the shared key.
    let keys = raw_keys(&store).await;
    for key in [
        "_starfish/ns/acme/notes/n0",
        "_starfish/ns/acme/notes/live",
        "_starfish/ns/acme/feed/f",
        "_starfish/ns/acme/files/a",
        "_starfish/ns/acme/files/a.__meta__",
    ] {
        assert!(keys.iter().any(|k| k == key), "{key} in {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with("_starfish/ns/acme/feed/f__seg/"))
    );
    let n0 = json_body(send(&r1, get("/acme/pull/notes/n0")).await).await;
    let (status, _) = push_doc(
        &r1,
        "/acme/push/notes/n0",
        json!({"moved": true}),
        n0["hash"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored(&store, "notes/n0").await.unwrap(), shared_before);
    assert_eq!(pulled(&r2, "/globex/pull/notes/n0").await, acme);
    let moved = json_body(send(&r2, get("/acme/pull/notes/n0")).await).await;
    assert_eq!(moved["data"], json!({"moved": true}));
    // Done is final.
    assert!(matches!(
        migrate_to_prefixed(&config(), &store, "acme", &options(), |_| {
            ControlFlow::Continue(())
        })
        .await,
        Err(MigrateError::AlreadyDone(_))
    ));
    assert!(matches!(
        abort_migration(&store, "acme").await,
        Err(MigrateError::AlreadyDone(_))
    ));
}

#[tokio::test]
async fn an_interrupted_migration_goes_on_from_where_it_stopped() {
    let store = DocStore::memory();
    let app = router(&store);
    for i in 0..20 {
        let (status, _) = push_doc(
            &app,
            &format!("/acme/push/notes/n{i:02}"),
            json!({"i": i}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Stopped after five objects: the position is saved.
    let stopped = migrate_to_prefixed(&config(), &store, "acme", &options(), |r| {
        if r.examined == 5 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await;
    assert!(matches!(stopped, Err(MigrateError::Stopped)), "{stopped:?}");
    let status = migration_status(&store).await.unwrap();
    assert_eq!(status["acme"].phase, Phase::Copying);
    assert_eq!(status["acme"].cursor.as_deref(), Some("notes/n04"));
    // Still served from the shared keys, writes included.
    let (status, _) = push_doc(&app, "/acme/push/notes/extra", json!({"late": 1}), None).await;
    assert_eq!(status, StatusCode::OK);

    // The next run skips what was copied, then catches up with everything (21
    // objects), and is stopped once frozen.
    let seen: Arc<Mutex<Option<MigrateReport>>> = Arc::default();
    let at_freeze = seen.clone();
    let stopped = migrate_to_prefixed(&config(), &store, "acme", &options(), move |r| {
        if r.phase == Phase::Frozen {
            *at_freeze.lock().unwrap() = Some(r.clone());
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await;
    assert!(matches!(stopped, Err(MigrateError::Stopped)));
    let frozen = seen.lock().unwrap().clone().unwrap();
    assert_eq!(frozen.examined, 15 + 21, "{frozen:?}");
    assert_eq!(frozen.copied, 16, "{frozen:?}");

    // Frozen: reads are served, writes wait; nothing was written anywhere.
    tokio::time::sleep(REFRESH * 2).await;
    let keys = raw_keys(&store).await;
    let res = send(
        &app,
        push("/acme/push/notes/n00", &json!({"data": {"x": 1}})),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "Namespace is being migrated",
    )
    .await;
    let res = send(&app, push("/acme/push/feed/x", &json!({"data": {"i": 1}}))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let res = send(&app, upload("/acme/push/files/x", b"\x89PNG\r\n\x1a\n")).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(raw_keys(&store).await, keys);
    let n00 = json_body(send(&app, get("/acme/pull/notes/n00")).await).await;
    assert_eq!(n00["data"], json!({"i": 0}));
    // Other namespaces write as usual.
    let (status, _) = push_doc(&app, "/globex/push/notes/g", json!({"g": 1}), None).await;
    assert_eq!(status, StatusCode::OK);

    // The last run finishes: writes land under the prefix.
    let done = migrate_to_prefixed(&config(), &store, "acme", &options(), |_| {
        ControlFlow::Continue(())
    })
    .await
    .unwrap();
    assert_eq!(done.phase, Phase::Done);
    tokio::time::sleep(REFRESH * 2).await;
    let (status, _) = push_doc(
        &app,
        "/acme/push/notes/n00",
        json!({"x": 2}),
        n00["hash"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored(&store, "_starfish/ns/acme/notes/n00").await.unwrap()["data"],
        json!({"x": 2})
    );
    assert_eq!(
        stored(&store, "notes/n00").await.unwrap()["data"],
        json!({"i": 0})
    );
    let extra = json_body(send(&app, get("/acme/pull/notes/extra")).await).await;
    assert_eq!(extra["data"], json!({"late": 1}));
}

#[tokio::test]
async fn an_aborted_migration_goes_back_to_the_shared_keys() {
    let store = DocStore::memory();
    let app = router(&store);
    let (status, _) = push_doc(&app, "/acme/push/notes/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let stopped = migrate_to_prefixed(&config(), &store, "acme", &options(), |r| {
        if r.phase == Phase::Frozen {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await;
    assert!(matches!(stopped, Err(MigrateError::Stopped)));
    abort_migration(&store, "acme").await.unwrap();
    assert!(migration_status(&store).await.unwrap().is_empty());
    tokio::time::sleep(REFRESH * 2).await;
    let a = json_body(send(&app, get("/acme/pull/notes/a")).await).await;
    let (status, _) = push_doc(
        &app,
        "/acme/push/notes/a",
        json!({"v": 2}),
        a["hash"].as_str(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored(&store, "notes/a").await.unwrap()["data"],
        json!({"v": 2})
    );
    assert!(matches!(
        abort_migration(&store, "acme").await,
        Err(MigrateError::NotStarted(_))
    ));
    // Only a shared namespace of the config can be migrated.
    for (name, is) in [("nope", "unknown"), ("solo", "not shared")] {
        let e = migrate_to_prefixed(&config(), &store, name, &options(), |_| {
            ControlFlow::Continue(())
        })
        .await
        .unwrap_err();
        match (is, e) {
            ("unknown", MigrateError::UnknownNamespace(_))
            | ("not shared", MigrateError::NotShared(_)) => {}
            (_, e) => panic!("{name}: {e:?}"),
        }
    }
}

#[tokio::test]
async fn an_upload_admitted_before_the_freeze_does_not_land_after_it() {
    let store = DocStore::memory();
    let app = router(&store);
    let (status, _) = push_doc(&app, "/acme/push/notes/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    // A slow upload starts while the namespace is served from its shared keys.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(1);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let request = Request::post("/acme/push/files/slow")
        .header("content-type", "image/png")
        .header("content-length", 16)
        .body(body)
        .unwrap();
    let upload = tokio::spawn({
        let app = app.clone();
        async move { send(&app, request).await }
    });
    tx.send(Ok(bytes::Bytes::from_static(b"\x89PNG\r\n\x1a\n")))
        .await
        .unwrap();
    // Meanwhile the migration freezes the namespace, and the router hears of it.
    let stopped = migrate_to_prefixed(&config(), &store, "acme", &options(), |r| {
        if r.phase == Phase::Frozen {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .await;
    assert!(matches!(stopped, Err(MigrateError::Stopped)));
    tokio::time::sleep(REFRESH * 2).await;
    assert_eq!(
        send(&app, get("/acme/pull/notes/a")).await.status(),
        StatusCode::OK
    );
    // The upload ends after the freeze: refused, and nothing landed.
    tx.send(Ok(bytes::Bytes::from_static(b"late end")))
        .await
        .unwrap();
    drop(tx);
    let res = upload.await.unwrap();
    assert_error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "Namespace is being migrated",
    )
    .await;
    let keys = raw_keys(&store).await;
    assert!(!keys.iter().any(|k| k.starts_with("files/")), "{keys:?}");
}
