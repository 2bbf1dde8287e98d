//! Authentication and access over HTTP: cap-certs, request signatures, replay,
//! scopes, revocation, mounting under a prefix, and pluggable authenticators.

use crate::common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use ed25519_dalek::SigningKey;
use futures::future::BoxFuture;
use serde_json::json;
use starfish_protocol::stable_stringify;
use starfish_server::access::{AccessRequest, HookError, RoleEnricher};
use starfish_server::auth::{
    AuthError, AuthRequest, Authenticator, Caller, CapAuthOptions, InMemoryRevocationStore,
    ManualClock,
};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;

const AUTH_CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"], "maxBodyBytes": 256},
    {"name": "big", "storagePath": "big/{identity}", "readRoles": ["self"], "writeRoles": ["self"], "maxBodyBytes": 1000000},
    {"name": "feed", "storagePath": "feed", "readRoles": ["public"], "writeRoles": ["device:root"]},
    {"name": "vault", "storagePath": "vault/{identity}", "readRoles": ["self"], "writeRoles": ["self"], "rootOnly": true},
    {"name": "team", "storagePath": "team/{room}", "readRoles": ["member"], "writeRoles": ["member"]}
  ],
  "namespaces": {
    "acme": {"collections": [
      {"name": "notes", "storagePath": "acme/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]}
    ]}
  }
}"#;

fn options(clock: &ManualClock) -> SyncOptions {
    SyncOptions::new(
        SyncConfig::from_json_str(AUTH_CONFIG).unwrap(),
        DocStore::memory(),
    )
    .with_clock(Arc::new(clock.clone()))
}

fn app() -> axum::Router {
    create_sync_router(options(&ManualClock::new(T0))).unwrap()
}

async fn status(app: &axum::Router, req: Request<Body>) -> StatusCode {
    send(app, req).await.status()
}

#[tokio::test]
async fn a_device_reads_and_writes_its_own_documents_only() {
    let app = app();
    let (a, b) = (user(1), user(2));
    let a_notes = format!("/push/users/{}/notes", a.id);
    let res = send(
        &app,
        Signed::push(&a_notes, &a, &json!({"data": {"t": 1}})).build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = send(
        &app,
        Signed::get(&format!("/pull/users/{}/notes", a.id), &a).build(),
    )
    .await;
    assert_eq!(json_body(res).await["data"], json!({"t": 1}));

    // B can neither read nor write A's document.
    let res = send(
        &app,
        Signed::get(&format!("/pull/users/{}/notes", a.id), &b).build(),
    )
    .await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    let res = send(
        &app,
        Signed::push(&a_notes, &b, &json!({"data": {"t": 2}})).build(),
    )
    .await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    // Anonymous: forbidden too (the reference's answer), not unauthorized.
    let res = send(&app, get(&format!("/pull/users/{}/notes", a.id))).await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    let res = send(
        &app,
        Signed::get(&format!("/pull/users/{}/notes", a.id), &a).build(),
    )
    .await;
    assert_eq!(
        json_body(res).await["data"],
        json!({"t": 1}),
        "A's note is untouched"
    );
}

#[tokio::test]
async fn bad_certificates_are_401() {
    let app = app();
    let a = user(1);
    let mallory = user(9);
    let uri = format!("/pull/users/{}/notes", a.id);
    let now = T0 / 1000;
    let expired = cap(&a, &a.device, full_scope(), now - 90 * 86400, now - 3600);
    let not_yet = cap(&a, &a.device, full_scope(), now + 3600, now + 7200);
    let inverted = cap(&a, &a.device, full_scope(), now + 10, now + 10);
    let mut tampered = device_cap(&a);
    tampered["scope"]["collections"] = json!(["notes", "extra"]);
    // Signed by mallory's root but claiming to be issued by A.
    let mut forged = cap(&mallory, &a.device, full_scope(), now - 60, now + 3600);
    forged["iss"] = json!(pub_hex(&a.root));
    forged["issUserId"] = json!(a.id);
    // Issued by mallory honestly: identity is mallory, so A's path is refused (403 below).
    for (name, cert) in [
        ("expired", expired),
        ("not yet valid", not_yet),
        ("inverted window", inverted),
        ("tampered", tampered),
        ("forged issuer", forged),
    ] {
        let req = Signed::new("GET", &uri, cert, &a.device).build();
        let res = send(&app, req).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{name}");
        assert_eq!(
            json_body(res).await,
            json!({"error": "Unauthorized"}),
            "{name}"
        );
    }
    // The right cert, but the request signed with another key.
    let req = Signed::new(
        "GET",
        &uri,
        device_cap(&a),
        &SigningKey::from_bytes(&[42; 32]),
    )
    .build();
    assert_eq!(status(&app, req).await, StatusCode::UNAUTHORIZED);
    // Garbage and truncated headers.
    for header in ["Cap !!!", "Cap e30=", "Cap "] {
        let req = Request::get(&uri)
            .header("authorization", header)
            .body(Body::empty())
            .unwrap();
        assert_eq!(
            status(&app, req).await,
            StatusCode::UNAUTHORIZED,
            "{header}"
        );
    }
    let huge = format!("Cap {}", "A".repeat(9000));
    let req = Request::get(&uri)
        .header("authorization", huge)
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(&app, req).await, StatusCode::UNAUTHORIZED);
    // A cap-cert without the signature headers.
    let req = Request::get(&uri)
        .header("authorization", cap_header(&device_cap(&a)))
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(&app, req).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tampered_requests_are_401() {
    let app = app();
    let a = user(1);
    let uri = format!("/pull/users/{}/notes", a.id);
    let push_uri = format!("/push/users/{}/notes", a.id);

    let ok = Signed::get(&uri, &a);
    let replay = ok.build();
    assert_eq!(status(&app, ok.build()).await, StatusCode::OK);
    assert_eq!(
        status(&app, replay).await,
        StatusCode::UNAUTHORIZED,
        "replayed nonce"
    );

    let mut s = Signed::get(&uri, &a);
    s.ts = T0 - 300_001;
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::UNAUTHORIZED,
        "stale ts"
    );
    let mut s = Signed::get(&uri, &a);
    s.ts = T0 + 300_001;
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::UNAUTHORIZED,
        "future ts"
    );
    let mut s = Signed::get(&uri, &a);
    s.ts = T0 + 300_000;
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::OK,
        "skew edge is accepted"
    );

    let mut s = Signed::get(&uri, &a);
    s.host = "evil.example.com".into();
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::UNAUTHORIZED,
        "wrong host"
    );
    let mut s = Signed::get(&format!("{uri}?x=1"), &a);
    s.signed_path = uri.clone();
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::UNAUTHORIZED,
        "query not signed"
    );
    let mut s = Signed::get(&format!("/pull/users/{}/notes", user(2).id), &a);
    s.signed_path = uri.clone();
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::UNAUTHORIZED,
        "path altered"
    );
    let mut s = Signed::push(&push_uri, &a, &json!({"data": {"evil": 1}}));
    s.signed_body = Some(json!({"data": {"good": 1}}).to_string());
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::UNAUTHORIZED,
        "body altered"
    );
    let res = send(&app, Signed::get(&uri, &a).build()).await;
    assert_eq!(
        json_body(res).await["data"],
        json!({}),
        "nothing was written"
    );
}

