//! Namespace-scoped API keys: `Authorization: Bearer sfk_…` beside cap-certs. A key
//! reaches exactly the namespaces and rights it names; revoked or expired keys get
//! 401; the store never holds a key's secret.

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
use starfish_server::{ConfigEndpoint, SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const ADMIN: &str = "admin-secret-0123456789";

fn config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [{"name": "open", "storagePath": "open", "readRoles": ["public"], "writeRoles": ["public"]}],
        "namespaceTemplates": {"team": {"collections": [
            {"name": "board", "storagePath": "board",
             "readRoles": ["cap:read:board"], "writeRoles": ["cap:write:board"]},
            {"name": "wall", "storagePath": "wall", "readRoles": ["public"], "writeRoles": ["public"]},
            {"name": "days", "storagePath": "days/{day}", "listable": true,
             "readRoles": ["cap:read:days"], "writeRoles": ["cap:write:days"]},
            {"name": "notes", "storagePath": "users/{identity}/notes",
             "readRoles": ["self"], "writeRoles": ["self"]}]}}
    }))
    .unwrap()
}

fn node(store: &DocStore, clock: &ManualClock) -> Router {
    let options = SyncOptions::new(config(), store.clone())
        .with_clock(Arc::new(clock.clone()))
        .with_config_endpoint(ConfigEndpoint::RoleFiltered)
        .with_admin_key(ADMIN);
    create_sync_router(options).unwrap()
}

