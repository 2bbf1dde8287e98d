//! Security holes in the request pipeline, each written as the behaviour the fixed
//! server must have: bundle members and cap scope paths, scope checks under a mount
//! prefix, percent-encoded parameters that select another collection's document,
//! JSON media types, identity restrictions, and bounded, filtered batch log pulls.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use common::*;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

fn app_from(config: &str, store: DocStore) -> Router {
    let config = SyncConfig::from_json_str(config).unwrap();
    create_sync_router(SyncOptions::new(config, store).with_clock(Arc::new(ManualClock::new(T0))))
        .unwrap()
}

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn signed_push_ok(app: &Router, u: &User, uri: &str, data: Value) -> Value {
    let res = send(app, Signed::push(uri, u, &json!({ "data": data })).build()).await;
    let status = res.status();
    let body = json_body(res).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    body
}

const DENIED: &str = "403 {\"error\":\"Forbidden\"}";

/// The status, and the JSON body unless it is 200.
async fn outcome(res: axum::http::Response<Body>) -> String {
    let status = res.status();
    let body = json_body(res).await;
    if status == StatusCode::OK {
        "200".to_owned()
    } else {
        format!("{} {body}", status.as_u16())
    }
}

/// Collects mismatches, so one run shows every case a test probes.
#[derive(Default)]
struct Report(Vec<String>);

impl Report {
    fn check(&mut self, label: &str, got: String, want: &str) {
        if got != want {
            self.0.push(format!("{label}: got `{got}`, want `{want}`"));
        }
    }

    fn assert_empty(&self, what: &str) {
        assert!(
            self.0.is_empty(),
            "{what} ({} checks failed):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

// ---- 1. bundle members and cap scope paths -------------------------------------------

const BUNDLE_CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "profile", "storagePath": "users/{identity}/b", "bundle": "b", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "secret", "storagePath": "users/{identity}/b", "bundle": "b", "readRoles": ["self"], "writeRoles": ["self"]}
  ]
}"#;

