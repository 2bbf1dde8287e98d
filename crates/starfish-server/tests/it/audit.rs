//! The audit trail: a walk of allowed and denied requests (401, 403, 409, 413,
//! 415, 429, 507) and admin actions gives exactly the expected records, and no
//! record carries a document's data, a token or a secret.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use starfish_server::audit::{AuditOptions, AuditRecord, AuditSink};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::{Arc, Mutex};

const ADMIN: &str = "admin-secret-0123456789";
const SECRET_DATA: &str = "the-secret-payload-7f3a";

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "maxBodyBytes": 256, "rateLimit": {"push": {"windowMs": 60000, "maxRequests": 6}}},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "pics", "storagePath": "pics/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "allowedMimeTypes": ["image/*"]}
  ],
  "namespaceTemplates": {"team": {
    "collections": [{"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]}],
    "quota": {"maxDocuments": 1}
  },
  "open": {
    "collections": [{"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]}]
  }}
}"#;

#[derive(Default)]
struct Kept(Mutex<Vec<AuditRecord>>);

impl AuditSink for Kept {
    fn record(&self, record: &AuditRecord) {
        self.0.lock().unwrap().push(record.clone());
    }
}

fn admin(method: &str, uri: &str, body: Option<Value>) -> Request<Body> {
    let b = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN}"));
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

/// (action, collection, documentKey, status, namespace, target) of a record.
type Seen = (String, String, String, u16, Option<String>, Option<String>);

fn seen(r: &AuditRecord) -> Seen {
    (
        r.action.clone(),
        r.collection.clone(),
        r.document_key.clone(),
        r.status_code,
        r.namespace.clone(),
        r.target.clone(),
    )
}

fn s(action: &str, collection: &str, key: &str, status: u16) -> Seen {
    (
        action.into(),
        collection.into(),
        key.into(),
        status,
        None,
        None,
    )
}

#[tokio::test]
async fn a_walk_of_decisions_gives_exactly_the_expected_records_and_no_secret() {
    let kept = Arc::new(Kept::default());
    let app = create_sync_router(
        SyncOptions::new(
            SyncConfig::from_json_str(CONFIG).unwrap(),
            DocStore::memory(),
        )
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_admin_key(ADMIN)
        .with_audit(AuditOptions::new(kept.clone(), "node-1")),
    )
    .unwrap();
    let a = user(1);

    // Allowed: a create, a pull, a signed write of one's own notes.
    let (_, created) = push_doc(&app, "/push/docs/a", json!({"s": SECRET_DATA}), None).await;
    send(&app, get("/pull/docs/a")).await;
    let notes = format!("/push/users/{}/notes", a.id);
    let res = send(
        &app,
        Signed::push(&notes, &a, &json!({"data": {"s": SECRET_DATA}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    // Denied: 409 stale base, 413 too large, 415 media type, 403 another's notes,
    // 401 a tampered signature, 429 over the rate limit.
    let stale = json!({"s": SECRET_DATA});
    assert_eq!(
        push_doc(&app, "/push/docs/a", stale, Some("stale")).await.0,
        StatusCode::CONFLICT
    );
    let big = json!({"s": "x".repeat(300)});
    assert_eq!(
        push_doc(&app, "/push/docs/b", big, None).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let text = Request::post("/push/pics/p")
        .header("content-type", "text/plain")
        .header("content-length", 2)
        .body(Body::from("hi"))
        .unwrap();
    assert_eq!(
        send(&app, text).await.status(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let other = user(2);
    let theirs = format!("/push/users/{}/notes", other.id);
    let res = send(
        &app,
        Signed::push(&theirs, &a, &json!({"data": {}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let mut forged = Signed::push(&notes, &a, &json!({"data": {"s": SECRET_DATA}}));
    forged.signed_path = "/push/elsewhere".into();
    assert_eq!(
        send(&app, forged.build()).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert!(created["hash"].is_string());
    let mut limited = StatusCode::OK;
    for n in 0..8 {
        let (status, _) = push_doc(&app, &format!("/push/docs/r{n}"), json!({"n": n}), None).await;
        limited = status;
    }
    assert_eq!(limited, StatusCode::TOO_MANY_REQUESTS);
    // Admin: create a namespace, fill its quota (507 past it), suspend, delete.
    let create = admin(
        "POST",
        "/_starfish/admin/namespaces",
        Some(json!({"name": "t1", "template": "team"})),
    );
    assert_eq!(send(&app, create).await.status(), StatusCode::CREATED);
    assert_eq!(
        push_doc(&app, "/t1/push/docs/x", json!({"n": 1}), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        push_doc(&app, "/t1/push/docs/y", json!({"n": 2}), None)
            .await
            .0,
        StatusCode::INSUFFICIENT_STORAGE
    );
    let suspend = admin("POST", "/_starfish/admin/namespaces/t1/suspend", None);
    assert_eq!(send(&app, suspend).await.status(), StatusCode::OK);
    let wrong_key = Request::builder()
        .method("DELETE")
        .uri("/_starfish/admin/namespaces/t1")
        .header("authorization", "Bearer not-the-admin-key-0123456789")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app, wrong_key).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let records = kept.0.lock().unwrap().clone();
    let notes_key = format!("users/{}/notes", a.id);
    let theirs_key = format!("users/{}/notes", other.id);
    let mut expected = vec![
        s("push", "docs", "docs/a", 200),
        s("pull", "docs", "docs/a", 200),
        s("push", "notes", &notes_key, 200),
        s("push", "docs", "docs/a", 409),
        s("push", "docs", "docs/b", 413),
        s("push", "pics", "pics/p", 415),
        s("push", "notes", &theirs_key, 403),
        s("push", "notes", &notes_key, 401),
    ];
    for n in 0..8 {
        // Six pushes to `docs` a minute: the create, the 409 and the 413 counted.
        let status = if n < 4 { 200 } else { 429 };
        expected.push(s("push", "docs", &format!("docs/r{n}"), status));
    }
    let admin_record = |action: &str, status: u16| {
        (
            format!("admin.{action}"),
            String::new(),
            String::new(),
            status,
            None,
            Some("t1".into()),
        )
    };
    // The created namespace is the create's target (its name is in the body).
    let mut tail = vec![admin_record("namespace.create", 201)];
    tail.push((
        "push".into(),
        "docs".into(),
        "docs/x".into(),
        200,
        Some("t1".into()),
        None,
    ));
    tail.push((
        "push".into(),
        "docs".into(),
        "docs/y".into(),
        507,
        Some("t1".into()),
        None,
    ));
    tail.push(admin_record("namespace.suspend", 200));
    tail.push(admin_record("namespace.delete", 401));
    expected.extend(tail);
    let got: Vec<Seen> = records.iter().map(seen).collect();
    assert_eq!(got, expected, "{records:#?}");

    // Who: the signed writer; success and reasons; the node.
    assert_eq!(records[2].identity.as_deref(), Some(a.id.as_str()));
    assert!(records.iter().all(|r| r.node == "node-1"));
    assert!(records.iter().all(|r| r.success == (r.status_code < 300)));
    assert!(
        records
            .iter()
            .filter(|r| !r.success)
            .all(|r| r.reason.is_some()),
        "{records:#?}"
    );
    assert_eq!(records[0].params.as_ref().unwrap()["id"], "a");
    // Never the data, a token, a signature, a key or the admin secret.
    let text = serde_json::to_string(&records).unwrap();
    for secret in [SECRET_DATA, ADMIN, "not-the-admin-key"] {
        assert!(!text.contains(secret), "a record holds {secret}");
    }
    assert!(!text.contains("Cap ") && !text.contains("Bearer"), "{text}");
}

/// A tenant's own trail: kept in its part of the store, read by its admin, by no
/// other tenant's, and gone with it.
#[tokio::test]
async fn a_tenant_reads_its_own_trail_and_no_other_tenants() {
    let store = DocStore::memory();
    let kept = Arc::new(Kept::default());
    let audit = AuditOptions::new(kept.clone(), "node-1")
        .with_tenant_trails(std::time::Duration::from_secs(86_400));
    let app = create_sync_router(
        SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_admin_key(ADMIN)
            .with_audit(audit),
    )
    .unwrap();
    for name in ["ta", "tb"] {
        let create = admin(
            "POST",
            "/_starfish/admin/namespaces",
            Some(json!({"name": name, "template": "open"})),
        );
        assert_eq!(send(&app, create).await.status(), StatusCode::CREATED);
    }
    assert_eq!(
        push_doc(&app, "/ta/push/docs/x", json!({"s": SECRET_DATA}), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, get("/ta/pull/docs/nope")).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        push_doc(&app, "/tb/push/docs/y", json!({"n": 1}), None)
            .await
            .0,
        StatusCode::OK
    );
    // An API key that administers tb only.
    let create_key = admin(
        "POST",
        "/_starfish/admin/keys",
        Some(json!({"grants": {"tb": ["read"]}, "admin": true})),
    );
    let res = send(&app, create_key).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = json_body(res).await["key"].as_str().unwrap().to_owned();

    let read = |uri: &str, key: &str| {
        Request::get(uri)
            .header("authorization", format!("Bearer {key}"))
            .body(Body::empty())
            .unwrap()
    };
    let res = send(&app, read("/_starfish/admin/namespaces/ta/audit", ADMIN)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let trail = json_body(res).await;
    let actions: Vec<(&str, &str)> = trail["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["documentKey"].as_str().unwrap(),
            )
        })
        .collect();
    // Its creation too: the create's record goes to the trail of what it created.
    assert_eq!(
        actions,
        [
            ("admin.namespace.create", ""),
            ("push", "docs/x"),
            ("pull", "docs/nope")
        ],
        "{trail}"
    );
    assert_eq!(trail["records"][0]["target"], "ta", "{trail}");
    assert!(!trail.to_string().contains(SECRET_DATA));
    // tb's admin reads tb's trail, never ta's.
    let res = send(&app, read("/_starfish/admin/namespaces/tb/audit", &token)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let theirs = json_body(res).await;
    assert_eq!(theirs["records"][1]["documentKey"], "docs/y", "{theirs}");
    // The key's creation names the key it made (by id, never its token), and is
    // in the trail of the namespace it administers.
    let key_id = token.split('_').nth(1).unwrap();
    let created = &theirs["records"][2];
    assert_eq!(created["action"], "admin.key.create", "{theirs}");
    assert_eq!(created["target"], key_id, "{theirs}");
    assert!(!theirs.to_string().contains(&token));
    assert!(!theirs.to_string().contains("docs/x"));
    let res = send(&app, read("/_starfish/admin/namespaces/ta/audit", &token)).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // Kept inside ta's part of the store; deleted with it.
    let keys: Vec<String> = futures::StreamExt::collect::<Vec<_>>(store.inner().list(None))
        .await
        .into_iter()
        .map(|m| m.unwrap().location.to_string())
        .collect();
    let ta_trail: Vec<&String> = keys
        .iter()
        .filter(|k| k.contains("/_starfish/audit/ta/"))
        .collect();
    assert!(
        !ta_trail.is_empty() && ta_trail.iter().all(|k| k.starts_with("_starfish/t/ta/")),
        "{keys:?}"
    );
    let delete = admin("DELETE", "/_starfish/admin/namespaces/ta", None);
    assert_eq!(send(&app, delete).await.status(), StatusCode::OK);
    let after: Vec<String> = futures::StreamExt::collect::<Vec<_>>(store.inner().list(None))
        .await
        .into_iter()
        .map(|m| m.unwrap().location.to_string())
        .collect();
    assert!(
        after.iter().all(|k| !k.contains("/_starfish/audit/ta/")),
        "{after:?}"
    );
}

#[tokio::test]
async fn a_record_keeps_the_clients_request_id_when_short_and_plain() {
    let kept = Arc::new(Kept::default());
    let app = create_sync_router(
        SyncOptions::new(
            SyncConfig::from_json_str(CONFIG).unwrap(),
            DocStore::memory(),
        )
        .with_audit(AuditOptions::new(kept.clone(), "node-1")),
    )
    .unwrap();
    let pull = |id: Option<&str>, others: usize| {
        let mut request = Request::get("/pull/docs/a");
        for n in 0..others {
            request = request.header(format!("x-other-{n}"), "v");
        }
        if let Some(id) = id {
            request = request.header("X-Request-Id", id);
        }
        request.body(Body::empty()).unwrap()
    };
    let long = "r".repeat(65);
    let asked = [
        (Some("req-1"), 0, Some("req-1")),
        // Among a few headers and among many (looked up another way).
        (Some("req-2"), 3, Some("req-2")),
        (Some("req-3"), 12, Some("req-3")),
        (Some(long.as_str()), 0, None),
        (Some("two words"), 0, None),
        (None, 0, None),
        (None, 12, None),
    ];
    for (id, others, _) in asked {
        send(&app, pull(id, others)).await;
    }
    let records = kept.0.lock().unwrap();
    let ids: Vec<Option<&str>> = records.iter().map(|r| r.request_id.as_deref()).collect();
    let expected: Vec<Option<&str>> = asked.iter().map(|(_, _, kept)| *kept).collect();
    assert_eq!(ids, expected);
}