#[tokio::test]
async fn cap_scope_ops_and_collections_hold_on_self_collections() {
    let app = app();
    let a = user(1);
    let uri = format!("/push/users/{}/notes", a.id);
    let body = json!({"data": {"x": 1}});
    let read_only = scoped_cap(
        &a,
        json!({"ops": ["read"], "collections": ["*"], "paths": ["**"]}),
    );
    let mut s = Signed::push(&uri, &a, &body);
    s.cert = read_only.clone();
    assert_error(
        send(&app, s.build()).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    // ... while reading with it works.
    let mut s = Signed::get(&format!("/pull/users/{}/notes", a.id), &a);
    s.cert = read_only;
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);

    let other = scoped_cap(
        &a,
        json!({"ops": ["read", "write"], "collections": ["other"]}),
    );
    let mut s = Signed::push(&uri, &a, &body);
    s.cert = other.clone();
    assert_error(
        send(&app, s.build()).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    let mut s = Signed::get(&format!("/pull/users/{}/notes", a.id), &a);
    s.cert = other;
    assert_eq!(status(&app, s.build()).await, StatusCode::FORBIDDEN);

    let notes_only = scoped_cap(&a, json!({"ops": ["write"], "collections": ["notes"]}));
    let mut s = Signed::push(&uri, &a, &body);
    s.cert = notes_only;
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);
}

