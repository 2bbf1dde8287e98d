//! The replay cache shared through Redis (`--redis`): a signed request accepted by
//! one node and replayed byte for byte to another is refused, and while Redis does
//! not answer signed requests are refused with `503` (fail closed), never accepted
//! twice. Needs a Redis server: run by `tests/redis/run.sh`, which starts one and
//! sets `STARFISH_TEST_REDIS_URL`.
#![cfg(feature = "redis")]

mod common;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use serde_json::json;
use starfish_server::access::RedisLimits;
use starfish_server::auth::{CapAuthOptions, ManualClock, RedisReplay, ReplayStore};
use starfish_server::store::DocStore;
use starfish_server::{SyncOptions, create_sync_router};
use std::sync::Arc;

/// The Redis server tests/redis/run.sh started.
fn redis_url() -> String {
    std::env::var("STARFISH_TEST_REDIS_URL")
        .expect("STARFISH_TEST_REDIS_URL is not set: run tests/redis/run.sh")
}

async fn redis() -> Arc<dyn ReplayStore> {
    let url = redis_url();
    // A prefix of this run's own: tests share one server.
    let prefix = format!("test:{}:", std::process::id());
    Arc::new(RedisReplay::connect(&url, Some(&prefix)).await.unwrap())
}

fn node(store: &DocStore, replay: Arc<dyn ReplayStore>) -> Router {
    node_at(store, replay, Arc::new(ManualClock::new(T0)))
}

/// A node whose clock is `clock` (shared by the nodes of a test that moves time).
fn node_at(store: &DocStore, replay: Arc<dyn ReplayStore>, clock: Arc<ManualClock>) -> Router {
    create_sync_router(
        SyncOptions::new(config(), store.clone())
            .with_clock(clock)
            .with_cap_auth(CapAuthOptions {
                shared_replay: Some(replay),
                ..CapAuthOptions::default()
            }),
    )
    .unwrap()
}

/// The same request twice, byte for byte.
fn twice(req: Request<Body>) -> (Request<Body>, Request<Body>) {
    let (parts, _) = req.into_parts();
    let copy = |p: &axum::http::request::Parts| {
        let mut r = Request::builder()
            .method(p.method.clone())
            .uri(p.uri.clone());
        for (k, v) in &p.headers {
            r = r.header(k, v);
        }
        r.body(Body::empty()).unwrap()
    };
    (copy(&parts), copy(&parts))
}

