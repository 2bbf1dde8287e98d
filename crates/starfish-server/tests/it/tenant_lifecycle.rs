//! The life of a namespace created at runtime, against the holes a review found: a
//! deleted namespace's keys, late writes and leftovers never reach a namespace later
//! created with the same name; a config namespace never shares keys with a runtime
//! one; namespace admins hand on no more than they hold; other Bearer tokens still
//! reach a custom authenticator.

use crate::common;

use axum::Router;
use axum::http::StatusCode;
use common::*;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use starfish_server::auth::{AuthError, AuthRequest, Authenticator, Caller, ManualClock};
use starfish_server::store::DocStore;
use starfish_server::{ConfigEndpoint, SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const ADMIN: &str = "admin-secret-0123456789";

fn config(extra_namespace: bool) -> SyncConfig {
    let board = json!([{"name": "board", "storagePath": "board",
        "readRoles": ["cap:read:board"], "writeRoles": ["cap:write:board"]}]);
    let mut c = json!({
        "version": 1, "collections": [], "isolation": "prefixed",
        "namespaceTemplates": {
            "team": {"collections": board},
            "locked": {"trustedRoots": ["aa".repeat(32)], "collections": board}
        }
    });
    if extra_namespace {
        c["namespaces"] = json!({"acme": {"collections": [{"name": "board", "storagePath": "board",
            "readRoles": ["public"], "writeRoles": ["public"]}]}});
    }
    SyncConfig::from_value(c).unwrap()
}

fn node(store: &DocStore, clock: &ManualClock, extra_namespace: bool) -> Router {
    let options = SyncOptions::new(config(extra_namespace), store.clone())
        .with_clock(Arc::new(clock.clone()))
        .with_config_endpoint(ConfigEndpoint::Public)
        .with_admin_key(ADMIN);
    create_sync_router(options).unwrap()
}

async fn create(app: &Router, name: &str, template: &str) {
    let body = json!({"name": name, "template": template});
    let (s, out) = call(
        app,
        req(
            "POST",
            "/_starfish/admin/namespaces",
            Some(ADMIN),
            Some(body),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
}

async fn delete(app: &Router, name: &str) -> (StatusCode, Value) {
    let uri = format!("/_starfish/admin/namespaces/{name}");
    call(app, req("DELETE", &uri, Some(ADMIN), None)).await
}

async fn key(app: &Router, grants: Value) -> String {
    let body = json!({"grants": grants});
    let (s, out) = call(
        app,
        req("POST", "/_starfish/admin/keys", Some(ADMIN), Some(body)),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{out}");
    out["key"].as_str().unwrap().to_owned()
}

fn write(v: Value) -> Option<Value> {
    Some(json!({"data": v}))
}

#[tokio::test]
async fn a_deleted_namespaces_keys_and_late_writes_never_reach_its_successor() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let (a, b) = (node(&store, &clock, false), node(&store, &clock, false));
    create(&a, "acme", "team").await;
    let old = key(&a, json!({"acme": ["read", "write"]})).await;
    // B serves acme (and keeps it for the refresh bound).
    let (s, _) = call(&b, req("GET", "/acme/pull/board", Some(&old), None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(delete(&a, "acme").await.0, StatusCode::OK);
    // A late write through B's stale view lands in the deleted generation.
    let (s, _) = call(
        &b,
        req(
            "POST",
            "/acme/push/board",
            Some(&old),
            write(json!({"left": "over"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // The name goes to a new customer.
    create(&a, "acme", "team").await;
    let fresh = key(&a, json!({"acme": ["read", "write"]})).await;
    let (s, body) = call(&a, req("GET", "/acme/pull/board", Some(&fresh), None)).await;
    assert_eq!((s, &body["data"]), (StatusCode::OK, &json!({})), "{body}");
    // The old key is void in the new namespace, reading and writing.
    clock.advance(1000);
    for node in [&a, &b] {
        let (s, _) = call(node, req("GET", "/acme/pull/board", Some(&old), None)).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        let (s, _) = call(
            node,
            req(
                "POST",
                "/acme/push/board",
                Some(&old),
                write(json!({"x": 1})),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn a_config_namespace_never_shares_keys_with_a_runtime_one_of_its_name() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let before = node(&store, &clock, false);
    create(&before, "acme", "team").await;
    let k = key(&before, json!({"acme": ["read", "write"]})).await;
    let (s, _) = call(
        &before,
        req(
            "POST",
            "/acme/push/board",
            Some(&k),
            write(json!({"private": 1})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A later deployment adds a public config namespace "acme".
    let after = node(&store, &clock, true);
    let (s, body) = call(&after, req("GET", "/acme/pull/board", None, None)).await;
    assert_eq!((s, &body["data"]), (StatusCode::OK, &json!({})), "{body}");
    // Its admin API will not delete or change the runtime record under that name.
    let (s, body) = delete(&after, "acme").await;
    assert_eq!(
        (s, body),
        (
            StatusCode::CONFLICT,
            json!({"error": "Namespace is defined in the config"})
        )
    );
    // The runtime namespace's data is intact.
    let (s, body) = call(&before, req("GET", "/acme/pull/board", Some(&k), None)).await;
    assert_eq!((s, &body["data"]), (StatusCode::OK, &json!({"private": 1})));
}

#[tokio::test]
async fn trusted_roots_hide_a_namespace_from_anonymous_callers_but_admit_its_keys() {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let app = node(&store, &clock, false);
    create(&app, "vault", "locked").await;
    let (s, _) = call(&app, req("GET", "/vault/config", None, None)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let k = key(&app, json!({"vault": ["read", "write"]})).await;
    let (s, body) = call(
        &app,
        req(
            "POST",
            "/vault/push/board",
            Some(&k),
            write(json!({"v": 1})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A certificate from another root is still refused.
    let res = send(&app, Signed::get("/vault/pull/board", &user(3)).build()).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

struct TokenAuth;

impl Authenticator for TokenAuth {
    fn authenticate<'a>(&'a self, r: AuthRequest<'a>) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let header = r.headers.get("authorization").and_then(|v| v.to_str().ok());
            if header == Some("Bearer good-token") {
                Ok(Caller::verified("svc", vec!["cap:read:open".into()]))
            } else {
                Err(AuthError::Unauthorized("no".into()))
            }
        })
    }
}

#[tokio::test]
async fn other_bearer_tokens_still_reach_a_custom_authenticator() {
    let config = SyncConfig::from_value(json!({"version": 1, "collections": [
        {"name": "open", "storagePath": "open", "readRoles": ["cap:read:open"], "writeRoles": []}]}))
    .unwrap();
    let options = SyncOptions::new(config, DocStore::memory())
        .with_authenticator(Arc::new(TokenAuth))
        .with_admin_key(ADMIN);
    let app = create_sync_router(options).unwrap();
    let (s, _) = call(&app, req("GET", "/pull/open", Some("good-token"), None)).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn routers_refuse_settings_that_cannot_work() {
    // An admin key anyone could guess.
    let options = SyncOptions::new(config(false), DocStore::memory()).with_admin_key("short");
    let err = create_sync_router(options).unwrap_err().to_string();
    assert!(err.contains("at least 16"), "{err}");
    // A `store` template without a way to open stores.
    let c = SyncConfig::from_value(json!({"version": 1, "collections": [],
        "namespaceTemplates": {"t": {"isolation": "store", "collections": [
            {"name": "n", "storagePath": "n", "readRoles": ["public"]}]}}}))
    .unwrap();
    let err = create_sync_router(SyncOptions::new(c, DocStore::memory()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("with_namespace_stores"), "{err}");
    // Upper case is refused in runtime names and in any case in `_starfish`.
    let app = node(&DocStore::memory(), &ManualClock::new(T0), false);
    let body = json!({"name": "Acme", "template": "team"});
    let (s, _) = call(
        &app,
        req(
            "POST",
            "/_starfish/admin/namespaces",
            Some(ADMIN),
            Some(body),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let c = SyncConfig::from_value(json!({"version": 1, "collections": [
        {"name": "n", "storagePath": "{a}/{b}", "readRoles": ["public"]}]}))
    .unwrap();
    let app = create_sync_router(SyncOptions::new(c, DocStore::memory())).unwrap();
    let res = send(&app, get("/pull/_Starfish/keys")).await;
    assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
}