#[tokio::test]
async fn scope_paths_confine_a_cap_to_one_namespace() {
    let app = app();
    let a = user(1);
    let acme_only = scoped_cap(
        &a,
        json!({"ops": ["read", "write"], "collections": ["*"], "paths": ["acme/{identity}/**"]}),
    );
    let mut s = Signed::get(&format!("/acme/pull/acme/{}/notes", a.id), &a);
    s.cert = acme_only.clone();
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);
    let mut s = Signed::get(&format!("/pull/users/{}/notes", a.id), &a);
    s.cert = acme_only.clone();
    assert_error(
        send(&app, s.build()).await,
        StatusCode::FORBIDDEN,
        "Forbidden",
    )
    .await;
    // A deny entry wins over the allow, also when encoded.
    let denied = scoped_cap(
        &a,
        json!({"ops": ["read"], "collections": ["*"], "paths": ["**", "!users/{identity}/notes"]}),
    );
    let mut s = Signed::get(&format!("/pull/users/{}/notes", a.id), &a);
    s.cert = denied.clone();
    assert_eq!(status(&app, s.build()).await, StatusCode::FORBIDDEN);
    let mut s = Signed::get(&format!("/pull/users/{}/not%65s", a.id), &a);
    s.cert = denied;
    assert_eq!(
        status(&app, s.build()).await,
        StatusCode::FORBIDDEN,
        "not%65s routes as notes, and the deny holds on the key it resolves to"
    );
}

#[tokio::test]
async fn root_only_and_root_device_roles() {
    let app = app();
    let a = user(1);
    let vault = format!("/pull/vault/{}", a.id);
    assert_eq!(
        status(&app, Signed::get(&vault, &a).build()).await,
        StatusCode::FORBIDDEN
    );
    let root_cap = root_cap(&a);
    let s = Signed::new("GET", &vault, root_cap.clone(), &a.root);
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);
    // feed: public read, root-device write.
    let mut s = Signed::push("/push/feed", &a, &json!({"data": {"h": 1}}));
    assert_eq!(status(&app, s.build()).await, StatusCode::FORBIDDEN);
    s = Signed::new("POST", "/push/feed", root_cap, &a.root);
    s.body = Some(json!({"data": {"h": 1}}).to_string());
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);
}

#[tokio::test]
async fn credentials_on_a_public_collection_are_still_verified() {
    let app = app();
    let a = user(1);
    assert_eq!(status(&app, get("/pull/feed")).await, StatusCode::OK);
    assert_eq!(
        status(&app, Signed::get("/pull/feed", &a).build()).await,
        StatusCode::OK
    );
    let mut s = Signed::get("/pull/feed", &a);
    s.host = "elsewhere".into();
    assert_eq!(status(&app, s.build()).await, StatusCode::UNAUTHORIZED);
    // A non-Cap Authorization header is anonymous, as in the reference.
    let req = Request::get("/pull/feed")
        .header("authorization", "Bearer x")
        .body(Body::empty())
        .unwrap();
    assert_eq!(status(&app, req).await, StatusCode::OK);
}