/// A bundle member whose key (`users/<id>/b/secret`) a cap's `scope.paths` denies is
/// left out of the bundle pull, as a batch pull of that member is refused.
#[tokio::test]
async fn bundle_member_denied_by_scope_paths() {
    let app = app_from(BUNDLE_CONFIG, DocStore::memory());
    let a = user(1);
    signed_push_ok(
        &app,
        &a,
        &format!("/push/users/{}/b/profile", a.id),
        json!({"name": "Ann"}),
    )
    .await;
    signed_push_ok(
        &app,
        &a,
        &format!("/push/users/{}/b/secret", a.id),
        json!({"pin": "1234"}),
    )
    .await;
    let bundle_uri = format!("/pull/users/{}/b", a.id);
    // With a full cap Alice sees both members.
    let full = json_body(send(&app, Signed::get(&bundle_uri, &a).build()).await).await;
    assert_eq!(
        full["collections"]["secret"]["data"],
        json!({"pin": "1234"})
    );
    let profile = full["collections"]["profile"].clone();
    assert_eq!(profile["data"], json!({"name": "Ann"}));

    let scoped = scoped_cap(
        &a,
        json!({"ops": ["read"], "collections": ["*"],
               "paths": ["users/{identity}/**", "!users/{identity}/b/secret"]}),
    );
    let with_scoped = |uri: &str| {
        let mut s = Signed::get(uri, &a);
        s.cert = scoped.clone();
        s.build()
    };

    // Batch pulls: the denied member is an error entry, never its data.
    let res = send(&app, with_scoped("/batch/pull?collections=secret")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_body(res).await,
        json!({"collections": {"secret": [{"error": "Forbidden"}]}})
    );
    let res = send(
        &app,
        with_scoped("/batch/pull?collections=profile%2Csecret"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_body(res).await;
    assert_eq!(
        body["collections"]["profile"][0]["data"],
        json!({"name": "Ann"})
    );
    assert_eq!(
        body["collections"]["secret"],
        json!([{"error": "Forbidden"}])
    );
    assert!(!body.to_string().contains("1234"), "{body}");

    // The bundle pull: `secret` is absent (not an error that reveals it).
    let res = send(&app, with_scoped(&bundle_uri)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_body(res).await;
    assert_eq!(
        body,
        json!({"collections": {"profile": profile}, "timestamp": T0}),
        "the bundle pull leaks the member the cap's scope.paths deny"
    );
}

// ---- 2. scope deny under a mount prefix ----------------------------------------------

/// The scope check runs on the storage path the route resolved, not on a path
/// re-derived from the URL (which a prefix containing `list`, `pull` or `push`
/// shifts).
#[tokio::test]
async fn scope_deny_holds_under_prefix_with_action_segment() {
    let a = user(1);
    let denied = scoped_cap(
        &a,
        json!({"ops": ["read", "write"], "collections": ["*"],
               "paths": ["**", "!users/{identity}/notes"]}),
    );
    // At the root the deny holds.
    let root = router(DocStore::memory());
    let mut s = Signed::get(&format!("/pull/users/{}/notes", a.id), &a);
    s.cert = denied.clone();
    assert_error(
        send(&root, s.build()).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;

    let mut holes = Report::default();
    for prefix in ["/api/list/v1", "/pull/x", "/v1/push"] {
        let store = DocStore::memory();
        let app = Router::new().nest(prefix, router(store.clone()));
        let pull_uri = format!("{prefix}/pull/users/{}/notes", a.id);
        let push_uri = format!("{prefix}/push/users/{}/notes", a.id);
        // The mount works and the signature covers the prefix: a full cap is served.
        let res = send(&app, Signed::get(&pull_uri, &a).build()).await;
        assert_eq!(res.status(), StatusCode::OK, "{prefix}: full cap");

        let mut s = Signed::get(&pull_uri, &a);
        s.cert = denied.clone();
        let got = outcome(send(&app, s.build()).await).await;
        holes.check(&format!("{prefix}: pull"), got, DENIED);

        let mut s = Signed::push(&push_uri, &a, &json!({"data": {"x": 1}}));
        s.cert = denied.clone();
        let got = outcome(send(&app, s.build()).await).await;
        let kept = stored(&store, &format!("users/{}/notes", a.id)).await;
        holes.check(
            &format!("{prefix}: push"),
            format!("{got}, stored: {kept:?}"),
            &format!("{DENIED}, stored: None"),
        );
    }
    holes.assert_empty("the cap's scope.paths deny is bypassed under a prefix");
}

// ---- 3. percent-encoded parameters and overlapping templates -------------------------

const OVERLAP_CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "users/{identity}/{doc}", "readRoles": ["public"], "writeRoles": ["self"]},
    {"name": "vault", "storagePath": "users/{identity}/vault", "readRoles": ["self"], "writeRoles": ["self"]}
  ]
}"#;

fn assert_names_both(error: &dyn std::fmt::Display) {
    let message = error.to_string();
    assert!(
        message.contains("docs") && message.contains("vault"),
        "the refusal names both collections: {message}"
    );
}

/// `users/{identity}/{doc}` (public) and `users/{identity}/vault` (self) in one scope:
/// either the config is refused, or a parameter value (percent-encoded in a URL, or
/// given in batch params) never reaches the vault document through `docs`.
#[tokio::test]
async fn encoded_parameter_cannot_select_other_template() {
    let config = match SyncConfig::from_json_str(OVERLAP_CONFIG) {
        Ok(config) => config,
        Err(e) => return assert_names_both(&e),
    };
    let app = match create_sync_router(
        SyncOptions::new(config, DocStore::memory()).with_clock(Arc::new(ManualClock::new(T0))),
    ) {
        Ok(app) => app,
        Err(e) => return assert_names_both(&e),
    };
    let a = user(1);
    let pushed = signed_push_ok(
        &app,
        &a,
        &format!("/push/users/{}/vault", a.id),
        json!({"secret": 1}),
    )
    .await;
    let vault_hash = pushed["hash"].as_str().unwrap().to_owned();
    // The plain path is Alice's only.
    let res = send(&app, get(&format!("/pull/users/{}/vault", a.id))).await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;

    let mut leaks = Vec::new();
    let res = send(&app, get(&format!("/pull/users/{}/%76ault", a.id))).await;
    let status = res.status();
    let body = json_body(res).await;
    let ok = match status {
        StatusCode::FORBIDDEN => body == json!({"error": "Forbidden"}),
        StatusCode::OK => !body.to_string().contains("secret") && body["hash"] != vault_hash,
        _ => false,
    };
    if !ok {
        leaks.push(format!(
            "anonymous GET /pull/users/<alice>/%76ault -> {status} {body}"
        ));
    }

    let params = json!({"docs": [{"identity": a.id, "doc": "vault"}]});
    let uri = format!(
        "/batch/pull?collections=docs&params={}",
        percent(&params.to_string())
    );
    let res = send(&app, get(&uri)).await;
    let status = res.status();
    let body = json_body(res).await;
    let entry = &body["collections"]["docs"][0];
    if status != StatusCode::OK
        || entry.to_string().contains("secret")
        || entry["hash"] == vault_hash
    {
        leaks.push(format!(
            "anonymous batch pull of docs {{doc: vault}} -> {status} {body}"
        ));
    }
    assert!(
        leaks.is_empty(),
        "an anonymous caller reaches Alice's vault through `docs` (want 403 Forbidden, or a 200 that is not the vault document):\n{}",
        leaks.join("\n")
    );
}

// ---- 4. JSON media types --------------------------------------------------------------

fn push_with_type(uri: &str, content_type: &str, body: &Value) -> Request<Body> {
    let body = body.to_string();
    Request::post(uri)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap()
}

/// A JSON push needs the media type `application/json` exactly (parameters and case
/// aside); anything merely containing it is 415 and stores nothing.
#[tokio::test]
async fn json_push_with_non_exact_media_type_is_415() {
    let store = DocStore::memory();
    let app = router_with(store.clone(), &ManualClock::new(T0));
    let refused = "415 {\"error\":\"Content-Type must be application/json\"}, nothing stored";
    let cases = [
        ("application/json-patch+json", refused),
        ("application/jsonx", refused),
        ("text/plain; note=application/json", refused),
        ("application/json; charset=utf-8", "200, stored"),
        ("Application/JSON", "200, stored"),
    ];
    let mut r = Report::default();
    for (i, (content_type, want)) in cases.into_iter().enumerate() {
        let res = send(
            &app,
            push_with_type(
                &format!("/push/docs/ct{i}"),
                content_type,
                &json!({"data": {"i": i}}),
            ),
        )
        .await;
        let status = res.status();
        let json_type = res.headers().get(header::CONTENT_TYPE).cloned();
        let body = json_body(res).await;
        let kept = stored(&store, &format!("docs/ct{i}")).await;
        let got = match (status, kept) {
            (StatusCode::OK, Some(doc)) if doc.to_string().contains(&format!("\"i\":{i}")) => {
                "200, stored".to_owned()
            }
            (status, None) if json_type.as_ref().is_some_and(|t| t == "application/json") => {
                format!("{} {body}, nothing stored", status.as_u16())
            }
            (status, kept) => format!("{} {body}, stored: {kept:?}", status.as_u16()),
        };
        r.check(&format!("{content_type:?}"), got, want);
    }
    r.assert_empty(
        "a JSON push takes the media type application/json exactly (any case, with parameters)",
    );
}

/// A signed JSON write is not a blob upload because its media type merely starts like
/// JSON: a body not covered by the signature is 415 and stores nothing.
#[tokio::test]
async fn json_push_with_non_exact_media_type_is_415_signed_over_empty_body() {
    let store = DocStore::memory();
    let app = router_with(store.clone(), &ManualClock::new(T0));
    let a = user(1);
    let uri = format!("/push/users/{}/notes", a.id);
    let mut s = Signed::push(&uri, &a, &json!({"data": {"planted": true}}));
    s.signed_body = Some(String::new());
    let mut req = s.build();
    req.headers_mut()
        .insert(header::CONTENT_TYPE, "application/json-x".parse().unwrap());
    let res = send(&app, req).await;
    let status = res.status();
    let body = json_body(res).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"error": "Content-Type must be application/json"})
        ),
        "a JSON body the signature does not cover"
    );
    assert_eq!(
        stored(&store, &format!("users/{}/notes", a.id)).await,
        None,
        "nothing stored"
    );
    // The same write, properly signed, is served.
    signed_push_ok(&app, &a, &uri, json!({"planted": false})).await;
}