async fn new_key(app: &Router, by: &str, body: Value) -> (String, String) {
    let (status, out) = call(
        app,
        req("POST", "/_starfish/admin/keys", Some(by), Some(body)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{out}");
    (
        out["id"].as_str().unwrap().to_owned(),
        out["key"].as_str().unwrap().to_owned(),
    )
}

async fn setup() -> (DocStore, ManualClock, Router) {
    let store = DocStore::memory();
    let clock = ManualClock::new(T0);
    let app = node(&store, &clock);
    for name in ["org-acme", "org-acme-user-alice", "globex"] {
        let body = json!({"name": name, "template": "team"});
        let (status, out) = call(
            &app,
            req(
                "POST",
                "/_starfish/admin/namespaces",
                Some(ADMIN),
                Some(body),
            ),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{out}");
    }
    (store, clock, app)
}

fn doc(v: i64) -> Value {
    json!({"data": {"v": v}})
}

/// Every route of namespace `ns` with `token`: (label, request).
fn every_route(ns: &str, token: &str, identity: &str) -> Vec<(&'static str, Request<Body>)> {
    let t = Some(token);
    vec![
        (
            "pull board",
            req("GET", &format!("/{ns}/pull/board"), t, None),
        ),
        (
            "push board",
            req("POST", &format!("/{ns}/push/board"), t, Some(doc(9))),
        ),
        (
            "pull wall",
            req("GET", &format!("/{ns}/pull/wall"), t, None),
        ),
        (
            "push wall",
            req("POST", &format!("/{ns}/push/wall"), t, Some(doc(9))),
        ),
        (
            "pull day",
            req("GET", &format!("/{ns}/pull/days/d1"), t, None),
        ),
        (
            "list days",
            req("GET", &format!("/{ns}/list/days"), t, None),
        ),
        (
            "pull notes",
            req(
                "GET",
                &format!("/{ns}/pull/users/{identity}/notes"),
                t,
                None,
            ),
        ),
        (
            "push notes",
            req(
                "POST",
                &format!("/{ns}/push/users/{identity}/notes"),
                t,
                Some(doc(9)),
            ),
        ),
        (
            "batch",
            req(
                "GET",
                &format!("/{ns}/batch/pull?collections=board,wall"),
                t,
                None,
            ),
        ),
        ("config", req("GET", &format!("/{ns}/config"), t, None)),
    ]
}

async fn snapshot(store: &DocStore) -> Vec<(String, Vec<u8>)> {
    let metas: Vec<_> = store.inner().list(None).collect().await;
    let mut out = Vec::new();
    for m in metas {
        let loc = m.unwrap().location;
        let bytes = store
            .inner()
            .get(&loc)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        out.push((loc.to_string(), bytes));
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_key_reaches_exactly_its_namespaces_and_rights() {
    let (store, _clock, app) = setup().await;
    let (_, writer) = new_key(
        &app,
        ADMIN,
        json!({"grants": {"*": ["read", "write", "list"]}}),
    )
    .await;
    for ns in ["org-acme", "globex"] {
        let (s, _) = call(
            &app,
            req(
                "POST",
                &format!("/{ns}/push/board"),
                Some(&writer),
                Some(doc(1)),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (id, key) = new_key(
        &app,
        ADMIN,
        json!({
        "grants": {"org-acme": ["read"], "org-acme-user-alice": ["read", "write", "list"]},
        "label": "alice's service"}),
    )
    .await;
    let me = format!("key:{id}");

    // org-acme: read only.
    let (s, body) = call(&app, req("GET", "/org-acme/pull/board", Some(&key), None)).await;
    assert_eq!((s, &body["data"]), (StatusCode::OK, &json!({"v": 1})));
    let before = snapshot(&store).await;
    for (label, r) in [
        (
            "push board",
            req("POST", "/org-acme/push/board", Some(&key), Some(doc(2))),
        ),
        (
            "push wall",
            req("POST", "/org-acme/push/wall", Some(&key), Some(doc(2))),
        ),
        (
            "list days",
            req("GET", "/org-acme/list/days", Some(&key), None),
        ),
    ] {
        let (s, body) = call(&app, r).await;
        assert_eq!(
            (s, body),
            (StatusCode::FORBIDDEN, json!({"error": "Forbidden"})),
            "{label}"
        );
    }
    assert_eq!(snapshot(&store).await, before);

    // org-acme-user-alice: read, write and list, including its own `self` documents.
    for (label, r) in every_route("org-acme-user-alice", &key, &me) {
        let (s, body) = call(&app, r).await;
        assert!(
            s == StatusCode::OK || (label == "pull day" && s == StatusCode::NOT_FOUND),
            "{label}: {s} {body}"
        );
    }

    // globex and the root: 403 on every route, nothing stored.
    let before = snapshot(&store).await;
    for (label, r) in every_route("globex", &key, &me) {
        let (s, body) = call(&app, r).await;
        assert_eq!(
            (s, body),
            (StatusCode::FORBIDDEN, json!({"error": "Forbidden"})),
            "globex {label}"
        );
    }
    for r in [
        req("GET", "/pull/open", Some(&key), None),
        req("POST", "/push/open", Some(&key), Some(doc(3))),
    ] {
        assert_eq!(call(&app, r).await.0, StatusCode::FORBIDDEN);
    }
    assert_eq!(snapshot(&store).await, before);

    // The store holds the secret's hash, never the secret.
    let secret = key.rsplit('_').next().unwrap();
    for (loc, bytes) in snapshot(&store).await {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(secret), "{loc} holds the secret");
    }
}

#[tokio::test]
async fn revoked_expired_and_forged_keys_get_401_and_uses_are_counted() {
    let (_store, clock, app) = setup().await;
    let (id, key) = new_key(&app, ADMIN, json!({"grants": {"globex": ["read"]}})).await;
    let (_, short) = new_key(
        &app,
        ADMIN,
        json!({"grants": {"globex": ["read"]}, "expiresAt": T0 + 5000}),
    )
    .await;
    let pull = |t: &str| req("GET", "/globex/pull/wall", Some(t), None);
    for _ in 0..3 {
        assert_eq!(call(&app, pull(&key)).await.0, StatusCode::OK);
    }
    assert_eq!(call(&app, pull(&short)).await.0, StatusCode::OK);
    // A wrong secret, a made-up id, a malformed token: 401.
    let forged = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('0') { '1' } else { '0' }
    );
    let unknown = format!("sfk_{}_{}", "0".repeat(16), "0".repeat(64));
    for t in [forged.as_str(), unknown.as_str(), "sfk_x"] {
        let (s, body) = call(&app, pull(t)).await;
        assert_eq!(
            (s, body),
            (StatusCode::UNAUTHORIZED, json!({"error": "Unauthorized"})),
            "{t}"
        );
    }
    // Any other Bearer token is not ours: the cap-cert authenticator reads it as no
    // credential (the reference's rule), so a public collection answers.
    assert_eq!(call(&app, pull("nonsense")).await.0, StatusCode::OK);
    // Uses reach the record when the key is next read (after the refresh bound).
    clock.advance(1000);
    assert_eq!(call(&app, pull(&key)).await.0, StatusCode::OK);
    let (_, record) = call(
        &app,
        req(
            "GET",
            &format!("/_starfish/admin/keys/{id}"),
            Some(ADMIN),
            None,
        ),
    )
    .await;
    assert_eq!(record["uses"], 3, "{record}");
    assert!(record.get("hash").is_none());
    // Expired.
    clock.advance(5000);
    assert_eq!(call(&app, pull(&short)).await.0, StatusCode::UNAUTHORIZED);
    // Revoked: refused on this node at once.
    let (s, _) = call(
        &app,
        req(
            "POST",
            &format!("/_starfish/admin/keys/{id}/revoke"),
            Some(ADMIN),
            None,
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(call(&app, pull(&key)).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_namespace_admin_key_manages_only_its_namespaces() {
    let (_store, _clock, app) = setup().await;
    let (_, admin) = new_key(
        &app,
        ADMIN,
        json!({"grants": {"org-acme": ["read"]}, "admin": true}),
    )
    .await;
    let ok = call(
        &app,
        req(
            "POST",
            "/_starfish/admin/namespaces/org-acme/suspend",
            Some(&admin),
            None,
        ),
    )
    .await;
    assert_eq!(ok.0, StatusCode::OK);
    for r in [
        req(
            "POST",
            "/_starfish/admin/namespaces/globex/suspend",
            Some(&admin),
            None,
        ),
        req(
            "DELETE",
            "/_starfish/admin/namespaces/globex",
            Some(&admin),
            None,
        ),
        req("GET", "/_starfish/admin/namespaces", Some(&admin), None),
        req(
            "POST",
            "/_starfish/admin/keys",
            Some(&admin),
            Some(json!({"grants": {"globex": ["read"]}})),
        ),
        req(
            "POST",
            "/_starfish/admin/keys",
            Some(&admin),
            Some(json!({"grants": {"*": ["read"]}})),
        ),
    ] {
        let (s, body) = call(&app, r).await;
        assert_eq!(
            (s, body),
            (StatusCode::FORBIDDEN, json!({"error": "Forbidden"}))
        );
    }
    // It hands on only what it holds: no wider rights, no admin, never past its expiry.
    for body in [
        json!({"grants": {"org-acme": ["read", "write"]}}),
        json!({"grants": {"org-acme": ["read"]}, "admin": true}),
    ] {
        let r = req("POST", "/_starfish/admin/keys", Some(&admin), Some(body));
        assert_eq!(call(&app, r).await.0, StatusCode::FORBIDDEN);
    }
    let (child, _) = new_key(&app, &admin, json!({"grants": {"org-acme": ["read"]}})).await;
    let uri = format!("/_starfish/admin/keys/{child}");
    let (_, shown) = call(&app, req("GET", &uri, Some(ADMIN), None)).await;
    assert!(shown["createdBy"].is_string(), "{shown}");
    // Creating (or re-creating) a namespace is the operator's.
    let body = json!({"name": "org-acme-2", "template": "team"});
    let r = req(
        "POST",
        "/_starfish/admin/namespaces",
        Some(&admin),
        Some(body),
    );
    assert_eq!(call(&app, r).await.0, StatusCode::FORBIDDEN);
    // A key without `admin` is no admin at all.
    let (_, plain) = new_key(&app, ADMIN, json!({"grants": {"*": ["read"]}})).await;
    let (s, _) = call(
        &app,
        req("GET", "/_starfish/admin/namespaces", Some(&plain), None),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Bad grants.
    for body in [
        json!({"grants": {}}),
        json!({"grants": {"a.b": ["read"]}}),
        json!({"grants": {"x": []}}),
        json!({"grants": {"x": ["delete"]}}),
    ] {
        let (s, _) = call(
            &app,
            req(
                "POST",
                "/_starfish/admin/keys",
                Some(ADMIN),
                Some(body.clone()),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    }
}

#[tokio::test]
async fn made_up_key_ids_cost_the_store_a_bounded_number_of_reads() {
    let (store, clock, a) = setup().await;
    let mut tenants = starfish_server::TenantOptions::default();
    tenants.unknown_lookups_per_second = 3;
    let b = create_sync_router(
        SyncOptions::new(config(), store.clone())
            .with_clock(Arc::new(clock.clone()))
            .with_tenant_options(tenants)
            .with_admin_key(ADMIN),
    )
    .unwrap();
    let (_, key) = new_key(&a, ADMIN, json!({"grants": {"org-acme": ["read"]}})).await;
    // Three made-up ids use up this second's reads on node B; the real key, new to
    // B, is then refused without a read, until the next second.
    for i in 0..3 {
        let made_up = format!("sfk_{i:016x}_{}", "0".repeat(64));
        let (status, _) = call(&b, req("GET", "/org-acme/pull/board", Some(&made_up), None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _) = call(&b, req("GET", "/org-acme/pull/board", Some(&key), None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    clock.advance(1_000);
    let (status, _) = call(&b, req("GET", "/org-acme/pull/board", Some(&key), None)).await;
    assert_eq!(status, StatusCode::OK);
}
