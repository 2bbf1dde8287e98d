//! Per-namespace request limits: a namespace-wide count per window, a per-caller
//! count (identity, API key, or IP for anonymous callers), and requests in flight;
//! `429` with `Retry-After` past them, other namespaces untouched; changeable for a
//! runtime namespace through the admin API.

use crate::common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const ADMIN: &str = "admin-secret-0123456789";

fn collections() -> Value {
    json!([
        {"name": "docs", "storagePath": "docs/{id}",
         "readRoles": ["public"], "writeRoles": ["public"]},
        {"name": "notes", "storagePath": "users/{identity}/notes",
         "readRoles": ["self"], "writeRoles": ["self"]}
    ])
}

fn node(limits: Value, clock: &ManualClock) -> Router {
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaces": {
            "acme": {"collections": collections(), "limits": limits},
            "globex": {"collections": collections()}
        },
        "namespaceTemplates": {"team": {"collections": collections(),
            "limits": {"windowMs": 60000, "maxRequestsPerIdentity": 2}}}
    }))
    .unwrap();
    create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(clock.clone()))
            .with_admin_key(ADMIN),
    )
    .unwrap()
}

async fn assert_limited(res: axum::response::Response, message: &str) {
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    assert_error(res, StatusCode::TOO_MANY_REQUESTS, message).await;
}

#[tokio::test]
async fn a_namespace_wide_count_bites_that_namespace_only() {
    let clock = ManualClock::new(T0);
    // 50 per 10 s: one every 200 ms, in bursts of at most 5.
    let app = node(json!({"windowMs": 10000, "maxRequests": 50}), &clock);
    for i in 0..5 {
        let status = if i % 2 == 0 {
            send(&app, get("/acme/pull/docs/a")).await.status()
        } else {
            push_doc(&app, &format!("/acme/push/docs/d{i}"), json!({}), None)
                .await
                .0
        };
        assert_eq!(status, StatusCode::OK);
    }
    assert_limited(
        send(&app, get("/acme/pull/docs/a")).await,
        "Rate limit exceeded",
    )
    .await;
    let res = send(&app, push("/acme/push/docs/x", &json!({"data": {}}))).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Nothing was written by the refused push.
    assert_eq!(
        send(&app, get("/globex/pull/docs/x")).await.status(),
        StatusCode::OK
    );
    for _ in 0..10 {
        assert_eq!(
            send(&app, get("/globex/pull/docs/a")).await.status(),
            StatusCode::OK
        );
    }
    // The count comes back at its rate: one request 200 ms later, not two.
    clock.advance(200);
    assert_eq!(
        send(&app, get("/acme/pull/docs/a")).await.status(),
        StatusCode::OK
    );
    assert_limited(
        send(&app, get("/acme/pull/docs/a")).await,
        "Rate limit exceeded",
    )
    .await;
    // A quiet while gives back a whole burst, and no more.
    clock.advance(10_000);
    for _ in 0..5 {
        assert_eq!(
            send(&app, get("/acme/pull/docs/a")).await.status(),
            StatusCode::OK
        );
    }
    assert_limited(
        send(&app, get("/acme/pull/docs/a")).await,
        "Rate limit exceeded",
    )
    .await;
}

#[tokio::test]
async fn a_spent_namespace_count_refuses_before_verifying_and_holds_the_answer() {
    let clock = ManualClock::new(T0);
    let app = node(json!({"windowMs": 10000, "maxRequests": 1}), &clock);
    let alice = user(1);
    let notes = format!("/acme/pull/users/{}/notes", alice.id);
    // A forged signature is 401 while the count lasts (the forgery is counted too)…
    let mut forged = Signed::get(&notes, &alice).build();
    forged
        .headers_mut()
        .insert("x-starfish-sig", b64(&[0u8; 64]).parse().unwrap());
    assert_eq!(send(&app, forged).await.status(), StatusCode::UNAUTHORIZED);
    // …and 429 once it is spent: refused before the signature is looked at, after
    // being held a moment.
    let mut forged = Signed::get(&notes, &alice).build();
    forged
        .headers_mut()
        .insert("x-starfish-sig", b64(&[0u8; 64]).parse().unwrap());
    let started = std::time::Instant::now();
    let res = send(&app, forged).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert_limited(res, "Rate limit exceeded").await;
}