#[tokio::test]
async fn signed_write_bodies_are_gated_before_the_signature() {
    let app = app();
    let a = user(1);
    let uri = format!("/push/big/{}", a.id);
    // Over the 64 KiB pre-auth cap, though under the collection's own limit.
    let big = json!({"data": {"x": "y".repeat(70_000)}});
    let res = send(&app, Signed::push(&uri, &a, &big).build()).await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "request body too large").await;
    // Missing Content-Length on a signed write.
    let mut req = Signed::push(&uri, &a, &json!({"data": {}})).build();
    req.headers_mut().remove("content-length");
    assert_error(
        send(&app, req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "missing Content-Length on write",
    )
    .await;
    // Within the pre-auth cap but over the collection's 256 bytes.
    let notes = format!("/push/users/{}/notes", a.id);
    let res = send(
        &app,
        Signed::push(&notes, &a, &json!({"data": {"x": "y".repeat(300)}})).build(),
    )
    .await;
    assert_error(res, StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").await;
    // A larger pre-auth cap lets the big collection take it.
    let clock = ManualClock::new(T0);
    let roomy = create_sync_router(options(&clock).with_cap_auth(CapAuthOptions {
        max_signed_body_bytes: 200_000,
        ..CapAuthOptions::default()
    }))
    .unwrap();
    assert_eq!(
        status(&roomy, Signed::push(&uri, &a, &big).build()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_signed_path_is_the_one_the_client_sent_under_a_prefix() {
    let a = user(1);
    let nested = axum::Router::new().nest("/v1", app());
    let path = format!("/v1/acme/pull/acme/{}/notes", a.id);
    assert_eq!(
        status(&nested, Signed::get(&path, &a).build()).await,
        StatusCode::OK
    );
    // Signed without the prefix the router strips: refused.
    let mut s = Signed::get(&path, &a);
    s.signed_path = format!("/acme/pull/acme/{}/notes", a.id);
    assert_eq!(status(&nested, s.build()).await, StatusCode::UNAUTHORIZED);
    // At the root, the signed path has no prefix.
    let root = app();
    let path = format!("/acme/pull/acme/{}/notes", a.id);
    assert_eq!(
        status(&root, Signed::get(&path, &a).build()).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_cached_certificate_still_expires() {
    let clock = ManualClock::new(T0);
    let app = create_sync_router(options(&clock)).unwrap();
    let a = user(1);
    let now = T0 / 1000;
    let short = cap(&a, &a.device, full_scope(), now - 60, now + 60);
    let uri = format!("/pull/users/{}/notes", a.id);
    let mut s = Signed::get(&uri, &a);
    s.cert = short.clone();
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);
    clock.advance(361_000); // past exp + 300 s
    let mut s = Signed::get(&uri, &a);
    s.cert = short;
    s.ts = T0 + 361_000;
    assert_eq!(status(&app, s.build()).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_revoked_device_is_refused() {
    let revocations = Arc::new(InMemoryRevocationStore::new());
    let clock = ManualClock::new(T0);
    let app = create_sync_router(options(&clock).with_cap_auth(CapAuthOptions {
        revocations: revocations.clone(),
        ..CapAuthOptions::default()
    }))
    .unwrap();
    let a = user(1);
    let uri = format!("/pull/users/{}/notes", a.id);
    assert_eq!(
        status(&app, Signed::get(&uri, &a).build()).await,
        StatusCode::OK
    );

    let mut list = json!({
        "v": 1, "iss": pub_hex(&a.root), "issUserId": a.id, "generation": 1,
        "revoked": [{"sub": pub_hex(&a.device), "nonce": b64(&[7u8; 16])}],
    });
    let input = format!("starfish-revlist-v1\n{}", stable_stringify(&list));
    use ed25519_dalek::Signer;
    list["sig"] = json!(b64(&a.root.sign(input.as_bytes()).to_bytes()));
    let mut forged = list.clone();
    forged["generation"] = json!(2);
    assert!(
        revocations.accept_list(&forged).is_err(),
        "a list with a bad signature is refused"
    );
    revocations.accept_list(&list).unwrap();
    assert!(
        revocations.accept_list(&list).is_err(),
        "same generation again is stale"
    );
    assert_eq!(
        status(&app, Signed::get(&uri, &a).build()).await,
        StatusCode::UNAUTHORIZED
    );
    // The root device (another subject) still works.
    let root_cap = root_cap(&a);
    let s = Signed::new("GET", &uri, root_cap, &a.root);
    assert_eq!(status(&app, s.build()).await, StatusCode::OK);
}

#[tokio::test]
async fn the_replay_cache_fails_closed_when_full() {
    let clock = ManualClock::new(T0);
    let app = create_sync_router(options(&clock).with_cap_auth(CapAuthOptions {
        nonce_limits: starfish_server::auth::NonceCacheLimits {
            window_ms: 600_000,
            max_entries: 1000,
            per_signer: 3,
        },
        ..CapAuthOptions::default()
    }))
    .unwrap();
    let a = user(1);
    let uri = format!("/pull/users/{}/notes", a.id);
    for _ in 0..3 {
        assert_eq!(
            status(&app, Signed::get(&uri, &a).build()).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        status(&app, Signed::get(&uri, &a).build()).await,
        StatusCode::UNAUTHORIZED
    );
}

/// A custom authenticator: `Authorization: Token <user>` (a stand-in for a JWT check).
struct TokenAuth;

impl Authenticator for TokenAuth {
    fn authenticate<'a>(
        &'a self,
        req: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let header = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            match header.and_then(|h| h.strip_prefix("Token ")) {
                Some(user) => Ok(Caller::verified(user, vec![])),
                None => Err(AuthError::Unauthorized("no token".into())),
            }
        })
    }
}

/// Grants `member` on `team/{room}` when the room is named after the caller.
struct Rooms;

impl RoleEnricher for Rooms {
    fn enrich<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, HookError>> {
        Box::pin(async move {
            let room = request.param("room");
            Ok(match (request.caller().identity(), room) {
                (Some(me), Some(room)) if room.starts_with(me) => vec![Arc::from("member")],
                _ => vec![],
            })
        })
    }
}

#[tokio::test]
async fn a_custom_authenticator_and_role_enricher_replace_and_extend_access() {
    let app = create_sync_router(
        options(&ManualClock::new(T0))
            .with_authenticator(Arc::new(TokenAuth))
            .with_role_enricher(Arc::new(Rooms)),
    )
    .unwrap();
    let req = |uri: &str, token: &str| {
        Request::get(uri)
            .header("authorization", format!("Token {token}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        status(&app, req("/pull/users/alice/notes", "alice")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, req("/pull/users/alice/notes", "bob")).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&app, req("/pull/team/alice-room", "alice")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(&app, req("/pull/team/alice-room", "bob")).await,
        StatusCode::FORBIDDEN
    );
    let anon = Request::get("/pull/team/x").body(Body::empty()).unwrap();
    assert_eq!(status(&app, anon).await, StatusCode::UNAUTHORIZED);
}
