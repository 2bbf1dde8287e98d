//! Namespaces as tenants: isolation modes (`shared`, `prefixed`, `store`) and
//! `trustedRoots`. A tenant's certificate with a wildcard scope walks every route of
//! another tenant and reads nothing and writes nothing.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::{DocStore, StoreError};
use starfish_server::{ConfigEndpoint, Isolation, SyncConfig, SyncOptions, create_sync_router};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One tenant's collections: every route family (document, append log, blob, bundle,
/// list, batch). `p` prefixes storage paths (so that `shared` tenants do not overlap).
fn tenant_collections(p: &str) -> Value {
    json!([
        {"name": "notes", "storagePath": format!("{p}users/{{identity}}/notes"),
         "readRoles": ["self"], "writeRoles": ["self"]},
        {"name": "board", "storagePath": format!("{p}board"),
         "readRoles": ["public"], "writeRoles": ["public"]},
        {"name": "feed", "storagePath": format!("{p}feed/{{identity}}"),
         "readRoles": ["self"], "writeRoles": ["self"],
         "appendOnly": {"requireAuthorSignature": false}},
        {"name": "files", "storagePath": format!("{p}files/{{identity}}/{{file}}"),
         "readRoles": ["self"], "writeRoles": ["self"], "listable": true,
         "allowedMimeTypes": ["image/*"], "maxBodyBytes": 4096},
        {"name": "profile", "storagePath": format!("{p}p/{{identity}}"), "bundle": "user",
         "readRoles": ["self"], "writeRoles": ["self"]},
        {"name": "prefs", "storagePath": format!("{p}p/{{identity}}"), "bundle": "user",
         "readRoles": ["self"], "writeRoles": ["self"]}
    ])
}

fn two_tenants(isolation: Isolation, trusted: (&User, &User)) -> SyncConfig {
    let p = if isolation == Isolation::Shared {
        ("acme/", "globex/")
    } else {
        ("", "")
    };
    let config = json!({
        "version": 1,
        "isolation": isolation.as_str(),
        "collections": [],
        "namespaces": {
            "acme": {"collections": tenant_collections(p.0), "trustedRoots": [trusted.0.id]},
            "globex": {"collections": tenant_collections(p.1),
                       "trustedRoots": [pub_hex(&trusted.1.root)]}
        }
    });
    SyncConfig::from_value(config).unwrap()
}

/// A store per namespace in `store` isolation, kept so a test can look inside.
#[derive(Clone, Default)]
struct Stores(Arc<Mutex<HashMap<String, DocStore>>>);

impl Stores {
    fn open(&self, name: &str) -> Result<DocStore, StoreError> {
        let mut map = self.0.lock().unwrap();
        Ok(map
            .entry(name.to_owned())
            .or_insert_with(DocStore::memory)
            .clone())
    }

