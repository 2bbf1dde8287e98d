//! Webhook ingress: HMAC-verified inbound posts (the reference's headers, codes and
//! 300 s tolerance), accepted once, transformed by JSON pointers, and pushed
//! through the whole pipeline (roles, author proofs, quotas, audit) as the route's
//! own identity when it has one.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use starfish_protocol::identity::Identity;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::webhooks::{Transform, WebhookRoute, Webhooks};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const SECRET: &[u8] = b"whsec-0123456789";

/// The admin key of the runtime-namespace tests.
const KEY: &str = "admin-secret-0123456789";

/// An admin request with [`KEY`], its body JSON.
fn admin(method: &str, uri: &str, body: Option<Value>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {KEY}"))
        .header("content-type", "application/json")
        .body(body.map_or(Body::empty(), |v| Body::from(v.to_string())))
        .unwrap()
}

fn config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [
            {"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"]},
            {"name": "events", "storagePath": "events/log", "readRoles": ["public"], "writeRoles": ["public"],
             "appendOnly": {"requireAuthorSignature": false}},
            {"name": "bot", "storagePath": "bots/{identity}/log", "readRoles": ["public"], "writeRoles": ["self"],
             "appendOnly": {}},
            {"name": "limited", "storagePath": "limited/{id}", "readRoles": ["public"], "writeRoles": ["public"],
             "rateLimit": {"push": {"windowMs": 60000, "maxRequests": 1}}}
        ],
        "namespaces": {"acme": {"quota": {"maxDocuments": 1}, "isolation": "prefixed", "collections": [
            {"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
        ]}}
    }))
    .unwrap()
}

/// The routes: `ci` creates `inbox/<delivery id>` from two fields; `chat` (with a
/// timestamp) appends the whole `message` object to `events/log`; `bot` appends to
/// the bot identity's own log (writeRoles self, author proof required); `anon-bot`
/// tries the same without an identity; `acme` fills a namespace at its quota.
fn app(clock: &ManualClock, bot: &Identity) -> Router {
    let ci = Transform::fields([("status", "/build/status"), ("repo", "/repository/name")])
        .unwrap()
        .with_param("id", "/delivery")
        .unwrap();
    let bot_target = format!("/push/bots/{}/log", bot.user_id());
    let webhooks = Webhooks::new()
        .with(
            "ci",
            WebhookRoute::new("/push/inbox/{id}", SECRET, ci.clone()).unwrap(),
        )
        .with(
            "chat",
            WebhookRoute::new(
                "/push/events/log",
                SECRET,
                Transform::whole("/message").unwrap(),
            )
            .unwrap()
            .with_timestamp_header("X-Webhook-Timestamp", 300)
            .unwrap(),
        )
        .with(
            "bot",
            WebhookRoute::new(&bot_target, SECRET, Transform::whole("").unwrap())
                .unwrap()
                .with_identity(bot.clone()),
        )
        .with(
            "anon-bot",
            WebhookRoute::new(&bot_target, SECRET, Transform::whole("").unwrap()).unwrap(),
        )
        .with(
            "acme",
            WebhookRoute::new("/acme/push/inbox/{id}", SECRET, ci.clone()).unwrap(),
        )
        .with(
            "lim",
            WebhookRoute::new("/push/limited/{id}", SECRET, ci).unwrap(),
        );
    create_sync_router(
        SyncOptions::new(config(), DocStore::memory())
            .with_clock(Arc::new(clock.clone()))
            .with_webhooks(webhooks),
    )
    .unwrap()
}

fn hmac_hex(message: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(message);
    hex::encode(mac.finalize().into_bytes())
}

/// A webhook post of `body`, signed over the body (or `ts.body` when `ts` is given).
fn hook(id: &str, body: &Value, ts: Option<u64>) -> Request<Body> {
    let raw = body.to_string();
    let mut req =
        Request::post(format!("/webhook/{id}")).header("content-type", "application/json");
    match ts {
        Some(ts) => {
            req = req.header("x-webhook-timestamp", ts.to_string()).header(
                "x-webhook-signature",
                hmac_hex(format!("{ts}.{raw}").as_bytes()),
            );
        }
        None => req = req.header("x-webhook-signature", hmac_hex(raw.as_bytes())),
    }
    req.body(Body::from(raw)).unwrap()
}