// ---- 5. identity restrictions ----------------------------------------------------------

const PUSH_DENIED: &str = "403 {\"error\":\"Forbidden\"}, nothing stored";
const PUSHED: &str = "200, stored";

struct Env {
    app: Router,
    store: DocStore,
}

fn env(config: &Value) -> Env {
    let store = DocStore::memory();
    Env {
        app: app_from(&config.to_string(), store.clone()),
        store,
    }
}

fn public(name: &str, path: &str) -> Value {
    json!({"name": name, "storagePath": path, "readRoles": ["public"], "writeRoles": ["public"]})
}

fn restricted(name: &str, path: &str, restrictions: Value) -> Value {
    let mut c = public(name, path);
    c["restrictions"] = restrictions;
    c
}

fn rule(mode: &str, ids: &[&User]) -> Value {
    json!({"mode": mode, "identities": ids.iter().map(|u| u.id.clone()).collect::<Vec<_>>()})
}

fn rule_for(mode: &str, ids: &[&User], actions: &[&str]) -> Value {
    let mut r = rule(mode, ids);
    r["actions"] = json!(actions);
    r
}

async fn pull_as(env: &Env, who: Option<&User>, uri: &str) -> String {
    let req = match who {
        Some(u) => Signed::get(uri, u).build(),
        None => get(uri),
    };
    outcome(send(&env.app, req).await).await
}