#[tokio::test]
async fn a_per_caller_count_bites_one_caller_and_not_another() {
    let clock = ManualClock::new(T0);
    let app = node(json!({"maxRequestsPerIdentity": 3}), &clock);
    let (alice, bob) = (user(1), user(2));
    let notes = |u: &User| format!("/acme/pull/users/{}/notes", u.id);
    for _ in 0..3 {
        let res = send(&app, Signed::get(&notes(&alice), &alice).build()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = send(&app, Signed::get(&notes(&alice), &alice).build()).await;
    assert_limited(res, "Rate limit exceeded").await;
    for _ in 0..3 {
        let res = send(&app, Signed::get(&notes(&bob), &bob).build()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Anonymous callers are counted by their IP, apart from both.
    for _ in 0..3 {
        assert_eq!(
            send(&app, get("/acme/pull/docs/a")).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&app, get("/acme/pull/docs/a")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// A push whose body arrives only when `release` is sent: a request held in flight.
fn held_push(uri: &str) -> (Request<Body>, tokio::sync::oneshot::Sender<()>) {
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let body = br#"{"data":{"held":true}}"#;
    let stream = futures::stream::once(async move {
        let _ = wait.await;
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(body))
    });
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from_stream(stream))
        .unwrap();
    (request, release)
}

#[tokio::test]
async fn requests_in_flight_are_capped_per_namespace() {
    let clock = ManualClock::new(T0);
    let app = node(json!({"maxConcurrent": 2}), &clock);
    let mut held = Vec::new();
    for i in 0..2 {
        let (request, release) = held_push(&format!("/acme/push/docs/h{i}"));
        let app = app.clone();
        held.push((
            tokio::spawn(async move { send(&app, request).await }),
            release,
        ));
    }
    tokio::task::yield_now().await;
    // Both places are taken until the held requests end.
    let mut refused = false;
    for _ in 0..100 {
        let res = send(&app, get("/acme/pull/docs/a")).await;
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(res.headers()["retry-after"], "1");
            assert_error(
                res,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many concurrent requests",
            )
            .await;
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "a third request in flight is refused");
    assert_eq!(
        send(&app, get("/globex/pull/docs/a")).await.status(),
        StatusCode::OK
    );
    for (task, release) in held {
        release.send(()).unwrap();
        assert_eq!(task.await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(
        send(&app, get("/acme/pull/docs/a")).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_runtime_namespace_takes_its_templates_limits_and_the_admins_changes() {
    let clock = ManualClock::new(T0);
    let app = node(json!({"maxRequests": 100}), &clock);
    let (status, _) = call(
        &app,
        req(
            "POST",
            "/_starfish/admin/namespaces",
            Some(ADMIN),
            Some(json!({"name": "initech", "template": "team"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // The template's: two per caller. An API key is a caller of its own.
    let (status, key) = call(
        &app,
        req(
            "POST",
            "/_starfish/admin/keys",
            Some(ADMIN),
            Some(json!({"grants": {"initech": ["read", "write"]}})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, _) = call(&app, req("GET", "/initech/pull/docs/a", Some(&key), None)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = call(&app, req("GET", "/initech/pull/docs/a", Some(&key), None)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        send(&app, get("/initech/pull/docs/a")).await.status(),
        StatusCode::OK
    );

    // The super-admin raises them; a namespace admin may not.
    let (status, item) = call(
        &app,
        req(
            "PUT",
            "/_starfish/admin/namespaces/initech/limits",
            Some(ADMIN),
            Some(json!({"windowMs": 60000, "maxRequestsPerIdentity": 10})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{item}");
    assert_eq!(item["limits"]["maxRequestsPerIdentity"], 10);
    let (status, _) = call(&app, req("GET", "/initech/pull/docs/a", Some(&key), None)).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        req(
            "PUT",
            "/_starfish/admin/namespaces/initech/limits",
            Some(ADMIN),
            Some(json!({"maxRequests": 0})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, admin_key) = call(
        &app,
        req(
            "POST",
            "/_starfish/admin/keys",
            Some(ADMIN),
            Some(json!({"grants": {"initech": ["read"]}, "admin": true})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(
        &app,
        req(
            "PUT",
            "/_starfish/admin/namespaces/initech/limits",
            admin_key["key"].as_str(),
            Some(json!(null)),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[test]
fn limits_are_checked_when_the_config_loads() {
    for bad in [
        json!({}),
        json!({"maxRequests": 0}),
        json!({"maxConcurrent": -1}),
        json!({"maxRequest": 5}),
        json!("fast"),
    ] {
        let e = SyncConfig::from_value(json!({
            "version": 1, "collections": [],
            "namespaces": {"acme": {"collections": collections(), "limits": bad}}
        }))
        .unwrap_err();
        assert!(e.to_string().contains("limits"), "{e}");
    }
}

#[tokio::test]
async fn a_namespace_count_over_the_longest_window_still_counts() {
    // One request per u64::MAX ms: the second is refused, whatever the arithmetic.
    let clock = ManualClock::new(T0);
    let app = node(json!({"windowMs": u64::MAX, "maxRequests": 1}), &clock);
    assert_eq!(
        send(&app, get("/acme/pull/docs/a")).await.status(),
        StatusCode::OK
    );
    for _ in 0..3 {
        let res = send(&app, get("/acme/pull/docs/a")).await;
        assert_limited(res, "Rate limit exceeded").await;
    }
}