async fn answer(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let res = send(app, req).await;
    let status = res.status();
    let bytes = body_bytes(res).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn bot() -> Identity {
    Identity::generate(T0 / 1000).unwrap()
}

#[tokio::test]
async fn a_signed_webhook_becomes_a_push_once() {
    let clock = ManualClock::new(T0);
    let app = app(&clock, &bot());
    let payload =
        json!({"delivery": "d-1", "build": {"status": "green"}, "repository": {"name": "api"}});
    let (status, body) = answer(&app, hook("ci", &payload, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pulled = json_body(send(&app, get("/pull/inbox/d-1")).await).await;
    assert_eq!(pulled["data"], json!({"status": "green", "repo": "api"}));
    assert_eq!(pulled["hash"], body["hash"]);
    // The same delivery again: refused before anything is written.
    let (status, body) = answer(&app, hook("ci", &payload, None)).await;
    assert_eq!(
        (status, body),
        (StatusCode::UNAUTHORIZED, json!({"error": "replayed"}))
    );
}

#[tokio::test]
async fn callers_are_verified_as_the_reference_verifies_them() {
    let clock = ManualClock::new(T0);
    let app = app(&clock, &bot());
    let now = T0 / 1000;
    let message = json!({"message": {"text": "hi"}});
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            hook("nope", &message, None),
            StatusCode::NOT_FOUND,
            "unknown_webhook",
        ),
        (
            Request::get("/webhook/chat").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Request::post("/webhook/chat")
                .body(Body::from(message.to_string()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
            "missing_signature",
        ),
        // Signed over the body alone: this route signs `ts.body`.
        (
            hook("chat", &message, None),
            StatusCode::UNAUTHORIZED,
            "missing_timestamp",
        ),
        (
            hook("chat", &message, Some(now - 301)),
            StatusCode::UNAUTHORIZED,
            "timestamp_out_of_tolerance",
        ),
        (
            hook("chat", &message, Some(now + 301)),
            StatusCode::UNAUTHORIZED,
            "timestamp_out_of_tolerance",
        ),
        (
            {
                let mut req = hook("chat", &message, Some(now));
                req.headers_mut()
                    .insert("x-webhook-timestamp", (now + 1).into());
                req
            },
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
        ),
        (
            {
                let mut req = hook("ci", &message, None);
                req.headers_mut()
                    .insert("x-webhook-signature", "00ff".parse().unwrap());
                req
            },
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
        ),
        // Verified, but the transform finds no `message` object.
        (
            hook("chat", &json!({"text": "hi"}), Some(now)),
            StatusCode::BAD_REQUEST,
            "rejected_by_transform",
        ),
        (
            hook("chat", &json!({"message": "hi"}), Some(now + 1)),
            StatusCode::BAD_REQUEST,
            "rejected_by_transform",
        ),
        // A parameter that breaks the path rules.
        (
            hook(
                "ci",
                &json!({"delivery": "../x", "build": {"status": 1}, "repository": {"name": 2}}),
                None,
            ),
            StatusCode::BAD_REQUEST,
            "rejected_by_transform",
        ),
    ];
    for (req, status, error) in cases {
        let (got, body) = answer(&app, req).await;
        assert_eq!((got, body), (status, json!({"error": error})));
    }
    // Nothing was written by any of them.
    let log = json_body(send(&app, get("/pull/events/log?checkpoint=0")).await).await;
    assert_eq!(log["hash"], "", "{log}");
    // Within the tolerance, accepted: appended as sent.
    let (status, body) = answer(&app, hook("chat", &message, Some(now - 299))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let log = json_body(send(&app, get("/pull/events/log?checkpoint=0")).await).await;
    assert_eq!(log["data"]["items"][0]["data"]["text"], "hi", "{log}");
}

#[tokio::test]
async fn the_push_goes_through_the_pipeline_as_the_routes_identity() {
    let clock = ManualClock::new(T0);
    let bot = bot();
    let app = app(&clock, &bot);
    let event = json!({"kind": "deploy", "n": 1});
    // Without an identity, the bot's own log (writeRoles self) refuses it.
    let (status, _) = answer(&app, hook("anon-bot", &event, None)).await;
    assert!(
        status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN,
        "{status}"
    );
    // As the bot: signed by its device certificate, with its author proof.
    let (status, body) = answer(&app, hook("bot", &event, None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let log = json_body(
        send(
            &app,
            get(&format!("/pull/bots/{}/log?checkpoint=0", bot.user_id())),
        )
        .await,
    )
    .await;
    let item = &log["data"]["items"][0];
    assert_eq!(item["data"]["kind"], "deploy", "{log}");
    assert!(item["authorPubkey"].is_string(), "{log}");
    // Quotas hold: a namespace with room for one document takes one webhook.
    let one = json!({"delivery": "a", "build": {"status": "x"}, "repository": {"name": "r"}});
    let two = json!({"delivery": "b", "build": {"status": "x"}, "repository": {"name": "r"}});
    assert_eq!(
        answer(&app, hook("acme", &one, None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        answer(&app, hook("acme", &two, None)).await.0,
        StatusCode::INSUFFICIENT_STORAGE
    );
}

#[tokio::test]
async fn concurrent_deliveries_each_land_once_and_replays_never() {
    let clock = ManualClock::new(T0);
    let app = app(&clock, &bot());
    let now = T0 / 1000;
    // 20 distinct messages and, for each, 4 copies sent at once.
    let mut tasks = Vec::new();
    for n in 0..20 {
        for _ in 0..4 {
            let app = app.clone();
            let message = json!({"message": {"n": n}});
            tasks.push(tokio::spawn(async move {
                (n, answer(&app, hook("chat", &message, Some(now))).await.0)
            }));
        }
    }
    let mut accepted = vec![0; 20];
    for task in tasks {
        let (n, status) = task.await.unwrap();
        match status {
            StatusCode::OK => accepted[n] += 1,
            StatusCode::UNAUTHORIZED => {}
            other => panic!("{other}"),
        }
    }
    assert!(accepted.iter().all(|&a| a == 1), "{accepted:?}");
    let log = json_body(send(&app, get("/pull/events/log?checkpoint=0")).await).await;
    let mut seen: Vec<u64> = log["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["data"]["n"].as_u64().unwrap())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
}

#[test]
fn a_namespace_named_webhook_is_refused_beside_webhooks() {
    let config = SyncConfig::from_value(json!({
        "version": 1, "collections": [],
        "namespaces": {"webhook": {"collections": [
            {"name": "a", "storagePath": "a/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
        ]}}
    }))
    .unwrap();
    let webhooks = Webhooks::new().with(
        "x",
        WebhookRoute::new("/push/a/b", SECRET, Transform::whole("").unwrap()).unwrap(),
    );
    let built =
        create_sync_router(SyncOptions::new(config, DocStore::memory()).with_webhooks(webhooks));
    assert!(built.is_err());
    assert!(WebhookRoute::new("/push/a/b", b"", Transform::whole("").unwrap()).is_err());
}

#[tokio::test]
async fn a_delivery_whose_push_may_succeed_later_can_be_sent_again() {
    let clock = ManualClock::new(T0);
    let app = app(&clock, &bot());
    let one = json!({"delivery": "a", "build": {"status": "x"}, "repository": {"name": "r"}});
    let two = json!({"delivery": "b", "build": {"status": "x"}, "repository": {"name": "r"}});
    assert_eq!(
        answer(&app, hook("lim", &one, None)).await.0,
        StatusCode::OK
    );
    // One push a minute: the second delivery is refused for now...
    assert_eq!(
        answer(&app, hook("lim", &two, None)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // ...and its retry, the same bytes a minute later, is taken, not a replay.
    clock.advance(60_000);
    assert_eq!(
        answer(&app, hook("lim", &two, None)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        answer(&app, hook("lim", &two, None)).await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// A runtime namespace's own webhook: created by its admin (the secret shown
/// once), served at `/_starfish/webhooks/<ns>/<id>`, pushing only into that
/// namespace, refused to another namespace's admin, and gone once deleted.
#[tokio::test]
async fn a_runtime_namespace_creates_serves_and_deletes_its_own_webhook() {
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": [{"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"]}],
        "namespaceTemplates": {"team": {"collections": [
            {"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"]}]}}
    }))
    .unwrap();
    let store = DocStore::memory();
    let app = create_sync_router(
        SyncOptions::new(config, store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_admin_key(KEY),
    )
    .unwrap();
    for name in ["t1", "t2"] {
        let res = send(
            &app,
            admin(
                "POST",
                "/_starfish/admin/namespaces",
                Some(json!({"name": name, "template": "team"})),
            ),
        )
        .await;
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let hook_def = json!({"id": "ci", "target": "/push/inbox/{id}",
        "transform": {"data": {"status": "/status"}, "params": {"id": "/id"}}});
    let res = send(
        &app,
        admin(
            "POST",
            "/_starfish/admin/namespaces/t1/webhooks",
            Some(hook_def.clone()),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let created = json_body(res).await;
    assert_eq!(created["url"], "/_starfish/webhooks/t1/ci");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(secret.len(), 64);
    // The id is taken; a target outside push/ or into another namespace is refused.
    let res = send(
        &app,
        admin(
            "POST",
            "/_starfish/admin/namespaces/t1/webhooks",
            Some(hook_def),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    for target in ["/t2/push/inbox/{id}", "/pull/inbox/{id}"] {
        let bad = json!({"id": "x", "target": target, "transform": {"data": ""}});
        let res = send(
            &app,
            admin("POST", "/_starfish/admin/namespaces/t1/webhooks", Some(bad)),
        )
        .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{target}");
    }
    // The listing never shows the secret.
    let listed = json_body(
        send(
            &app,
            admin("GET", "/_starfish/admin/namespaces/t1/webhooks", None),
        )
        .await,
    )
    .await;
    assert_eq!(listed["webhooks"][0]["id"], "ci");
    assert!(!listed.to_string().contains(&secret));

    let deliver = |body: &Value, key: &[u8]| ci_signed(body.to_string(), key);
    // Nothing but a POST is a delivery.
    let res = send(&app, get("/_starfish/webhooks/t1/ci")).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let payload = json!({"id": "d1", "status": "green"});
    assert_eq!(
        send(&app, deliver(&payload, b"guess")).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = answer(&app, deliver(&payload, secret.as_bytes())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let pulled = json_body(send(&app, get("/t1/pull/inbox/d1")).await).await;
    assert_eq!(pulled["data"], json!({"status": "green"}));
    assert_eq!(
        json_body(send(&app, get("/t2/pull/inbox/d1")).await).await["hash"],
        ""
    );
    assert_eq!(
        json_body(send(&app, get("/pull/inbox/d1")).await).await["hash"],
        ""
    );
    // Kept in t1's own part of the store.
    let keys: Vec<String> = futures::StreamExt::collect::<Vec<_>>(store.inner().list(None))
        .await
        .into_iter()
        .map(|m| m.unwrap().location.to_string())
        .collect();
    let kept: Vec<&String> = keys
        .iter()
        .filter(|k| k.ends_with("_starfish/webhooks/ci"))
        .collect();
    assert!(
        kept.len() == 1 && kept[0].starts_with("_starfish/t/t1/"),
        "{keys:?}"
    );
    // Deleted: unknown from then on.
    let res = send(
        &app,
        admin("DELETE", "/_starfish/admin/namespaces/t1/webhooks/ci", None),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let again = json!({"id": "d2", "status": "red"});
    let (status, body) = answer(&app, deliver(&again, secret.as_bytes())).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "unknown_webhook"}))
    );
}

/// A config with no collections of its own and a `team` template with a public
/// `inbox`: the runtime-namespace webhook tests'.
fn team_config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1, "collections": [],
        "namespaceTemplates": {"team": {"collections": [
            {"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"]}]}}
    }))
    .unwrap()
}

/// Namespace `t1`'s webhooks, as its admin manages them.
const T1_HOOKS: &str = "/_starfish/admin/namespaces/t1/webhooks";

/// The definition of `t1`'s webhook `ci`: a push to `inbox/<id>`.
fn ci_hook() -> Value {
    json!({"id": "ci", "target": "/push/inbox/{id}",
        "transform": {"data": {"status": "/status"}, "params": {"id": "/id"}}})
}

/// Creates namespace `t1` (template `team`) on `app`, and its webhook `ci`: the
/// webhook's secret.
async fn t1_with_ci_hook(app: &Router) -> String {
    let created = json!({"name": "t1", "template": "team"});
    let res = send(
        app,
        admin("POST", "/_starfish/admin/namespaces", Some(created)),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = send(app, admin("POST", T1_HOOKS, Some(ci_hook()))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    json_body(res).await["secret"].as_str().unwrap().to_owned()
}

/// A delivery to `t1`'s webhook `ci` of document `d<n>`, signed with `key`.
fn ci_delivery(n: u32, key: &[u8]) -> Request<Body> {
    ci_signed(
        json!({"id": format!("d{n}"), "status": "green"}).to_string(),
        key,
    )
}

/// A delivery of `raw` to `t1`'s webhook `ci`, signed with `key`.
fn ci_signed(raw: String, key: &[u8]) -> Request<Body> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(raw.as_bytes());
    Request::post("/_starfish/webhooks/t1/ci")
        .header(
            "x-webhook-signature",
            hex::encode(mac.finalize().into_bytes()),
        )
        .body(Body::from(raw))
        .unwrap()
}

/// What an unverified caller costs: a namespace's webhook route is read from the
/// store once for many deliveries, signed or not (it holds the secret they are
/// verified with); deleted or created again on this node, the change holds at once.
#[tokio::test]
async fn a_namespace_webhooks_route_is_read_once_for_many_deliveries() {
    let metrics = starfish_server::Metrics::new();
    let app = create_sync_router(
        SyncOptions::new(team_config(), DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_admin_key(KEY)
            .with_metrics(metrics.clone()),
    )
    .unwrap();
    let secret = t1_with_ci_hook(&app).await;
    let hooks = T1_HOOKS;
    let def = ci_hook();
    let deliver = ci_delivery;
    // Every store call: reads, listings, writes.
    let gets = || {
        let text = metrics.render();
        let line = text
            .lines()
            .filter(|l| l.starts_with("starfish_store_request_seconds_count{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
        line.sum::<f64>()
    };
    assert_eq!(
        send(&app, deliver(0, secret.as_bytes())).await.status(),
        StatusCode::OK
    );
    let before = gets();
    for n in 1..=30 {
        let res = send(&app, deliver(n, b"a guess")).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(gets(), before, "thirty refused deliveries read nothing");
    // Ids the namespace does not have, each new: one listing answers them all.
    for n in 0..30 {
        let req = Request::post(format!("/_starfish/webhooks/t1/sprayed-{n}"))
            .header("x-webhook-signature", "00")
            .body(Body::from("{}"))
            .unwrap();
        assert_eq!(send(&app, req).await.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(gets(), before, "thirty unknown ids read nothing");
    // Deleted, then created again with a new secret: at once on this node.
    let res = send(&app, admin("DELETE", &format!("{hooks}/ci"), None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(&app, deliver(31, secret.as_bytes())).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let res = send(&app, admin("POST", hooks, Some(def))).await;
    let renewed = json_body(res).await["secret"].as_str().unwrap().to_owned();
    let res = send(&app, deliver(32, secret.as_bytes())).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the old secret is gone"
    );
    let res = send(&app, deliver(33, renewed.as_bytes())).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[derive(Default)]
struct Kept(std::sync::Mutex<Vec<starfish_server::audit::AuditRecord>>);

impl starfish_server::audit::AuditSink for Kept {
    fn record(&self, record: &starfish_server::audit::AuditRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

/// A delivery refused before its push is a decision of its own in the audit
/// trail (action `webhook`, the webhook as its target, the refusal as its reason,
/// never the payload); one that is pushed is recorded as the push it became.
#[tokio::test]
async fn refused_deliveries_are_audited_and_pushes_as_pushes() {
    let ci = Transform::fields([("status", "/build/status")])
        .unwrap()
        .with_param("id", "/delivery")
        .unwrap();
    let route = WebhookRoute::new("/push/inbox/{id}", SECRET, ci).unwrap();
    let kept = Arc::new(Kept::default());
    let app = create_sync_router(
        SyncOptions::new(config(), DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_webhooks(Webhooks::new().with("ci", route))
            .with_audit(starfish_server::audit::AuditOptions::new(
                kept.clone(),
                "n1",
            )),
    )
    .unwrap();
    let payload = json!({"delivery": "d1", "build": {"status": "secret-payload"}});
    let mut forged = hook("ci", &payload, None);
    forged
        .headers_mut()
        .insert("x-webhook-signature", "00".repeat(32).parse().unwrap());
    assert_eq!(send(&app, forged).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(&app, hook("nope", &payload, None)).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&app, hook("ci", &payload, None)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        send(&app, hook("ci", &payload, None)).await.status(),
        StatusCode::UNAUTHORIZED,
        "replayed"
    );
    let records = kept.0.lock().unwrap().clone();
    let seen: Vec<(String, u16, Option<String>, Option<String>)> = records
        .iter()
        .map(|r| {
            (
                r.action.clone(),
                r.status_code,
                r.target.clone(),
                r.reason.clone(),
            )
        })
        .collect();
    let webhook = |status, target: &str, reason: &str| {
        (
            "webhook".to_owned(),
            status,
            Some(target.to_owned()),
            Some(reason.to_owned()),
        )
    };
    assert_eq!(seen[0], webhook(401, "webhook:ci", "invalid_signature"));
    assert_eq!(seen[1], webhook(404, "webhook:nope", "unknown_webhook"));
    assert_eq!((seen[2].0.as_str(), seen[2].1), ("push", 200));
    assert_eq!(seen[3], webhook(401, "webhook:ci", "replayed"));
    assert_eq!(records.len(), 4);
    let text = serde_json::to_string(&records).unwrap();
    assert!(
        !text.contains("secret-payload") && !text.contains("whsec"),
        "{text}"
    );
}

/// Two nodes over one store, deliveries racing a namespace's webhook being deleted
/// and created again: on the node that changed it the change holds at once (every
/// delivery that starts after the answer), on the other within the documented
/// bound (`TENANT_ROUTE_TTL`, 5 s); and every delivery answered `200` left its
/// document, none refused left one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_changed_on_one_node_holds_there_at_once_and_on_another_within_the_bound() {
    const RACERS: u32 = 20;
    let store = DocStore::memory();
    let node = || {
        create_sync_router(
            SyncOptions::new(team_config(), store.clone())
                .with_clock(Arc::new(ManualClock::new(T0)))
                .with_admin_key(KEY),
        )
        .unwrap()
    };
    let (a, b) = (node(), node());
    let first = t1_with_ci_hook(&a).await;
    let (hooks, def) = (T1_HOOKS, ci_hook());
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    // `RACERS` deliveries at once on `app` signed with `key`: (document id, status).
    let racing = |app: &Router, key: &str| {
        let requests: Vec<_> = (0..RACERS)
            .map(|_| {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let req = ci_delivery(n, key.as_bytes());
                let app = app.clone();
                tokio::spawn(async move { (format!("d{n}"), send(&app, req).await.status()) })
            })
            .collect();
        async move {
            let mut answers = Vec::new();
            for r in requests {
                answers.push(r.await.unwrap());
            }
            answers
        }
    };
    let statuses = |answers: &[(String, StatusCode)]| {
        let mut s: Vec<u16> = answers.iter().map(|(_, s)| s.as_u16()).collect();
        s.sort_unstable();
        s.dedup();
        s
    };
    let mut answered = Vec::new();
    // Both nodes serve it (each has now read it once).
    for app in [&a, &b] {
        let got = racing(app, &first).await;
        assert_eq!(statuses(&got), [200], "{got:?}");
        answered.extend(got);
    }
    // Deleted on A while deliveries race it on both nodes.
    let during_a = racing(&a, &first);
    let during_b = racing(&b, &first);
    let deleted = send(&a, admin("DELETE", &format!("{hooks}/ci"), None));
    let (during_a, during_b, deleted) = tokio::join!(during_a, during_b, deleted);
    assert_eq!(deleted.status(), StatusCode::OK);
    for got in [&during_a, &during_b] {
        assert!(
            statuses(got).iter().all(|s| [200, 404].contains(s)),
            "{got:?}"
        );
    }
    answered.extend(during_a);
    answered.extend(during_b);
    // A: at once.
    let after = racing(&a, &first).await;
    assert_eq!(statuses(&after), [404], "{after:?}");
    answered.extend(after);
    // B: within the bound.
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let later = racing(&b, &first).await;
    assert_eq!(statuses(&later), [404], "{later:?}");
    answered.extend(later);
    // Created again on A with a new secret: at once on A, within the bound on B.
    let res = send(&a, admin("POST", hooks, Some(def))).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let second = json_body(res).await["secret"].as_str().unwrap().to_owned();
    let renewed = racing(&a, &second).await;
    assert_eq!(statuses(&renewed), [200], "{renewed:?}");
    answered.extend(renewed);
    let old = racing(&a, &first).await;
    assert_eq!(statuses(&old), [401], "{old:?}");
    answered.extend(old);
    tokio::time::sleep(std::time::Duration::from_millis(5_200)).await;
    let on_b = racing(&b, &second).await;
    assert_eq!(statuses(&on_b), [200], "{on_b:?}");
    answered.extend(on_b);
    let old_on_b = racing(&b, &first).await;
    assert_eq!(statuses(&old_on_b), [401], "{old_on_b:?}");
    answered.extend(old_on_b);
    // A document for each delivery answered 200, on either node; none for the rest.
    for (id, status) in &answered {
        let pulled = json_body(send(&b, get(&format!("/t1/pull/inbox/{id}"))).await).await;
        let stored = pulled["hash"] != "";
        assert_eq!(stored, *status == StatusCode::OK, "{id}: {status} {pulled}");
    }
}
