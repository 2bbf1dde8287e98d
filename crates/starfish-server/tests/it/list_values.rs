//! Listing with values (`GET /list/<prefix>?include=values`): each listed
//! document's pull body as the caller may read it, per document, in bounded pages,
//! consistent while writers change the documents.

use crate::common;

use axum::http::StatusCode;
use common::*;
use futures::FutureExt as _;
use serde_json::{Value, json};
use starfish_protocol::compute_hash;
use starfish_server::access::{AccessRequest, Action, Authorize, HookError};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "cards", "storagePath": "boards/{board}/cards/{id}", "readRoles": ["public"],
     "writeRoles": ["public"], "listable": true, "maxBodyBytes": 200000,
     "fieldPermissions": {"secret": {"readRoles": ["cap:read:secret"]}}},
    {"name": "feed", "storagePath": "feeds/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "listable": true, "appendOnly": {}},
    {"name": "reports", "storagePath": "reports/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "listable": true, "pushOnly": true},
    {"name": "metered", "storagePath": "metered/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "listable": true, "rateLimit": {"pull": {"windowMs": 60000, "maxRequests": 3}}}
  ]
}"#;

/// Refuses pulls of any card whose id starts with `hidden` (writes go through).
struct HideSome;

impl Authorize for HideSome {
    fn authorize<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> futures::future::BoxFuture<'a, Result<bool, HookError>> {
        let hidden = request.action() == Action::Pull
            && request
                .param("id")
                .is_some_and(|id| id.starts_with("hidden"));
        async move { Ok(!hidden) }.boxed()
    }
}

fn app() -> axum::Router {
    create_sync_router(
        SyncOptions::new(
            SyncConfig::from_json_str(CONFIG).unwrap(),
            DocStore::memory(),
        )
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_authorize(Arc::new(HideSome)),
    )
    .unwrap()
}

async fn list(app: &axum::Router, uri: &str) -> Value {
    let res = send(app, get(uri)).await;
    assert_eq!(res.status(), StatusCode::OK, "{uri}");
    json_body(res).await
}