/// Pushes `{"v": 1}` to `uri` (whose storage key is `key`) and reports whether it was stored.
async fn push_as(env: &Env, who: Option<&User>, uri: &str, key: &str) -> String {
    let body = json!({"data": {"v": 1}});
    let req = match who {
        Some(u) => Signed::push(uri, u, &body).build(),
        None => push(uri, &body),
    };
    let got = outcome(send(&env.app, req).await).await;
    let kept = stored(&env.store, key).await.is_some();
    format!("{got}, {}", if kept { "stored" } else { "nothing stored" })
}

/// `restrictions` at the top level, per namespace and per collection: deny lists
/// refuse the identities listed, allow lists refuse everyone else (anonymous callers
/// too), deny wins over allow, and `actions` limits a restriction to some actions.
#[tokio::test]
async fn restrictions_server_namespace_collection() {
    let (alice, bob) = (user(1), user(2));
    let (a, b) = (Some(&alice), Some(&bob));
    let mut r = Report::default();

    // Top level.
    let e = env(
        &json!({"version": 1, "collections": [public("pub", "pub/{id}")],
                        "restrictions": [rule("deny", &[&bob])]}),
    );
    r.check(
        "top deny: bob pull",
        pull_as(&e, b, "/pull/pub/x").await,
        DENIED,
    );
    r.check(
        "top deny: bob push",
        push_as(&e, b, "/push/pub/b", "pub/b").await,
        PUSH_DENIED,
    );
    r.check(
        "top deny: alice pull",
        pull_as(&e, a, "/pull/pub/x").await,
        "200",
    );
    r.check(
        "top deny: alice push",
        push_as(&e, a, "/push/pub/a", "pub/a").await,
        PUSHED,
    );

    let e = env(
        &json!({"version": 1, "collections": [public("pub", "pub/{id}")],
                        "restrictions": [rule("allow", &[&alice])]}),
    );
    r.check(
        "top allow: bob pull",
        pull_as(&e, b, "/pull/pub/x").await,
        DENIED,
    );
    r.check(
        "top allow: bob push",
        push_as(&e, b, "/push/pub/b", "pub/b").await,
        PUSH_DENIED,
    );
    r.check(
        "top allow: anonymous pull",
        pull_as(&e, None, "/pull/pub/x").await,
        DENIED,
    );
    r.check(
        "top allow: anonymous push",
        push_as(&e, None, "/push/pub/n", "pub/n").await,
        PUSH_DENIED,
    );
    r.check(
        "top allow: alice pull",
        pull_as(&e, a, "/pull/pub/x").await,
        "200",
    );
    r.check(
        "top allow: alice push",
        push_as(&e, a, "/push/pub/a", "pub/a").await,
        PUSHED,
    );

    // Namespace level: the root is not affected.
    for (mode, who) in [("deny", &bob), ("allow", &alice)] {
        let e = env(
            &json!({"version": 1, "collections": [public("pub", "pub/{id}")],
            "namespaces": {"acme": {"collections": [public("ns", "ns/{id}")],
                                    "restrictions": [rule(mode, &[who])]}}}),
        );
        let l = |what: &str| format!("namespace {mode}: {what}");
        r.check(
            &l("bob pull"),
            pull_as(&e, b, "/acme/pull/ns/x").await,
            DENIED,
        );
        r.check(
            &l("bob push"),
            push_as(&e, b, "/acme/push/ns/b", "ns/b").await,
            PUSH_DENIED,
        );
        r.check(
            &l("alice pull"),
            pull_as(&e, a, "/acme/pull/ns/x").await,
            "200",
        );
        r.check(
            &l("alice push"),
            push_as(&e, a, "/acme/push/ns/a", "ns/a").await,
            PUSHED,
        );
        r.check(
            &l("bob pull at the root"),
            pull_as(&e, b, "/pull/pub/x").await,
            "200",
        );
        r.check(
            &l("bob push at the root"),
            push_as(&e, b, "/push/pub/b", "pub/b").await,
            PUSHED,
        );
        if mode == "allow" {
            r.check(
                &l("anonymous pull"),
                pull_as(&e, None, "/acme/pull/ns/x").await,
                DENIED,
            );
            r.check(
                &l("anonymous push"),
                push_as(&e, None, "/acme/push/ns/n", "ns/n").await,
                PUSH_DENIED,
            );
        }
    }

    // Collection level: the other collection is not affected.
    for (mode, who) in [("deny", &bob), ("allow", &alice)] {
        let e = env(&json!({"version": 1, "collections": [
            public("open", "open/{id}"),
            restricted("closed", "closed/{id}", json!([rule(mode, &[who])])),
        ]}));
        let l = |what: &str| format!("collection {mode}: {what}");
        r.check(
            &l("bob pull"),
            pull_as(&e, b, "/pull/closed/x").await,
            DENIED,
        );
        r.check(
            &l("bob push"),
            push_as(&e, b, "/push/closed/b", "closed/b").await,
            PUSH_DENIED,
        );
        r.check(
            &l("alice pull"),
            pull_as(&e, a, "/pull/closed/x").await,
            "200",
        );
        r.check(
            &l("alice push"),
            push_as(&e, a, "/push/closed/a", "closed/a").await,
            PUSHED,
        );
        r.check(
            &l("bob pull of another collection"),
            pull_as(&e, b, "/pull/open/x").await,
            "200",
        );
        r.check(
            &l("bob push to another collection"),
            push_as(&e, b, "/push/open/b", "open/b").await,
            PUSHED,
        );
        if mode == "allow" {
            r.check(
                &l("anonymous pull"),
                pull_as(&e, None, "/pull/closed/x").await,
                DENIED,
            );
            r.check(
                &l("anonymous push"),
                push_as(&e, None, "/push/closed/n", "closed/n").await,
                PUSH_DENIED,
            );
        }
        // A batch pull is a pull too.
        let params = percent(&json!({"closed": [{"id": "a"}], "open": [{"id": "b"}]}).to_string());
        let res = send(
            &e.app,
            Signed::get(
                &format!("/batch/pull?collections=closed%2Copen&params={params}"),
                &bob,
            )
            .build(),
        )
        .await;
        let body = json_body(res).await;
        r.check(
            &l("bob batch pull"),
            format!(
                "closed: {}, open: {}",
                body["collections"]["closed"], body["collections"]["open"][0]["data"]
            ),
            r#"closed: [{"error":"Forbidden"}], open: {"v":1}"#,
        );
    }

    // Deny wins over allow, at one level and across levels.
    let e = env(&json!({"version": 1, "collections": [
        restricted("both", "both/{id}", json!([rule("allow", &[&alice]), rule("deny", &[&alice])])),
    ]}));
    r.check(
        "allow+deny: alice pull",
        pull_as(&e, a, "/pull/both/x").await,
        DENIED,
    );
    r.check(
        "allow+deny: alice push",
        push_as(&e, a, "/push/both/a", "both/a").await,
        PUSH_DENIED,
    );
    let e = env(
        &json!({"version": 1, "restrictions": [rule("allow", &[&alice, &bob])],
        "collections": [public("pub", "pub/{id}"), restricted("x", "x/{id}", json!([rule("deny", &[&alice])]))]}),
    );
    r.check(
        "top allow + collection deny: alice pull",
        pull_as(&e, a, "/pull/x/x").await,
        DENIED,
    );
    r.check(
        "top allow + collection deny: alice push",
        push_as(&e, a, "/push/x/a", "x/a").await,
        PUSH_DENIED,
    );
    r.check(
        "top allow + collection deny: alice elsewhere",
        pull_as(&e, a, "/pull/pub/x").await,
        "200",
    );
    r.check(
        "top allow + collection deny: bob",
        pull_as(&e, b, "/pull/x/x").await,
        "200",
    );

    // `actions` limits a restriction.
    let e = env(&json!({"version": 1, "collections": [
        restricted("dp", "dp/{id}", json!([rule_for("deny", &[&bob], &["push"])])),
        restricted("ap", "ap/{id}", json!([rule_for("allow", &[&alice], &["push"])])),
        {"name": "days", "storagePath": "days/{id}", "readRoles": ["public"], "writeRoles": ["public"],
         "listable": true, "restrictions": [rule_for("deny", &[&bob], &["list"])]},
    ]}));
    r.check(
        "deny push only: bob pull",
        pull_as(&e, b, "/pull/dp/x").await,
        "200",
    );
    r.check(
        "deny push only: bob push",
        push_as(&e, b, "/push/dp/b", "dp/b").await,
        PUSH_DENIED,
    );
    r.check(
        "deny push only: alice push",
        push_as(&e, a, "/push/dp/a", "dp/a").await,
        PUSHED,
    );
    r.check(
        "allow push only: bob pull",
        pull_as(&e, b, "/pull/ap/x").await,
        "200",
    );
    r.check(
        "allow push only: anonymous pull",
        pull_as(&e, None, "/pull/ap/x").await,
        "200",
    );
    r.check(
        "allow push only: bob push",
        push_as(&e, b, "/push/ap/b", "ap/b").await,
        PUSH_DENIED,
    );
    r.check(
        "allow push only: anonymous push",
        push_as(&e, None, "/push/ap/n", "ap/n").await,
        PUSH_DENIED,
    );
    r.check(
        "allow push only: alice push",
        push_as(&e, a, "/push/ap/a", "ap/a").await,
        PUSHED,
    );
    r.check(
        "deny list only: bob list",
        pull_as(&e, b, "/list/days").await,
        DENIED,
    );
    r.check(
        "deny list only: alice list",
        pull_as(&e, a, "/list/days").await,
        "200",
    );
    r.check(
        "deny list only: bob pull",
        pull_as(&e, b, "/pull/days/x").await,
        "200",
    );
    r.check(
        "deny list only: bob push",
        push_as(&e, b, "/push/days/b", "days/b").await,
        PUSHED,
    );

    r.assert_empty("restrictions are not enforced");
}

