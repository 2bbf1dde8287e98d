//! Projections: a source collection's documents kept as entries of an index
//! document, right while two routers over one store write the sources at once,
//! rebuilt by `reproject` after the index is deleted, bounded, and isolated per
//! namespace.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use object_store::ObjectStoreExt as _;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::projections::{IndexProjection, Projections};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const ADMIN: &str = "admin-key-0123456789abcdef0123456789";

fn config() -> SyncConfig {
    let collections = json!([
        {"name": "cards", "storagePath": "boards/{board}/cards/{id}", "readRoles": ["public"],
         "writeRoles": ["public"]},
        {"name": "index", "storagePath": "boards/{board}/index", "readRoles": ["public"],
         "writeRoles": ["public"], "pullOnly": true}
    ]);
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": collections,
        "namespaces": {"acme": {"isolation": "prefixed", "collections": collections}}
    }))
    .unwrap()
}

fn node(store: &DocStore, max_items: usize) -> Router {
    let index = IndexProjection::new("cards", "boards/{board}/index", vec!["title".into()])
        .unwrap()
        .with_max_items(max_items);
    create_sync_router(
        SyncOptions::new(config(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_admin_key(ADMIN)
            .with_projections(Projections::new().with(Arc::new(index))),
    )
    .unwrap()
}

/// Writes `title` to card `id`, on its current hash, until it is accepted.
async fn write(app: &Router, prefix: &str, id: &str, title: &str) {
    let uri = format!("{prefix}/boards/b1/cards/{id}");
    loop {
        let current =
            json_body(send(app, get(&format!("{prefix}/pull/boards/b1/cards/{id}"))).await).await;
        let base = current["hash"]
            .as_str()
            .filter(|h| !h.is_empty())
            .map(str::to_owned);
        let push_uri = uri.replacen("/boards", "/push/boards", 1);
        let (status, _) = push_doc(app, &push_uri, json!({"title": title}), base.as_deref()).await;
        match status {
            StatusCode::OK => return,
            StatusCode::CONFLICT => {}
            other => panic!("{other}"),
        }
    }
}

/// The index as the sources say it should be: one entry per card, sorted by id.
async fn expected(app: &Router, prefix: &str, ids: &[String]) -> Value {
    let mut items = Vec::new();
    let mut ids = ids.to_vec();
    ids.sort();
    for id in ids {
        let card =
            json_body(send(app, get(&format!("{prefix}/pull/boards/b1/cards/{id}"))).await).await;
        items.push(json!({
            "id": id, "key": format!("boards/b1/cards/{id}"), "hash": card["hash"],
            "timestamp": card["timestamp"], "title": card["data"]["title"],
        }));
    }
    Value::Array(items)
}

async fn index(app: &Router, prefix: &str) -> Value {
    json_body(send(app, get(&format!("{prefix}/pull/boards/b1/index"))).await).await["data"]["items"].clone()
}

/// Calls reproject `page` documents at a time until done; the errors reported.
async fn reproject(app: &Router, namespace: &str, page: usize) -> Vec<Value> {
    let mut after = String::new();
    let mut errors = Vec::new();
    loop {
        let req = Request::post(format!(
            "/_starfish/admin/namespaces/{namespace}/reproject/cards?limit={page}{after}"
        ))
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
        let res = send(app, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let report = json_body(res).await;
        errors.extend(report["errors"].as_array().unwrap().iter().cloned());
        if report["done"] == true {
            return errors;
        }
        after = format!("&after={}", report["after"].as_str().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_routers_writing_the_sources_at_once_leave_the_index_right() {
    let store = DocStore::memory();
    let (one, two) = (node(&store, 1000), node(&store, 1000));
    let ids: Vec<String> = (0..8).map(|n| format!("c{n}")).collect();
    // 16 writers, 8 on each router, each card written by one writer on each
    // router, 5 times each.
    let mut tasks = Vec::new();
    for (w, id) in ids.iter().chain(ids.iter()).enumerate() {
        let app = if w < ids.len() {
            one.clone()
        } else {
            two.clone()
        };
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                write(&app, "", &id, &format!("w{w} r{round}")).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let want = expected(&one, "", &ids).await;
    assert_eq!(index(&one, "").await, want);
    assert_eq!(index(&two, "").await, want);

    // Deleted: rebuilt by reproject, three cards a call.
    store
        .inner()
        .delete(&object_store::path::Path::from("boards/b1/index"))
        .await
        .unwrap();
    assert_eq!(index(&one, "").await, Value::Null);
    assert!(reproject(&two, "~", 3).await.is_empty());
    assert_eq!(index(&one, "").await, want);
    // Nobody may push to the index itself.
    let res = send(
        &one,
        push("/push/boards/b1/index", &json!({"data": {"items": []}})),
    )
    .await;
    assert_ne!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_index_is_bounded_and_says_what_it_left_out() {
    let store = DocStore::memory();
    let app = node(&store, 3);
    let ids: Vec<String> = (0..5).map(|n| format!("c{n}")).collect();
    for id in &ids {
        write(&app, "", id, "t").await;
    }
    // The first three have entries; the writes of the others stood.
    let items = index(&app, "").await;
    assert_eq!(items.as_array().unwrap().len(), 3);
    assert_eq!(items, expected(&app, "", &ids[..3]).await);
    assert_eq!(
        send(&app, get("/pull/boards/b1/cards/c4")).await.status(),
        StatusCode::OK
    );
    let errors = reproject(&app, "~", 500).await;
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].as_str().unwrap().contains("is full (3 entries"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_namespaces_writes_project_into_its_own_part_only() {
    let store = DocStore::memory();
    let app = node(&store, 1000);
    write(&app, "/acme", "c1", "theirs").await;
    let ids = vec!["c1".to_owned()];
    assert_eq!(
        index(&app, "/acme").await,
        expected(&app, "/acme", &ids).await
    );
    assert_eq!(index(&app, "").await, Value::Null);
    assert!(stored(&store, "boards/b1/index").await.is_none());
    // Its own reproject, on its own part.
    store
        .inner()
        .delete(&object_store::path::Path::from(
            "_starfish/t/acme/boards/b1/index",
        ))
        .await
        .ok();
    reproject(&app, "acme", 10).await;
    assert_eq!(
        index(&app, "/acme").await,
        expected(&app, "/acme", &ids).await
    );
    assert_eq!(index(&app, "").await, Value::Null);
}