#[tokio::test]
async fn values_are_each_documents_pull_as_the_caller_may_read_it() {
    let app = app();
    for (id, data) in [
        ("a", json!({"title": "A", "secret": "s-a"})),
        ("b", json!({"title": "B"})),
        ("hidden-c", json!({"title": "C"})),
    ] {
        let (status, _) = push_doc(&app, &format!("/push/boards/b1/cards/{id}"), data, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let page = list(&app, "/list/boards/b1/cards?include=values").await;
    assert_eq!(page["items"], json!(["a", "b", "hidden-c"]));
    assert_eq!(page["hasMore"], false);
    let values = page["values"].as_array().unwrap();
    // As a pull answers it: the field the caller may not read is left out.
    let pull_a = json_body(send(&app, get("/pull/boards/b1/cards/a")).await).await;
    assert_eq!(values[0], pull_a);
    assert_eq!(values[0]["data"], json!({"title": "A"}));
    assert_eq!(values[1]["data"], json!({"title": "B"}));
    // The read rules, document by document: the hook refuses this one.
    assert_eq!(values[2], Value::Null);
    assert_eq!(
        send(&app, get("/pull/boards/b1/cards/hidden-c"))
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    // Without include, the reference's answer, unchanged.
    let plain = list(&app, "/list/boards/b1/cards").await;
    assert_eq!(
        plain,
        json!({"items": ["a", "b", "hidden-c"], "hasMore": false})
    );
}

#[tokio::test]
async fn a_page_of_values_is_bounded_in_count_and_bytes_and_pages_cover_all() {
    let app = app();
    // 60 documents of ~100 KB: 6 MB of values, over a page's 4 MiB.
    let filler = "x".repeat(100_000);
    for n in 0..60 {
        let uri = format!("/push/boards/big/cards/c{n:02}");
        let (status, _) = push_doc(&app, &uri, json!({"n": n, "fill": filler}), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = list(
            &app,
            &format!("/list/boards/big/cards?include=values&limit=1000{after}"),
        )
        .await;
        pages += 1;
        let items = page["items"].as_array().unwrap();
        let values = page["values"].as_array().unwrap();
        assert_eq!(items.len(), values.len());
        assert!(items.len() <= 100);
        let bytes: usize = values.iter().map(|v| v.to_string().len()).sum();
        assert!(bytes <= 4 << 20, "a page of {bytes} bytes");
        for (item, value) in items.iter().zip(values) {
            seen.push(item.as_str().unwrap().to_owned());
            assert_eq!(value["data"]["fill"].as_str().unwrap().len(), 100_000);
        }
        if page["hasMore"] == false {
            break;
        }
        after = format!("&after={}", items.last().unwrap().as_str().unwrap());
    }
    let expected: Vec<String> = (0..60).map(|n| format!("c{n:02}")).collect();
    assert_eq!(seen, expected);
    assert!(pages >= 2, "6 MB of values in one page");
    // The count bound: at most 100 values however large the limit.
    for n in 0..120 {
        let (status, _) = push_doc(
            &app,
            &format!("/push/boards/many/cards/m{n:03}"),
            json!({"n": n}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let page = list(&app, "/list/boards/many/cards?include=values&limit=1000").await;
    assert_eq!(page["values"].as_array().unwrap().len(), 100);
    assert_eq!(page["hasMore"], true);
}

#[tokio::test]
async fn include_is_checked_and_refused_for_logs() {
    let app = app();
    for uri in [
        "/list/boards/b1/cards?include=value",
        "/list/boards/b1/cards?include=",
        "/list/feeds?include=values",
        // Never read back: listing its values would be a way around that.
        "/list/reports?include=values",
    ] {
        assert_error(
            send(&app, get(uri)).await,
            StatusCode::BAD_REQUEST,
            "Invalid include parameter",
        )
        .await;
    }
}

#[tokio::test]
async fn values_listed_while_writers_change_them_are_each_a_whole_version() {
    let app = app();
    for id in 0..10 {
        let uri = format!("/push/boards/live/cards/k{id}");
        let (status, _) = push_doc(&app, &uri, json!({"v": 0, "id": id}), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    // Ten writers, each rewriting its document 20 times on its last hash, while
    // ten readers list with values.
    let writers = (0..10).map(|id| {
        let app = app.clone();
        tokio::spawn(async move {
            let uri = format!("/pull/boards/live/cards/k{id}");
            for v in 1..=20 {
                let base = json_body(send(&app, get(&uri)).await).await["hash"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let push_uri = format!("/push/boards/live/cards/k{id}");
                let (status, _) =
                    push_doc(&app, &push_uri, json!({"v": v, "id": id}), Some(&base)).await;
                assert_eq!(status, StatusCode::OK);
            }
        })
    });
    let readers = (0..10).map(|_| {
        let app = app.clone();
        tokio::spawn(async move {
            for _ in 0..20 {
                let page = list(&app, "/list/boards/live/cards?include=values").await;
                assert_eq!(page["items"].as_array().unwrap().len(), 10);
                for value in page["values"].as_array().unwrap() {
                    // A whole version: its hash is its data's.
                    assert_eq!(value["hash"], compute_hash(&value["data"]), "{value}");
                }
            }
        })
    });
    for task in writers.chain(readers).collect::<Vec<_>>() {
        task.await.unwrap();
    }
    let page = list(&app, "/list/boards/live/cards?include=values").await;
    for value in page["values"].as_array().unwrap() {
        assert_eq!(value["data"]["v"], 20);
    }
}

#[tokio::test]
async fn each_value_is_a_pull_for_the_collections_rate_limit() {
    let app = app();
    for id in ["a", "b", "c", "d", "e"] {
        let (status, _) = push_doc(
            &app,
            &format!("/push/metered/{id}"),
            json!({"id": id}),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    // Three pulls a minute: the page ends after three values.
    let page = list(&app, "/list/metered?include=values").await;
    assert_eq!(page["items"], json!(["a", "b", "c"]));
    assert_eq!(page["values"].as_array().unwrap().len(), 3);
    assert_eq!(page["hasMore"], true);
    let res = send(&app, get("/list/metered?include=values&after=c")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&app, get("/pull/metered/d")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}
