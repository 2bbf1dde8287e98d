//! What an attacker with self-issued certificates can do to other users: nothing
//! that locks them out or replays their requests.

use crate::common;

use axum::http::StatusCode;
use common::*;
use starfish_server::auth::{CapAuthOptions, ManualClock, NonceCacheLimits};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

fn options(clock: &ManualClock) -> SyncOptions {
    SyncOptions::new(
        SyncConfig::from_json_str(CONFIG).unwrap(),
        DocStore::memory(),
    )
    .with_clock(Arc::new(clock.clone()))
}

#[tokio::test]
async fn a_flood_of_self_issued_keys_locks_out_nobody_and_replays_stay_refused() {
    let clock = ManualClock::new(T0);
    let limits = NonceCacheLimits {
        window_ms: 600_000,
        max_entries: 50,
        per_signer: 10,
    };
    let app = create_sync_router(options(&clock).with_cap_auth(CapAuthOptions {
        nonce_limits: limits,
        ..CapAuthOptions::default()
    }))
    .unwrap();
    // Alice's request, signed first, will be evicted by the flood.
    let alice = user(1);
    let uri = format!("/pull/users/{}/notes", alice.id);
    let mut early = Signed::get(&uri, &alice);
    early.ts = T0 - 1000;
    assert_eq!(send(&app, early.build()).await.status(), StatusCode::OK);
    // 8 self-issued identities x 10 signed requests, one per millisecond: more than
    // the cache holds.
    let mut ts = T0;
    for seed in 10..18 {
        let attacker = user(seed);
        let their = format!("/pull/users/{}/notes", attacker.id);
        for _ in 0..10 {
            ts += 1;
            let mut s = Signed::get(&their, &attacker);
            s.ts = ts;
            assert_eq!(send(&app, s.build()).await.status(), StatusCode::OK);
        }
    }
    // Bob, whose clock is current, is still served.
    let bob = user(2);
    let bobs = format!("/pull/users/{}/notes", bob.id);
    let mut s = Signed::get(&bobs, &bob);
    s.ts = ts + 1;
    let res = send(&app, s.build()).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a full replay cache locks nobody out"
    );
    // Alice's early request, replayed after its nonce was evicted: refused.
    assert_eq!(
        send(&app, early.build()).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_nonce_window_shorter_than_twice_the_skew_is_refused_at_startup() {
    let clock = ManualClock::new(T0);
    let err = create_sync_router(options(&clock).with_cap_auth(CapAuthOptions {
        nonce_limits: NonceCacheLimits {
            window_ms: 300_000,
            ..NonceCacheLimits::default()
        },
        ..CapAuthOptions::default()
    }))
    .unwrap_err();
    assert!(
        err.to_string().contains("twice the allowed clock skew"),
        "{err}"
    );
}

#[tokio::test]
async fn certificate_scope_arrays_are_bounded_and_distinct() {
    let clock = ManualClock::new(T0);
    let app = create_sync_router(options(&clock)).unwrap();
    let a = user(1);
    let uri = format!("/pull/users/{}/notes", a.id);
    let with_scope = |scope: serde_json::Value| {
        let mut s = Signed::get(&uri, &a);
        s.cert = scoped_cap(&a, scope);
        s.build()
    };
    let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let long_path = format!("users/{}/{}", a.id, "x".repeat(600));
    for (label, scope) in [
        (
            "65 collections",
            serde_json::json!({"ops": ["read"], "collections": many}),
        ),
        (
            "a repeated collection",
            serde_json::json!({"ops": ["read"], "collections": ["notes", "notes"]}),
        ),
        (
            "a repeated op",
            serde_json::json!({"ops": ["read", "read"], "collections": ["*"]}),
        ),
        (
            "a 600-byte path",
            serde_json::json!({"ops": ["read"], "collections": ["*"], "paths": ["**", long_path]}),
        ),
    ] {
        let res = send(&app, with_scope(scope)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{label}");
    }
    let fine = serde_json::json!({"ops": ["read"], "collections": ["notes"], "paths": ["**"]});
    assert_eq!(send(&app, with_scope(fine)).await.status(), StatusCode::OK);
}

fn blob_push(
    uri: &str,
    content_type: &str,
    body: &'static str,
) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::post(uri)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(axum::body::Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn every_response_says_nosniff_and_blobs_never_run_as_active_content() {
    let config = r#"{"version": 1, "collections": [
        {"name": "pics", "storagePath": "pics/{id}", "readRoles": ["public"], "writeRoles": ["public"],
         "allowedMimeTypes": ["image/*"]}]}"#;
    let app = create_sync_router(
        SyncOptions::new(
            SyncConfig::from_json_str(config).unwrap(),
            DocStore::memory(),
        )
        .with_clock(Arc::new(ManualClock::new(T0))),
    )
    .unwrap();
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    for (uri, ct, body) in [
        ("/push/pics/a", "image/svg+xml", svg),
        ("/push/pics/b", "image/png", "png"),
    ] {
        let res = send(&app, blob_push(uri, ct, body)).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
    let svg = send(&app, get("/pull/pics/a")).await;
    let h = svg.headers();
    assert_eq!(h["content-security-policy"], "sandbox");
    assert_eq!(h["content-disposition"], "attachment");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    assert!(
        h.get("strict-transport-security").is_none(),
        "HSTS only when behind TLS"
    );
    let png = send(&app, get("/pull/pics/b")).await;
    assert_eq!(png.headers()["content-security-policy"], "sandbox");
    assert!(
        png.headers().get("content-disposition").is_none(),
        "a PNG may show inline"
    );
    // Errors and 404s carry them too.
    for uri in ["/pull/nope", "/push/pics/%2F"] {
        let res = send(&app, get(uri)).await;
        assert_eq!(res.headers()["x-content-type-options"], "nosniff", "{uri}");
    }
    let tls = create_sync_router(
        SyncOptions::new(
            SyncConfig::from_json_str(config).unwrap(),
            DocStore::memory(),
        )
        .with_security_headers(starfish_server::SecurityHeaders::behind_tls()),
    )
    .unwrap();
    let res = send(&tls, get("/health")).await;
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test]
async fn a_blob_is_never_served_with_another_uploads_type_or_etag() {
    use object_store::{Attribute, Attributes, ObjectStore, PutOptions, PutPayload};
    let config = r#"{"version": 1, "collections": [
        {"name": "pics", "storagePath": "pics/{id}", "readRoles": ["public"], "writeRoles": ["public"],
         "allowedMimeTypes": ["image/*"]}]}"#;
    let store = DocStore::memory();
    let app = create_sync_router(
        SyncOptions::new(SyncConfig::from_json_str(config).unwrap(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0))),
    )
    .unwrap();
    let res = send(&app, blob_push("/push/pics/a", "image/png", "png bytes")).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Another writer (another node, a restore) replaces the bytes but not our sidecar.
    let opts = PutOptions {
        attributes: Attributes::from_iter([(Attribute::ContentType, "image/gif")]),
        ..PutOptions::default()
    };
    let path = object_store::path::Path::from("pics/a");
    store
        .inner()
        .put_opts(&path, PutPayload::from_static(b"gif bytes"), opts)
        .await
        .unwrap();
    let res = send(&app, get("/pull/pics/a")).await;
    assert_eq!(res.headers()["content-type"], "image/gif");
    let etag = format!("\"{}\"", starfish_protocol::sha256_hex(b"gif bytes"));
    assert_eq!(res.headers()["etag"], etag.as_str());
    assert_eq!(body_bytes(res).await, b"gif bytes");
}
