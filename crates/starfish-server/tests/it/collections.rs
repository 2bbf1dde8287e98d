//! Bundles, batch pull, listing and rate limits over HTTP.

use crate::common;

use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "profile", "storagePath": "p/{identity}", "bundle": "user", "readRoles": ["public"], "writeRoles": ["self"]},
    {"name": "prefs", "storagePath": "p/{identity}", "bundle": "user", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"],
     "fieldPermissions": {"secret": {"readRoles": ["cap:read:secret"]}}},
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "days", "storagePath": "diary/{identity}/{day}", "readRoles": ["self"], "writeRoles": ["self"], "listable": true},
    {"name": "limited", "storagePath": "lim/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "rateLimit": {"pull": {"windowMs": 1000, "maxRequests": 2}, "push": {"windowMs": 1000, "maxRequests": 1, "bucket": "ip"}}}
  ],
  "namespaces": {"acme": {"collections": [
    {"name": "board", "storagePath": "acme/board/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
  ]}}
}"#;

fn app_with(clock: &ManualClock) -> axum::Router {
    let config = SyncConfig::from_json_str(CONFIG).unwrap();
    create_sync_router(
        SyncOptions::new(config, DocStore::memory()).with_clock(Arc::new(clock.clone())),
    )
    .unwrap()
}

fn app() -> axum::Router {
    app_with(&ManualClock::new(T0))
}

async fn signed_push(app: &axum::Router, u: &User, uri: &str, data: Value) -> Value {
    let res = send(app, Signed::push(uri, u, &json!({"data": data})).build()).await;
    assert_eq!(res.status(), StatusCode::OK, "{uri}");
    json_body(res).await
}

#[tokio::test]
async fn a_bundle_pull_shows_each_caller_only_what_it_may_read() {
    let app = app();
    let (a, b) = (user(1), user(2));
    signed_push(
        &app,
        &a,
        &format!("/push/p/{}/profile", a.id),
        json!({"name": "Ann"}),
    )
    .await;
    signed_push(
        &app,
        &a,
        &format!("/push/p/{}/prefs", a.id),
        json!({"dark": true}),
    )
    .await;
    let uri = format!("/pull/p/{}", a.id);

    let own = json_body(send(&app, Signed::get(&uri, &a).build()).await).await;
    assert_eq!(
        own["collections"]["profile"]["data"],
        json!({"name": "Ann"})
    );
    assert_eq!(own["collections"]["prefs"]["data"], json!({"dark": true}));

    // Another user and an anonymous caller see the public member only: prefs is absent,
    // not an error that would reveal it exists.
    let anon = json_body(send(&app, get(&uri)).await).await;
    assert_eq!(
        anon,
        json!({"collections": {"profile": own["collections"]["profile"]}, "timestamp": T0})
    );
    let res = send(&app, Signed::get(&uri, &b).build()).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "B's cap is bound to B's identity"
    );
    let body = json_body(send(&app, get(&format!("/pull/p/{}", b.id))).await).await;
    assert_eq!(
        body["collections"]["profile"],
        json!({"data": {}, "hash": ""})
    );
}