#[tokio::test]
#[ignore = "needs a Redis server: run by tests/redis/run.sh"]
async fn a_request_replayed_to_another_node_is_refused() {
    let replay = redis().await;
    let store = DocStore::memory();
    let (a, b) = (node(&store, replay.clone()), node(&store, replay));
    let alice = user(1);
    let path = format!("/pull/users/{}/notes", alice.id);
    let (first, again) = twice(Signed::get(&path, &alice).build());
    assert_eq!(send(&a, first).await.status(), StatusCode::OK);
    assert_eq!(send(&b, again).await.status(), StatusCode::UNAUTHORIZED);
    // Fresh requests go through on both.
    for app in [&a, &b] {
        let res = send(app, Signed::get(&path, &alice).build()).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // A signed write replayed to the other node is refused too: written once.
    let push = Signed::push(
        &format!("/push/users/{}/notes", alice.id),
        &alice,
        &json!({"data": {"n": 1}}),
    );
    assert_eq!(send(&a, push.build()).await.status(), StatusCode::OK);
    assert_eq!(
        send(&b, push.build()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
#[ignore = "needs a Redis server: run by tests/redis/run.sh"]
async fn while_redis_does_not_answer_signed_requests_get_503() {
    let replay = redis().await;
    let store = DocStore::memory();
    let app = node(&store, replay);
    let alice = user(2);
    let path = format!("/pull/users/{}/notes", alice.id);
    // Redis stops answering for a while (longer than the client's 2 s timeout).
    let url = redis_url();
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3500)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let req = Signed::get(&path, &alice).build();
    let (held, _) = twice(req);
    let res = send(&app, held).await;
    assert_error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "Replay cache unavailable",
    )
    .await;
    // Anonymous reads of public documents do not need it.
    assert_eq!(
        send(&app, get("/pull/docs/p1")).await.status(),
        StatusCode::OK
    );
    // Back: a fresh request goes through, once.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (once, twice_more) = twice(Signed::get(&path, &alice).build());
    assert_eq!(send(&app, once).await.status(), StatusCode::OK);
    assert_eq!(
        send(&app, twice_more).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
#[ignore = "needs a Redis server: run by tests/redis/run.sh"]
async fn a_redis_that_may_evict_keys_is_refused() {
    redis().await;
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let set = |policy: &'static str| {
        let mut conn = conn.clone();
        async move {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(policy)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    set("allkeys-lru").await;
    let refused = RedisReplay::connect(&url, None).await;
    set("noeviction").await;
    let err = refused.unwrap_err();
    assert!(err.contains("maxmemory-policy allkeys-lru"), "{err}");
    let _: String = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

/// Two nodes over one store whose rate limits and namespace counts are kept in
/// Redis.
async fn limited_pair() -> (Router, Router) {
    let url = redis_url();
    let config = serde_json::json!({
        "version": 1,
        "collections": [
            {"name": "limited", "storagePath": "limited/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "rateLimit": {"pull": {"windowMs": 60000, "maxRequests": 4}}},
            {"name": "forever", "storagePath": "forever/{id}",
             "readRoles": ["public"], "writeRoles": ["public"],
             "rateLimit": {"pull": {"windowMs": u64::MAX, "maxRequests": 2}}}
        ],
        "namespaces": {
            "acme": {"collections": [
                {"name": "notes", "storagePath": "users/{identity}/notes",
                 "readRoles": ["self"], "writeRoles": ["self"]}
            ], "limits": {"windowMs": 60000, "maxRequestsPerIdentity": 3}},
            "globex": {"collections": [
                {"name": "docs", "storagePath": "docs/{id}",
                 "readRoles": ["public"], "writeRoles": ["public"]}
            ], "limits": {"windowMs": 60000, "maxRequests": 5}}
        }
    });
    let store = DocStore::memory();
    // A prefix of this test's own: the counters start empty.
    let prefix = format!("test:{}:limits:", std::process::id());
    let node = |limits: RedisLimits| {
        create_sync_router(
            SyncOptions::new(
                starfish_server::SyncConfig::from_value(config.clone()).unwrap(),
                store.clone(),
            )
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_shared_limits(Arc::new(limits)),
        )
        .unwrap()
    };
    let limits = RedisLimits::connect(&url, Some(&prefix)).await.unwrap();
    (node(limits.clone()), node(limits))
}

/// How many of `requests`, sent alternately to `a` and `b`, got 200; the others
/// must all be 429.
async fn accepted(a: &Router, b: &Router, requests: Vec<Request<Body>>) -> usize {
    let mut ok = 0;
    for (i, req) in requests.into_iter().enumerate() {
        let res = send(if i % 2 == 0 { a } else { b }, req).await;
        match res.status() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    ok
}

#[tokio::test]
#[ignore = "needs a Redis server: run by tests/redis/run.sh"]
async fn rate_limits_and_namespace_counts_hold_across_nodes() {
    let (a, b) = limited_pair().await;
    // A collection's pull limit of 4 per window: 4 in all, not 4 per node.
    let pulls = (0..10).map(|_| get("/pull/limited/x")).collect();
    assert_eq!(accepted(&a, &b, pulls).await, 4);
    // However long the window (Redis takes at most an i64 of milliseconds).
    let pulls = (0..6).map(|_| get("/pull/forever/x")).collect();
    assert_eq!(accepted(&a, &b, pulls).await, 2);
    // A namespace's per-identity count of 3: 3 in all, whichever node.
    let alice = user(7);
    let path = format!("/acme/pull/users/{}/notes", alice.id);
    let signed = (0..8).map(|_| Signed::get(&path, &alice).build()).collect();
    assert_eq!(accepted(&a, &b, signed).await, 3);
    // Another identity has a count of its own.
    let bob = user(8);
    let path = format!("/acme/pull/users/{}/notes", bob.id);
    let res = send(&b, Signed::get(&path, &bob).build()).await;
    assert_eq!(res.status(), StatusCode::OK);
    // A namespace-wide count of 5 per minute, paced (one every 12 s, no burst):
    // one request in all, then refusals on both nodes.
    let docs = (0..4).map(|_| get("/globex/pull/docs/d")).collect();
    assert_eq!(accepted(&a, &b, docs).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server: run by tests/redis/run.sh"]
async fn after_redis_loses_its_data_no_accepted_request_is_accepted_again() {
    let mut server = OwnServer::redis(free_port()).await;
    let clock = Arc::new(ManualClock::new(T0));
    let store = DocStore::memory();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let replay = RedisReplay::connect(&format!("redis://127.0.0.1:{}/0", server.port), None)
            .await
            .unwrap();
        assert_eq!(replay.start_memory(T0).await.unwrap(), T0);
        nodes.push(node_at(&store, Arc::new(replay), clock.clone()));
    }
    // Requests signed over the last seconds, each accepted once by some node.
    let alice = user(31);
    let mut accepted = Vec::new();
    for i in 0..30u64 {
        clock.set(T0 + i * 100);
        let mut signed = if i % 2 == 0 {
            Signed::get(&format!("/pull/users/{}/notes", alice.id), &alice)
        } else {
            // A create each, by a user of its own (one document per user).
            let writer = user(40 + i as u8);
            Signed::push(
                &format!("/push/users/{}/notes", writer.id),
                &writer,
                &json!({"data": {"i": i}}),
            )
        };
        signed.ts = T0 + i * 100;
        let res = send(&nodes[i as usize % 3], signed.build()).await;
        assert_eq!(res.status(), StatusCode::OK, "request {i}");
        accepted.push(signed);
    }
    // Redis dies and comes back empty; a moment later the requests are sent again,
    // byte for byte, to every node.
    server.kill();
    let server = OwnServer::redis(server.port).await;
    clock.set(T0 + 3_500);
    for (i, signed) in accepted.iter().enumerate() {
        for node in &nodes {
            let res = send(node, signed.build()).await;
            let status = res.status();
            let body = json_body(res).await;
            // Signed before the new memory began (503: the cache cannot vouch for
            // it; also while a node's connection comes back), or claimed again by
            // such a refusal (401): never accepted.
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_eq!(body, json!({"error": "Replay cache unavailable"}));
                }
                StatusCode::UNAUTHORIZED => assert_eq!(body, json!({"error": "Unauthorized"})),
                other => panic!("request {i} answered {other} {body} after the restart"),
            }
        }
    }
    // Freshly signed requests pass on every node, once.
    for (n, node) in nodes.iter().enumerate() {
        let mut fresh = Signed::get(&format!("/pull/users/{}/notes", alice.id), &alice);
        fresh.ts = T0 + 3_500;
        assert_eq!(
            send(node, fresh.build()).await.status(),
            StatusCode::OK,
            "{n}"
        );
        for other in &nodes {
            assert_eq!(
                send(other, fresh.build()).await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Redis server: run by tests/redis/run.sh"]
async fn a_redis_that_goes_back_in_time_is_noticed_and_nothing_is_accepted_twice() {
    let url = redis_url();
    let prefix = format!("back:{}:", std::process::id());
    let clock = Arc::new(ManualClock::new(T0));
    let store = DocStore::memory();
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let replay = RedisReplay::connect(&url, Some(&prefix)).await.unwrap();
        nodes.push(node_at(&store, Arc::new(replay), clock.clone()));
    }
    let alice = user(61);
    let path = format!("/pull/users/{}/notes", alice.id);
    let mut accepted = Vec::new();
    for i in 0..10u64 {
        clock.set(T0 + i);
        let mut signed = Signed::get(&path, &alice);
        signed.ts = T0 + i;
        assert_eq!(
            send(&nodes[i as usize % 2], signed.build()).await.status(),
            StatusCode::OK
        );
        accepted.push(signed);
    }
    // Redis goes back in time, as a replica promoted after a failover does: the
    // latest claims are gone (here: all of them), the rest (the marker) is there.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    for key in keys {
        if key.ends_with("since") {
            continue;
        }
        if key.ends_with("count") {
            let _: () = redis::cmd("DECRBY")
                .arg(&key)
                .arg(3)
                .query_async(&mut conn)
                .await
                .unwrap();
            continue;
        }
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    clock.set(T0 + 1_000);
    for (i, signed) in accepted.iter().enumerate() {
        for node in &nodes {
            let status = send(node, signed.build()).await.status();
            assert!(
                status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::UNAUTHORIZED,
                "request {i} answered {status} after Redis went back in time"
            );
        }
    }
    // Freshly signed requests pass.
    let mut fresh = Signed::get(&path, &alice);
    fresh.ts = T0 + 1_000;
    assert_eq!(
        send(&nodes[1], fresh.build()).await.status(),
        StatusCode::OK
    );
}

/// A webhook delivery replayed to another node is refused: the signature is claimed
/// in the shared replay cache.
#[tokio::test]
#[ignore = "needs a Redis server: run by tests/redis/run.sh"]
async fn a_webhook_delivery_replayed_to_another_node_is_refused() {
    use hmac::{Hmac, Mac};
    use starfish_server::webhooks::{Transform, WebhookRoute, Webhooks};
    let replay = redis().await;
    let store = DocStore::memory();
    let node = |replay: Arc<dyn ReplayStore>| {
        let route = WebhookRoute::new(
            "/push/docs/{id}",
            b"whsec",
            Transform::fields([("n", "/n")])
                .unwrap()
                .with_param("id", "/id")
                .unwrap(),
        )
        .unwrap();
        create_sync_router(
            SyncOptions::new(config(), store.clone())
                .with_clock(Arc::new(ManualClock::new(T0)))
                .with_cap_auth(CapAuthOptions {
                    shared_replay: Some(replay),
                    ..CapAuthOptions::default()
                })
                .with_webhooks(Webhooks::new().with("w", route)),
        )
        .unwrap()
    };
    let (a, b) = (node(replay.clone()), node(replay));
    let delivery = |n: u64| {
        let body = json!({"id": format!("w{n}"), "n": n}).to_string();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"whsec").unwrap();
        mac.update(body.as_bytes());
        Request::post("/webhook/w")
            .header(
                "x-webhook-signature",
                hex::encode(mac.finalize().into_bytes()),
            )
            .body(Body::from(body))
            .unwrap()
    };
    assert_eq!(send(&a, delivery(1)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&b, delivery(1)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send(&b, delivery(2)).await.status(), StatusCode::OK);
    assert_eq!(
        send(&a, delivery(2)).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
