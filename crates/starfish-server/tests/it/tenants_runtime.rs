//! Namespaces created at runtime through the admin API: served by every router over
//! the same store within the refresh bound, suspended, deleted, created once.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const KEY: &str = "admin-secret-0123456789";

fn config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaces": {"fixed": {"collections": [{"name": "board", "storagePath": "board",
            "readRoles": ["public"], "writeRoles": ["public"]}]}},
        "namespaceTemplates": {"team": {"collections": [
            {"name": "board", "storagePath": "board", "readRoles": ["public"], "writeRoles": ["public"]},
            {"name": "notes", "storagePath": "users/{identity}/notes",
             "readRoles": ["self"], "writeRoles": ["self"]}]}}
    }))
    .unwrap()
}

/// A router over `store`; with the admin API when `admin`.
fn node(store: &DocStore, clock: &ManualClock, admin: bool) -> Router {
    let mut options = SyncOptions::new(config(), store.clone()).with_clock(Arc::new(clock.clone()));
    if admin {
        options = options.with_admin_key(KEY);
    }
    create_sync_router(options).unwrap()
}

fn admin(method: &str, uri: &str, body: Option<Value>, key: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        b = b.header("authorization", format!("Bearer {key}"));
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

fn create(name: &str) -> Request<Body> {
    admin(
        "POST",
        "/_starfish/admin/namespaces",
        Some(json!({"name": name, "template": "team"})),
        Some(KEY),
    )
}

async fn status(app: &Router, req: Request<Body>) -> StatusCode {
    send(app, req).await.status()
}

async fn objects(store: &DocStore) -> Vec<String> {
    let metas: Vec<_> = store.inner().list(None).collect().await;
    let mut out: Vec<String> = metas
        .into_iter()
        .map(|m| m.unwrap().location.to_string())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_tenant_created_on_one_node_is_served_by_another_within_the_bound() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let (a, b) = (node(&store, &clock, true), node(&store, &clock, false));
    // B looks the name up before it exists, and remembers "no such tenant".
    assert_eq!(
        status(&b, get("/acme/pull/board")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&a, create("acme")).await, StatusCode::CREATED);
    // A serves it at once; B within the refresh bound (1 s), without a restart.
    let board = json!({"data": {"v": 1}});
    assert_eq!(
        status(&a, push("/acme/push/board", &board)).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&b, get("/acme/pull/board")).await,
        StatusCode::NOT_FOUND
    );
    clock.advance(1000);
    let res = send(&b, get("/acme/pull/board")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["data"], json!({"v": 1}));
    // Its documents live under its own prefix: its name and this creation's generation.
    let stored = objects(&store).await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored[0].starts_with("_starfish/t/acme/") && stored[0].ends_with("/board"),
        "{stored:?}"
    );
    assert_eq!(stored[1], "_starfish/tenants/acme");

    // Suspended: 403 on A at once, on B within the bound; the data is kept.
    let suspend = admin(
        "POST",
        "/_starfish/admin/namespaces/acme/suspend",
        None,
        Some(KEY),
    );
    assert_eq!(status(&a, suspend).await, StatusCode::OK);
    assert_error(
        send(&a, get("/acme/pull/board")).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    clock.advance(1000);
    assert_error(
        send(&b, get("/acme/pull/board")).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    let resume = admin(
        "POST",
        "/_starfish/admin/namespaces/acme/resume",
        None,
        Some(KEY),
    );
    assert_eq!(status(&a, resume).await, StatusCode::OK);
    assert_eq!(status(&a, get("/acme/pull/board")).await, StatusCode::OK);

    // Deleted: data and record removed; 404 on A at once, on B within the bound.
    let res = send(
        &a,
        admin(
            "DELETE",
            "/_starfish/admin/namespaces/acme",
            None,
            Some(KEY),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(json_body(res).await["objectsDeleted"], 1);
    assert!(
        objects(&store).await.is_empty(),
        "{:?}",
        objects(&store).await
    );
    assert_eq!(
        status(&a, get("/acme/pull/board")).await,
        StatusCode::NOT_FOUND
    );
    clock.advance(1000);
    assert_eq!(
        status(&b, get("/acme/pull/board")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&b, push("/acme/push/board", &board)).await,
        StatusCode::NOT_FOUND
    );
    assert!(objects(&store).await.is_empty());
}

#[tokio::test]
async fn two_concurrent_creations_of_one_name_give_one_success() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let (a, b) = (node(&store, &clock, true), node(&store, &clock, true));
    for i in 0..20 {
        let name = format!("t{i}");
        let (x, y) = tokio::join!(status(&a, create(&name)), status(&b, create(&name)));
        let mut got = [x, y];
        got.sort();
        assert_eq!(got, [StatusCode::CREATED, StatusCode::CONFLICT], "{name}");
    }
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_key_and_refuses_bad_input() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let off = node(&store, &clock, false);
    assert_eq!(status(&off, create("acme")).await, StatusCode::NOT_FOUND);
    let a = node(&store, &clock, true);
    let body = Some(json!({"name": "acme", "template": "team"}));
    for key in [None, Some("wrong"), Some("")] {
        let req = admin("POST", "/_starfish/admin/namespaces", body.clone(), key);
        assert_error(
            send(&a, req).await,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
        )
        .await;
    }
    let long = "a".repeat(64);
    for name in ["pull", "a.b", "_starfish", "", long.as_str(), "a/b"] {
        let req = create(name);
        assert_error(
            send(&a, req).await,
            StatusCode::BAD_REQUEST,
            "Invalid namespace name",
        )
        .await;
    }
    let req = admin(
        "POST",
        "/_starfish/admin/namespaces",
        Some(json!({"name": "x", "template": "nope"})),
        Some(KEY),
    );
    assert_error(
        send(&a, req).await,
        StatusCode::BAD_REQUEST,
        "Unknown namespace template",
    )
    .await;
    let req = admin(
        "POST",
        "/_starfish/admin/namespaces",
        Some(json!({"name": 1})),
        Some(KEY),
    );
    assert_error(
        send(&a, req).await,
        StatusCode::BAD_REQUEST,
        "Invalid request body",
    )
    .await;
    assert_error(
        send(&a, create("fixed")).await,
        StatusCode::CONFLICT,
        "Namespace is defined in the config",
    )
    .await;
    let req = admin(
        "DELETE",
        "/_starfish/admin/namespaces/ghost",
        None,
        Some(KEY),
    );
    assert_error(
        send(&a, req).await,
        StatusCode::NOT_FOUND,
        "Namespace not found",
    )
    .await;
    // Nothing was written by any refusal.
    assert!(objects(&store).await.is_empty());
}

#[tokio::test]
async fn the_admin_api_lists_namespaces_with_what_they_hold() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let a = node(&store, &clock, true);
    for name in ["beta", "alpha", "gamma"] {
        assert_eq!(status(&a, create(name)).await, StatusCode::CREATED);
    }
    let u = user(1);
    let uri = format!("/alpha/push/users/{}/notes", u.id);
    let res = send(
        &a,
        Signed::push(&uri, &u, &json!({"data": {"i": 1}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(
        &a,
        admin(
            "GET",
            "/_starfish/admin/namespaces?usage=1&limit=2",
            None,
            Some(KEY),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page = json_body(res).await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    assert_eq!(page["hasMore"], true);
    assert_eq!(page["items"][0]["objects"], 1);
    assert_eq!(page["items"][0]["collections"], 2);
    assert_eq!(page["items"][1]["objects"], 0);
    let stored = objects(&store).await;
    let alpha_bytes: u64 = {
        let mut total = 0;
        for loc in stored
            .iter()
            .filter(|l| l.starts_with("_starfish/t/alpha/"))
        {
            total += store.inner().head(&loc.as_str().into()).await.unwrap().size;
        }
        total
    };
    assert_eq!(page["items"][0]["bytes"], alpha_bytes);
    assert_eq!(page["configured"][0]["name"], "fixed");
    let res = send(
        &a,
        admin(
            "GET",
            "/_starfish/admin/namespaces?after=beta",
            None,
            Some(KEY),
        ),
    )
    .await;
    let page = json_body(res).await;
    assert_eq!(page["items"][0]["name"], "gamma");
    assert_eq!(page["hasMore"], false);
    assert_eq!(page["configured"], json!([]));
}

#[tokio::test]
async fn a_flood_of_made_up_names_costs_the_store_a_bounded_number_of_reads() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let mut tenants = starfish_server::TenantOptions::default();
    tenants.unknown_lookups_per_second = 5;
    let build = |admin: bool| {
        let mut options = SyncOptions::new(config(), store.clone())
            .with_clock(Arc::new(clock.clone()))
            .with_tenant_options(tenants.clone());
        if admin {
            options = options.with_admin_key(KEY);
        }
        create_sync_router(options).unwrap()
    };
    let (a, b) = (build(true), build(false));
    assert_eq!(status(&a, create("real")).await, StatusCode::CREATED);
    assert_eq!(status(&b, get("/real/pull/board")).await, StatusCode::OK);
    // Node B has looked up "real" (a tenant: refreshed as usual). Five made-up names
    // use up this second's reads; the sixth, and "late" (created meanwhile on A, not
    // yet known to B), answer 404 without a read.
    for i in 0..6 {
        let uri = format!("/made-up-{i}/pull/board");
        assert_eq!(status(&b, get(&uri)).await, StatusCode::NOT_FOUND);
    }
    assert_eq!(status(&a, create("late")).await, StatusCode::CREATED);
    assert_eq!(
        status(&b, get("/late/pull/board")).await,
        StatusCode::NOT_FOUND
    );
    clock.advance(1_001);
    assert_eq!(status(&b, get("/real/pull/board")).await, StatusCode::OK);
    // The next second has a fresh budget.
    assert_eq!(status(&b, get("/late/pull/board")).await, StatusCode::OK);
}

/// Names that can collide with a route, a mount point or a route to come are refused
/// at creation with the protocol's 400; names that only resemble them are not.
#[tokio::test]
async fn reserved_names_are_refused_at_creation() {
    let store = DocStore::memory();
    let app = node(&store, &ManualClock::new(T0), true);
    for name in [
        "pull",
        "push",
        "list",
        "batch",
        "health",
        "config",
        "events",
        "openapi",
        "metrics",
        "admin",
        "api",
        "v1",
        "v2",
        "v10",
        "_private",
        "_starfish",
    ] {
        let (s, body) = call(&app, create(name)).await;
        assert_eq!(
            (s, body),
            (
                StatusCode::BAD_REQUEST,
                json!({"error": "Invalid namespace name"})
            ),
            "{name}"
        );
    }
    for name in ["configs", "v1x", "version", "my-events", "api_team"] {
        assert_eq!(
            status(&app, create(name)).await,
            StatusCode::CREATED,
            "{name}"
        );
    }
}

/// A namespace admin key learns nothing of namespaces outside its grants: a config
/// namespace, one that does not exist and another tenant's all get the same answer
/// on every admin route.
#[tokio::test]
async fn a_namespace_admin_key_cannot_tell_a_config_namespace_from_a_missing_one() {
    let store = DocStore::memory();
    let app = node(&store, &ManualClock::new(T0), true);
    for name in ["acme", "globex"] {
        assert_eq!(status(&app, create(name)).await, StatusCode::CREATED);
    }
    let grants = json!({"grants": {"acme": ["read"]}, "admin": true});
    let (s, out) = call(
        &app,
        admin("POST", "/_starfish/admin/keys", Some(grants), Some(KEY)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    let token = out["key"].as_str().unwrap().to_owned();
    let routes = |ns: &str| {
        let one = format!("/_starfish/admin/namespaces/{ns}");
        vec![
            admin("GET", &one, None, Some(&token)),
            admin("POST", &format!("{one}/suspend"), None, Some(&token)),
            admin("POST", &format!("{one}/resume"), None, Some(&token)),
            admin("DELETE", &one, None, Some(&token)),
            admin(
                "POST",
                "/_starfish/admin/keys",
                Some(json!({"grants": {ns: ["read"]}})),
                Some(&token),
            ),
        ]
    };
    for ((config, missing), other) in routes("fixed")
        .into_iter()
        .zip(routes("ghost"))
        .zip(routes("globex"))
    {
        let label = format!("{} {}", config.method(), config.uri());
        let config = call(&app, config).await;
        assert_eq!(config, call(&app, missing).await, "{label}");
        assert_eq!(config, call(&app, other).await, "{label}");
    }
    // Its own namespace it sees; the admin key still learns the config's.
    let one = admin(
        "GET",
        "/_starfish/admin/namespaces/acme",
        None,
        Some(&token),
    );
    assert_eq!(status(&app, one).await, StatusCode::OK);
    let one = admin("GET", "/_starfish/admin/namespaces/fixed", None, Some(KEY));
    assert_eq!(
        call(&app, one).await,
        (
            StatusCode::CONFLICT,
            json!({"error": "Namespace is defined in the config"})
        )
    );
}

/// Status, content type and body of an answer.
async fn answer(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>, Vec<u8>) {
    let res = send(app, req).await;
    let status = res.status();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, content_type, body_bytes(res).await.to_vec())
}

/// The reference's answer for a path it does not mount: a plain-text 404.
fn framework_404() -> (StatusCode, Option<String>, Vec<u8>) {
    (
        StatusCode::NOT_FOUND,
        Some("text/plain; charset=UTF-8".to_owned()),
        b"404 Not Found".to_vec(),
    )
}

/// A deleted namespace's routes answer what the reference answers for a namespace it
/// does not mount (the plain-text 404), exactly as a namespace never created does;
/// the admin API, which the official clients do not call, answers in JSON; an admin
/// route that does not exist (or the whole API when it is off) is a path not
/// mounted, with the same plain-text 404.
#[tokio::test]
async fn a_deleted_namespace_answers_as_one_never_created() {
    let store = DocStore::memory();
    let app = node(&store, &ManualClock::new(T0), true);
    assert_eq!(status(&app, create("acme")).await, StatusCode::CREATED);
    let delete = admin(
        "DELETE",
        "/_starfish/admin/namespaces/acme",
        None,
        Some(KEY),
    );
    assert_eq!(status(&app, delete).await, StatusCode::OK);
    for ns in ["acme", "ghost"] {
        for req in [
            get(&format!("/{ns}/pull/board")),
            get(&format!("/{ns}/config")),
            get(&format!("/{ns}/events?paths=board")),
            get(&format!("/{ns}/batch/pull?collections=board")),
            admin(
                "POST",
                &format!("/{ns}/push/board"),
                Some(json!({"data": {}})),
                None,
            ),
        ] {
            let label = format!("{} {}", req.method(), req.uri());
            assert_eq!(answer(&app, req).await, framework_404(), "{label}");
        }
        let one = admin(
            "GET",
            &format!("/_starfish/admin/namespaces/{ns}"),
            None,
            Some(KEY),
        );
        assert_eq!(
            call(&app, one).await,
            (
                StatusCode::NOT_FOUND,
                json!({"error": "Namespace not found"})
            )
        );
    }
    assert_eq!(status(&app, create("acme")).await, StatusCode::CREATED);
    let unknown = admin(
        "POST",
        "/_starfish/admin/namespaces/acme/zzz",
        None,
        Some(KEY),
    );
    assert_eq!(answer(&app, unknown).await, framework_404());
    let off = node(&store, &ManualClock::new(T0), false);
    assert_eq!(answer(&off, create("other")).await, framework_404());
}

/// The node that creates a namespace serves it at once, whatever the budget for
/// looking up names it does not know (here one read a second, spent on a made-up
/// name first): the writes right after a creation are never answered 404.
#[tokio::test]
async fn the_creating_node_serves_a_new_namespace_at_once() {
    let store = DocStore::memory();
    let mut tenants = starfish_server::TenantOptions::default();
    tenants.unknown_lookups_per_second = 1;
    let options = SyncOptions::new(config(), store.clone())
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_admin_key(KEY)
        .with_tenant_options(tenants);
    let app = create_sync_router(options).unwrap();
    let res = send(&app, push("/nobody/push/board", &json!({"data": {}}))).await;
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "the second's one lookup, spent"
    );
    assert_eq!(status(&app, create("fresh")).await, StatusCode::CREATED);
    for i in 0..3 {
        let body =
            json!({"data": {"i": i}, "baseHash": if i == 0 { Value::Null } else { json!("") }});
        let res = send(&app, push("/fresh/push/board", &body)).await;
        assert_ne!(res.status(), StatusCode::NOT_FOUND, "write {i}");
    }
}