#[tokio::test]
async fn batch_pull_fans_out_in_request_order_with_standalone_hashes() {
    let app = app();
    let (a, b) = (user(1), user(2));
    for id in ["x", "y", "z"] {
        push_doc(&app, &format!("/push/docs/{id}"), json!({"id": id}), None).await;
    }
    signed_push(
        &app,
        &a,
        &format!("/push/users/{}/notes", a.id),
        json!({"n": 1, "secret": "s"}),
    )
    .await;
    signed_push(
        &app,
        &b,
        &format!("/push/users/{}/notes", b.id),
        json!({"n": 2}),
    )
    .await;

    let params = json!({"docs": [{"id": "z"}, {"id": "x"}, {"id": "missing"}, {"id": "../x"}, {}],
                        "notes": [{}, {"identity": b.id}]});
    let q = format!(
        "/batch/pull?collections=docs%2Cnotes%2Cnope%2Cdocs&params={}",
        percent(&params.to_string())
    );
    let res = send(&app, Signed::get(&q, &a).build()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_body(res).await;
    let docs = body["collections"]["docs"].as_array().unwrap();
    assert_eq!(docs.len(), 5);
    assert_eq!(docs[0]["data"], json!({"id": "z"}));
    assert_eq!(docs[1]["data"], json!({"id": "x"}));
    assert_eq!(docs[2], json!({"data": {}, "hash": "", "timestamp": T0}));
    assert_eq!(docs[3], json!({"error": "Invalid path parameter"}));
    assert_eq!(docs[4], json!({"error": "Missing required path parameter"}));
    let standalone = json_body(send(&app, get("/pull/docs/z")).await).await;
    assert_eq!(docs[0]["hash"], standalone["hash"]);
    let notes = body["collections"]["notes"].as_array().unwrap();
    assert_eq!(
        notes[0]["data"],
        json!({"n": 1}),
        "identity filled in; unreadable field removed"
    );
    assert_eq!(notes[1], json!({"error": "Forbidden"}));
    assert_eq!(
        body["collections"]["nope"],
        json!([{"error": "Collection not found"}])
    );
    // Names in request order, each once.
    let names: Vec<&String> = body["collections"].as_object().unwrap().keys().collect();
    assert_eq!(names, ["docs", "notes", "nope"]);

    // A namespace batch sees only its own collections.
    push_doc(&app, "/acme/push/acme/board/1", json!({"b": 1}), None).await;
    let body = json_body(send(&app, get("/acme/batch/pull?collections=board,docs&params=%7B%22board%22%3A%5B%7B%22id%22%3A%221%22%7D%5D%7D")).await).await;
    assert_eq!(body["collections"]["board"][0]["data"], json!({"b": 1}));
    assert_eq!(
        body["collections"]["docs"],
        json!([{"error": "Collection not found"}])
    );
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn batch_pull_bounds_and_malformed_queries_are_400() {
    let app = app();
    let names: Vec<String> = (0..101).map(|i| format!("c{i}")).collect();
    let res = send(
        &app,
        get(&format!("/batch/pull?collections={}", names.join(","))),
    )
    .await;
    assert_error(res, StatusCode::BAD_REQUEST, "Too many collections").await;
    let sets: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let q = format!(
        "/batch/pull?collections=docs&params={}",
        percent(&json!({"docs": sets}).to_string())
    );
    assert_error(
        send(&app, get(&q)).await,
        StatusCode::BAD_REQUEST,
        "Too many collections",
    )
    .await;
    let sets: Vec<Value> = (0..100).map(|i| json!({"id": i.to_string()})).collect();
    let q = format!(
        "/batch/pull?collections=docs&params={}",
        percent(&json!({"docs": sets}).to_string())
    );
    assert_eq!(
        send(&app, get(&q)).await.status(),
        StatusCode::OK,
        "100 is allowed"
    );
    for (q, msg) in [
        ("/batch/pull", "Missing collections parameter"),
        (
            "/batch/pull?collections=,,",
            "Missing collections parameter",
        ),
        (
            "/batch/pull?collections=docs&params=nope",
            "Invalid params parameter",
        ),
        (
            "/batch/pull?collections=docs&params=%7B%22docs%22%3A%7B%7D%7D",
            "Invalid params parameter",
        ),
        (
            "/batch/pull?collections=docs&params=%5B%5D",
            "Invalid params parameter",
        ),
    ] {
        assert_error(send(&app, get(q)).await, StatusCode::BAD_REQUEST, msg).await;
    }
}

#[tokio::test]
async fn listing_pages_with_an_exclusive_cursor() {
    let app = app();
    let a = user(1);
    for day in ["2026-01-03", "2026-01-01", "2026-01-02"] {
        signed_push(
            &app,
            &a,
            &format!("/push/diary/{}/{day}", a.id),
            json!({"d": day}),
        )
        .await;
    }
    let list = |q: &str| Signed::get(&format!("/list/diary/{}{q}", a.id), &a).build();
    let all = json_body(send(&app, list("")).await).await;
    assert_eq!(
        all,
        json!({"items": ["2026-01-01", "2026-01-02", "2026-01-03"], "hasMore": false})
    );
    let page = json_body(send(&app, list("?limit=2")).await).await;
    assert_eq!(
        page,
        json!({"items": ["2026-01-01", "2026-01-02"], "hasMore": true})
    );
    let next = json_body(send(&app, list("?limit=2&after=2026-01-02")).await).await;
    assert_eq!(next, json!({"items": ["2026-01-03"], "hasMore": false}));
    for bad in ["?limit=0", "?limit=01", "?limit=1001", "?limit=x"] {
        assert_error(
            send(&app, list(bad)).await,
            StatusCode::BAD_REQUEST,
            "Invalid limit parameter",
        )
        .await;
    }
    // Another user's diary is not listable.
    let b = user(2);
    let res = send(
        &app,
        Signed::get(&format!("/list/diary/{}", a.id), &b).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after() {
    let clock = ManualClock::new(T0);
    let app = app_with(&clock);
    assert_eq!(
        send(&app, get("/pull/lim/a")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/pull/lim/a")).await.status(),
        StatusCode::OK
    );
    let res = send(&app, get("/pull/lim/a")).await;
    assert_eq!(res.headers()["retry-after"], "1");
    assert_error(res, StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded").await;
    clock.advance(1000);
    assert_eq!(
        send(&app, get("/pull/lim/a")).await.status(),
        StatusCode::OK
    );

    // Push: one per window per IP; a forged X-Forwarded-For does not make a new bucket.
    let (status, _) = push_doc(&app, "/push/lim/a", json!({}), None).await;
    assert_eq!(status, StatusCode::OK);
    let mut req = push("/push/lim/b", &json!({"data": {}}));
    req.headers_mut()
        .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
    assert_eq!(
        send(&app, req).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn the_batch_and_bundle_routes_do_not_collide_with_namespaces() {
    let app = app();
    let res = send(
        &app,
        Request::post("/batch/pull")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        send(&app, get("/nope/batch/pull?collections=a"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
}