    fn all(&self) -> Vec<(String, DocStore)> {
        let map = self.0.lock().unwrap();
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

struct Deployment {
    app: Router,
    root: DocStore,
    stores: Stores,
}

impl Deployment {
    fn new(config: SyncConfig) -> Self {
        let root = DocStore::memory();
        let stores = Stores::default();
        let opener = stores.clone();
        let options = SyncOptions::new(config, root.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_config_endpoint(ConfigEndpoint::RoleFiltered)
            .with_namespace_stores(Arc::new(move |name: &str| opener.open(name)));
        Self {
            app: create_sync_router(options).unwrap(),
            root,
            stores,
        }
    }

    /// Every object of every store, by store and key.
    async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stores = vec![("root".to_owned(), self.root.clone())];
        stores.extend(self.stores.all());
        for (name, store) in stores {
            let metas: Vec<_> = store.inner().list(None).collect().await;
            for meta in metas {
                let meta = meta.unwrap();
                let bytes = store.inner().get(&meta.location).await.unwrap();
                let bytes = bytes.bytes().await.unwrap().to_vec();
                out.insert(format!("{name}:{}", meta.location), bytes);
            }
        }
        out
    }
}

fn blob_upload(uri: &str, u: &User, bytes: &[u8]) -> Request<Body> {
    let mut s = Signed::new("POST", uri, device_cap(u), &u.device);
    s.body = None;
    let mut req = s.build();
    *req.body_mut() = Body::from(bytes.to_vec());
    req.headers_mut()
        .insert("content-type", "image/png".parse().unwrap());
    req.headers_mut()
        .insert("content-length", bytes.len().into());
    req
}

/// Every route of namespace `ns`, as `u` (identity-bound paths use `u`'s identity).
fn walk(ns: &str, p: &str, u: &User) -> Vec<(String, Request<Body>)> {
    let id = &u.id;
    let doc = json!({"data": {"owner": id}});
    let mut out = vec![
        (
            "push notes".to_owned(),
            Signed::push(&format!("/{ns}/push/{p}users/{id}/notes"), u, &doc).build(),
        ),
        (
            "push board".to_owned(),
            Signed::push(&format!("/{ns}/push/{p}board"), u, &doc).build(),
        ),
        (
            "append feed".to_owned(),
            Signed::push(
                &format!("/{ns}/push/{p}feed/{id}"),
                u,
                &json!({"data": {"n": 1}}),
            )
            .build(),
        ),
        (
            "push blob".to_owned(),
            blob_upload(
                &format!("/{ns}/push/{p}files/{id}/a.png"),
                u,
                b"\x89PNG....",
            ),
        ),
        (
            "push bundle member".to_owned(),
            Signed::push(&format!("/{ns}/push/{p}p/{id}/profile"), u, &doc).build(),
        ),
    ];
    for (label, uri) in [
        ("pull notes", format!("/{ns}/pull/{p}users/{id}/notes")),
        ("pull board", format!("/{ns}/pull/{p}board")),
        ("pull feed", format!("/{ns}/pull/{p}feed/{id}?limit=10")),
        ("pull blob", format!("/{ns}/pull/{p}files/{id}/a.png")),
        ("pull bundle", format!("/{ns}/pull/{p}p/{id}")),
        ("list files", format!("/{ns}/list/{p}files/{id}")),
        (
            "batch pull",
            format!("/{ns}/batch/pull?collections=notes,board&params=%7B%7D"),
        ),
        ("config", format!("/{ns}/config")),
    ] {
        out.push((label.to_owned(), Signed::get(&uri, u).build()));
    }
    out
}

async fn status_and_body(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = send(app, req).await;
    let status = res.status();
    let bytes = body_bytes(res).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn walk_tenants(isolation: Isolation) {
    let (alice, bob) = (user(1), user(2));
    let d = Deployment::new(two_tenants(isolation, (&alice, &bob)));
    let p = |ns: &str| {
        if isolation == Isolation::Shared {
            format!("{ns}/")
        } else {
            String::new()
        }
    };
    // Bob, trusted in globex, uses every route there: each one works.
    for (label, req) in walk("globex", &p("globex"), &bob) {
        let (status, body) = status_and_body(&d.app, req).await;
        assert_eq!(status, StatusCode::OK, "{isolation:?} bob {label}: {body}");
    }
    let before = d.snapshot().await;
    assert!(before.len() >= 5, "{isolation:?}: {before:?}");
    // Alice (trusted in acme, wildcard scope) walks globex, then bob walks acme: every
    // route refuses, with the protocol's body, and nothing is stored.
    for (ns, u) in [("globex", &alice), ("acme", &bob)] {
        for (label, req) in walk(ns, &p(ns), u) {
            let (status, body) = status_and_body(&d.app, req).await;
            assert_eq!(
                (status, body),
                (StatusCode::FORBIDDEN, json!({"error": "Forbidden"})),
                "{isolation:?} {ns} {label}"
            );
        }
    }
    assert_eq!(
        d.snapshot().await,
        before,
        "{isolation:?}: the store changed"
    );
    // The root `/config` does not describe namespaces that name their roots.
    let (_, config) = status_and_body(&d.app, get("/config")).await;
    assert_eq!(
        config,
        json!({"collections": [], "namespaces": {}}),
        "{isolation:?}"
    );
}

#[tokio::test]
async fn a_tenant_certificate_reaches_nothing_in_another_tenant_shared() {
    walk_tenants(Isolation::Shared).await;
}

#[tokio::test]
async fn a_tenant_certificate_reaches_nothing_in_another_tenant_prefixed() {
    walk_tenants(Isolation::Prefixed).await;
}

#[tokio::test]
async fn a_tenant_certificate_reaches_nothing_in_another_tenant_store() {
    walk_tenants(Isolation::Store).await;
}

/// The reference's own example: two namespaces, one storagePath.
fn same_path(isolation: Option<&str>) -> SyncConfig {
    let ns = json!({"collections": [{"name": "notes", "storagePath": "users/{identity}/notes",
                                     "readRoles": ["self"], "writeRoles": ["self"]}]});
    let mut config = json!({"version": 1, "collections": [],
                            "namespaces": {"acme": ns, "globex": ns}});
    if let Some(i) = isolation {
        config["isolation"] = json!(i);
    }
    SyncConfig::from_value(config).unwrap()
}

async fn write_in_both(config: SyncConfig) -> (Value, Value, Deployment) {
    let a = user(1);
    let d = Deployment::new(config);
    for ns in ["acme", "globex"] {
        let uri = format!("/{ns}/pull/users/{}/notes", a.id);
        let (_, current) = status_and_body(&d.app, Signed::get(&uri, &a).build()).await;
        let uri = format!("/{ns}/push/users/{}/notes", a.id);
        let body = json!({"data": {"from": ns}, "baseHash": current["hash"]});
        let (status, body) = status_and_body(&d.app, Signed::push(&uri, &a, &body).build()).await;
        assert_eq!(status, StatusCode::OK, "{ns}: {body}");
    }
    let mut read = Vec::new();
    for ns in ["acme", "globex"] {
        let uri = format!("/{ns}/pull/users/{}/notes", a.id);
        let (_, body) = status_and_body(&d.app, Signed::get(&uri, &a).build()).await;
        read.push(body["data"].clone());
    }
    (read[0].clone(), read[1].clone(), d)
}

#[tokio::test]
async fn the_references_example_shares_in_shared_and_separates_otherwise() {
    // Shared (the default, as in the reference): one document; the config warns.
    let config = same_path(None);
    assert!(
        config
            .warnings()
            .iter()
            .any(|w| w.contains("namespace \"acme\"") && w.contains("namespace \"globex\"")),
        "{:?}",
        config.warnings()
    );
    let (acme, globex, d) = write_in_both(config).await;
    assert_eq!(acme, json!({"from": "globex"}));
    assert_eq!(globex, json!({"from": "globex"}));
    assert_eq!(d.snapshot().await.len(), 1);
    // Prefixed and store: two documents, and no warning.
    for mode in ["prefixed", "store"] {
        let config = same_path(Some(mode));
        assert!(
            config.warnings().is_empty(),
            "{mode}: {:?}",
            config.warnings()
        );
        let (acme, globex, d) = write_in_both(config).await;
        assert_eq!(acme, json!({"from": "acme"}), "{mode}");
        assert_eq!(globex, json!({"from": "globex"}), "{mode}");
        let keys: Vec<String> = d.snapshot().await.into_keys().collect();
        assert_eq!(keys.len(), 2, "{mode}: {keys:?}");
        if mode == "prefixed" {
            let a = user(1);
            assert_eq!(
                keys,
                [
                    format!("root:_starfish/ns/acme/users/{}/notes", a.id),
                    format!("root:_starfish/ns/globex/users/{}/notes", a.id)
                ]
            );
        } else {
            assert!(keys.iter().all(|k| !k.starts_with("root:")), "{keys:?}");
        }
    }
}

#[tokio::test]
async fn a_namespace_can_choose_its_own_isolation_and_the_deployment_can_opt_in() {
    // One line in the namespace overrides the deployment's default.
    let mut config: Value = json!({"version": 1, "collections": [], "namespaces": {
        "acme": {"isolation": "prefixed", "collections": [{"name": "n", "storagePath": "n",
                 "readRoles": ["public"], "writeRoles": ["public"]}]},
        "globex": {"collections": [{"name": "n", "storagePath": "n",
                 "readRoles": ["public"], "writeRoles": ["public"]}]}}});
    let shares = |c: &SyncConfig| {
        c.warnings()
            .iter()
            .filter(|w| w.contains("do not prefix storage keys"))
            .count()
    };
    let c = SyncConfig::from_value(config.clone()).unwrap();
    assert_eq!(shares(&c), 0, "{:?}", c.warnings());
    // A deployment-wide switch (the CLI's flag) separates every namespace.
    config["namespaces"]["acme"]
        .as_object_mut()
        .unwrap()
        .remove("isolation");
    let c = SyncConfig::from_value(config).unwrap();
    assert_eq!(shares(&c), 1, "{:?}", c.warnings());
    let c = c.with_isolation(Isolation::Prefixed);
    assert_eq!(shares(&c), 0, "{:?}", c.warnings());
    // Bad values are config errors.
    let bad = json!({"version": 1, "isolation": "separate", "collections": []});
    let err = SyncConfig::from_value(bad).unwrap_err().to_string();
    assert!(
        err.contains("isolation must be \"shared\", \"prefixed\" or \"store\""),
        "{err}"
    );
    let bad = json!({"version": 1, "collections": [], "namespaces": {"a": {
        "trustedRoots": "x", "collections": [{"name": "n", "storagePath": "n"}]}}});
    let err = SyncConfig::from_value(bad).unwrap_err().to_string();
    assert!(err.contains("trustedRoots must be an array"), "{err}");
    // `store` isolation without a way to open stores: the router is not built.
    let c = same_path(Some("store"));
    let err = create_sync_router(SyncOptions::new(c, DocStore::memory())).unwrap_err();
    assert!(err.to_string().contains("with_namespace_stores"), "{err}");
}

#[tokio::test]
async fn no_key_can_name_the_servers_own_area() {
    // A parameter or a template segment naming `_starfish` would reach into isolated
    // namespaces' data: both are refused.
    let bad = json!({"version": 1, "collections": [
        {"name": "n", "storagePath": "_starfish/ns/{x}", "readRoles": ["public"]}]});
    let err = SyncConfig::from_value(bad).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");
    let config = json!({"version": 1, "isolation": "prefixed", "collections": [
        {"name": "n", "storagePath": "{a}/{b}/{c}/{d}", "readRoles": ["public"], "writeRoles": ["public"]}],
        "namespaces": {"acme": {"collections": [{"name": "n", "storagePath": "doc",
            "readRoles": ["public"], "writeRoles": ["public"]}]}}});
    let d = Deployment::new(SyncConfig::from_value(config).unwrap());
    let (status, _) =
        status_and_body(&d.app, push("/acme/push/doc", &json!({"data": {"s": 1}}))).await;
    assert_eq!(status, StatusCode::OK);
    let before = d.snapshot().await;
    for uri in [
        "/pull/_starfish/ns/acme/doc",
        "/pull/%5Fstarfish/ns/acme/doc",
    ] {
        let res = send(&d.app, get(uri)).await;
        assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    }
    let res = send(
        &d.app,
        push("/push/_starfish/ns/acme/doc", &json!({"data": {}})),
    )
    .await;
    assert_error(res, StatusCode::BAD_REQUEST, "Invalid path parameter").await;
    assert_eq!(d.snapshot().await, before);
}