// ---- 6. batch pulls of append-only logs --------------------------------------------------

const LOG_CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "log", "storagePath": "feed/log", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"requireAuthorSignature": false, "maxPullLimit": 50},
     "fieldPermissions": {"secret": {"readRoles": ["admin"]}}}
  ]
}"#;

/// A batch entry for a log follows the single pull's rules: a bound is required, and
/// fields the caller may not read are removed from every element.
#[tokio::test]
async fn batch_pull_of_append_only_log_is_bounded_and_filtered() {
    let app = app_from(LOG_CONFIG, DocStore::memory());
    for i in 0..5 {
        let res = send(
            &app,
            push(
                "/push/feed/log",
                &json!({"data": {"n": i, "secret": format!("s{i}")}}),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::OK, "append {i}");
    }
    // The single pull's rules.
    assert_error(
        send(&app, get("/pull/feed/log")).await,
        StatusCode::BAD_REQUEST,
        "pull_bound_required",
    )
    .await;
    let body = json_body(send(&app, get("/pull/feed/log?last=2")).await).await;
    let data: Vec<&Value> = body["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(data, [&json!({"n": 3}), &json!({"n": 4})]);

    // The batch without appendParams: the bound is required there too.
    let res = send(&app, get("/batch/pull?collections=log")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        json_body(res).await,
        json!({"collections": {"log": [{"error": "pull_bound_required"}]}}),
        "an unbounded batch pull of a log"
    );

    // With a bound: exactly that many elements, unreadable fields removed.
    let ap = percent(&json!({"log": [{"last": 2}]}).to_string());
    let res = send(
        &app,
        get(&format!("/batch/pull?collections=log&appendParams={ap}")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = json_body(res).await;
    let entry = &body["collections"]["log"][0];
    assert!(!entry.to_string().contains("secret"), "{entry}");
    let data: Vec<&Value> = entry["data"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {body}"))
        .iter()
        .map(|e| &e["data"])
        .collect();
    assert_eq!(data, [&json!({"n": 3}), &json!({"n": 4})]);
}
