//! Shared certificates: `member` caps (an owner lets another user act in one of its
//! collections) and `audience` caps (public links), with the sharing validators and
//! the issuer-bound enricher, as the reference's sharing package gives them.
//!
//! Anyone can mint a root key and issue member caps. Each test below is one way
//! an attacker might try to make a shared certificate reach further than what its
//! issuer owns or shared; each fails on a server without the check it names.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use starfish_protocol::capcert::{CapKind, CapOp, user_id_from_pub_hex};
use starfish_protocol::identity::{CapGrant, issue_audience_cap, issue_cap, sign_request};
use starfish_protocol::signing::SignedRequest;
use starfish_server::auth::{
    CapAuthOptions, CapCert, CapValidator, CapValidators, InMemoryRevocationStore, ManualClock,
};
use starfish_server::sharing::{Enrichers, IssuerBoundEnricher};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const HOST: &str = "sync.example.com";

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "spaces", "storagePath": "spaces/{ownerId}/{spaceId}",
     "readRoles": ["share:reader"], "writeRoles": ["share:writer", "share:owner"]},
    {"name": "roster", "storagePath": "roster/{ownerId}/_members",
     "readRoles": ["share:reader"], "writeRoles": ["share:owner"]},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]}
  ],
  "namespaces": {
    "a": {"trustedRoots": ["ALICE"], "collections": [
      {"name": "spaces", "storagePath": "spaces/{ownerId}/{spaceId}",
       "readRoles": ["share:reader"], "writeRoles": ["share:writer", "share:owner"]}
    ]},
    "b": {"trustedRoots": ["CAROL"], "collections": [
      {"name": "spaces", "storagePath": "spaces/{ownerId}/{spaceId}",
       "readRoles": ["share:reader"], "writeRoles": ["share:writer", "share:owner"]}
    ]}
  }
}"#;

/// A user: a root key that signs its own requests (a self-signed device cap).
struct User {
    key: SigningKey,
    id: String,
    device: Value,
}

fn user(seed: u8) -> User {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let id = user_id_from_pub_hex(&pub_hex(&key)).unwrap();
    let device = issue_cap(
        &key,
        &key.verifying_key(),
        &[9; 32],
        &grant(CapKind::Device, &["read", "list", "write"], "*", &["**"]),
        [seed; 16],
    );
    User { key, id, device }
}

fn pub_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().as_bytes())
}

fn grant(kind: CapKind, ops: &[&str], collection: &str, paths: &[&str]) -> CapGrant {
    CapGrant {
        kind,
        ops: ops
            .iter()
            .map(|op| match *op {
                "read" => CapOp::Read,
                "list" => CapOp::List,
                _ => CapOp::Write,
            })
            .collect(),
        collections: vec![collection.into()],
        paths: paths.iter().map(|p| (*p).into()).collect(),
        nbf: T0 / 1000 - 60,
        exp: T0 / 1000 + 3600,
    }
}

/// The sharing package's presets for collection `c`.
const WRITER: &[&str] = &["spaces/**", "!spaces/_keyring", "!spaces/_members"];
const READ_ONLY: &[&str] = &["spaces/**", "!spaces/_members"];

static NONCE: AtomicU64 = AtomicU64::new(1);
/// When requests are signed (ms): T0, but for a test that moves its clock (by less
/// than the 5 minutes of allowed skew, so tests running meanwhile are unaffected).
static SIGNED_AT: AtomicU64 = AtomicU64::new(T0);

/// A member cap: `issuer` lets `subject` act in `collection`.
fn member(issuer: &User, subject: &User, ops: &[&str], collection: &str, paths: &[&str]) -> Value {
    let n = NONCE.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&n.to_be_bytes());
    issue_cap(
        &issuer.key,
        &subject.key.verifying_key(),
        &[9; 32],
        &grant(CapKind::Member, ops, collection, paths),
        nonce,
    )
}

fn config(alice: &User, carol: &User) -> SyncConfig {
    let text = CONFIG
        .replace("ALICE", &pub_hex(&alice.key))
        .replace("CAROL", &pub_hex(&carol.key));
    SyncConfig::from_json_str(&text).unwrap()
}

fn enricher() -> Arc<Enrichers> {
    Arc::new(Enrichers::new().with(Arc::new(IssuerBoundEnricher {
        owner_param: "ownerId".into(),
        owner_role: "share:owner".into(),
        reader_role: "share:reader".into(),
        writer_role: "share:writer".into(),
        collections: vec!["spaces".into(), "roster".into()],
        guard_param: "spaceId".into(),
        guard_value: "_rooms".into(),
    })))
}

fn router_with(
    validators: CapValidators,
    revocations: Option<Arc<InMemoryRevocationStore>>,
) -> Router {
    let (alice, carol) = (user(1), user(3));
    let mut cap_auth = CapAuthOptions {
        validators,
        ..CapAuthOptions::default()
    };
    if let Some(r) = revocations {
        cap_auth.revocations = r;
    }
    let options = SyncOptions::new(config(&alice, &carol), DocStore::memory())
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_cap_auth(cap_auth)
        .with_role_enricher(enricher());
    create_sync_router(options).unwrap()
}

fn router() -> Router {
    router_with(starfish_server::sharing::validators(), None)
}

/// Sends `method uri` signed by `key` under `cert`; `presenter` adds `X-Starfish-Pub`.
async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    key: &SigningKey,
    cert: &Value,
    body: Option<Value>,
    presenter: bool,
) -> (StatusCode, Value) {
    let n = NONCE.fetch_add(1, Ordering::Relaxed);
    send_with_nonce(
        app,
        method,
        uri,
        key,
        cert,
        body,
        presenter,
        &format!("n{n}"),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn send_with_nonce(
    app: &Router,
    method: &str,
    uri: &str,
    key: &SigningKey,
    cert: &Value,
    body: Option<Value>,
    presenter: bool,
    nonce: &str,
) -> (StatusCode, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let headers = sign_request(
        key,
        cert,
        &SignedRequest {
            method,
            path_and_query: uri,
            body: body.as_bytes(),
            host: HOST,
            ts: SIGNED_AT.load(Ordering::Relaxed) as i64,
            nonce,
        },
    );
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", HOST);
    for (name, value) in headers.pairs() {
        request = request.header(name, value);
    }
    if presenter {
        request = request.header("x-starfish-pub", pub_hex(key));
    }
    if method == "POST" {
        request = request
            .header("content-type", "application/json")
            .header("content-length", body.len());
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// The status of a signed GET of `uri` by `key` under `cert`.
async fn get(app: &Router, uri: &str, key: &SigningKey, cert: &Value) -> StatusCode {
    send(app, "GET", uri, key, cert, None, false).await.0
}

/// The status of a GET of `uri` redeeming the link `cert` with `key`
/// (`X-Starfish-Pub`).
async fn redeem(app: &Router, uri: &str, key: &SigningKey, cert: &Value) -> StatusCode {
    send(app, "GET", uri, key, cert, None, true).await.0
}

/// Alice writes her space `s1` with her own device cap.
async fn alice_writes_her_space(app: &Router, alice: &User) -> String {
    let uri = format!("/push/spaces/{}/s1", alice.id);
    let (status, body) = send(
        app,
        "POST",
        &uri,
        &alice.key,
        &alice.device,
        Some(json!({"data": {"t": 1}, "baseHash": null})),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["hash"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn member_caps_are_refused_without_the_sharing_validators() {
    let app = router_with(CapValidators::new(), None);
    let (alice, bob) = (user(1), user(2));
    let cap = member(&alice, &bob, &["read"], "spaces", READ_ONLY);
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    assert_eq!(
        get(&app, &uri, &bob.key, &cap).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_sharing_plugin_registers_the_validators_as_a_plugin() {
    let (alice, bob, carol) = (user(1), user(2), user(3));
    let options = SyncOptions::new(config(&alice, &carol), DocStore::memory())
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_role_enricher(enricher())
        .with_plugin(Arc::new(starfish_server::sharing::SharingPlugin));
    let app = create_sync_router(options).unwrap();
    alice_writes_her_space(&app, &alice).await;
    let cap = member(&alice, &bob, &["read"], "spaces", READ_ONLY);
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    assert_eq!(get(&app, &uri, &bob.key, &cap).await, StatusCode::OK);
}

#[tokio::test]
async fn a_member_reads_and_writes_what_its_owner_shared_and_a_reader_only_reads() {
    let app = router();
    let (alice, bob) = (user(1), user(2));
    let hash = alice_writes_her_space(&app, &alice).await;
    let writer = member(&alice, &bob, &["read", "list", "write"], "spaces", WRITER);
    let uri = format!("/spaces/{}/s1", alice.id);
    let (status, body) = send(
        &app,
        "GET",
        &format!("/pull{uri}"),
        &bob.key,
        &writer,
        None,
        false,
    )
    .await;
    assert_eq!(
        (status, &body["data"]),
        (StatusCode::OK, &json!({"t": 1})),
        "{body}"
    );
    let push = json!({"data": {"t": 2}, "baseHash": hash});
    let (status, body) = send(
        &app,
        "POST",
        &format!("/push{uri}"),
        &bob.key,
        &writer,
        Some(push.clone()),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reader = member(&alice, &bob, &["read", "list"], "spaces", READ_ONLY);
    let (status, _) = send(
        &app,
        "GET",
        &format!("/pull{uri}"),
        &bob.key,
        &reader,
        None,
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(
        &app,
        "POST",
        &format!("/push{uri}"),
        &bob.key,
        &reader,
        Some(push),
        false,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a read-only share cannot write"
    );
}

#[tokio::test]
async fn a_member_cap_reaches_nothing_its_issuer_does_not_own() {
    let app = router();
    let (alice, bob, mallory) = (user(1), user(2), user(4));
    alice_writes_her_space(&app, &alice).await;
    let alices_space = format!("/pull/spaces/{}/s1", alice.id);
    // Mallory shares what is not hers: her cap names her as issuer.
    let forged = member(&mallory, &bob, &["read", "list", "write"], "spaces", WRITER);
    let (status, _) = send(&app, "GET", &alices_space, &bob.key, &forged, None, false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another user's paths");
    // Alice's real share of `spaces` does not reach her notes (another collection,
    // and the cap is bound to Bob's identity, not hers).
    let share = member(&alice, &bob, &["read", "list", "write"], "spaces", WRITER);
    let notes = format!("/pull/users/{}/notes", alice.id);
    assert_eq!(
        get(&app, &notes, &bob.key, &share).await,
        StatusCode::FORBIDDEN
    );
    // A cap naming Alice's own `users/<id>/` paths is refused outright.
    let private = member(
        &alice,
        &bob,
        &["read"],
        "notes",
        &[&format!("users/{}/**", alice.id), "!notes/_members"],
    );
    assert_eq!(
        get(&app, &notes, &bob.key, &private).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_owners_roster_and_keyring_are_out_of_a_shares_reach() {
    let app = router();
    let (alice, bob) = (user(1), user(2));
    // A writer share that does not deny the keyring: refused (member-keyring-not-denied).
    let keyring = member(&alice, &bob, &["read", "write"], "spaces", READ_ONLY);
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    assert_eq!(
        get(&app, &uri, &bob.key, &keyring).await,
        StatusCode::UNAUTHORIZED
    );
    // A share whose paths deny `roster/_members` by the reference's naming, but whose
    // glob reaches `roster/<owner>/_members`: the server refuses the key itself.
    let roster = member(
        &alice,
        &bob,
        &["read"],
        "roster",
        &["roster/**", "!roster/_members"],
    );
    let uri = format!("/pull/roster/{}/_members", alice.id);
    assert_eq!(
        get(&app, &uri, &bob.key, &roster).await,
        StatusCode::FORBIDDEN
    );
    // Alice herself reads it.
    assert_eq!(
        get(&app, &uri, &alice.key, &alice.device).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_member_cap_is_its_subjects_alone_and_bound_to_its_kind() {
    let app = router();
    let (alice, bob, mallory) = (user(1), user(2), user(4));
    let share = member(&alice, &bob, &["read"], "spaces", READ_ONLY);
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    // Presented by someone who does not hold Bob's key.
    assert_eq!(
        get(&app, &uri, &mallory.key, &share).await,
        StatusCode::UNAUTHORIZED
    );
    // Turned into a device cap (which would bind it to Alice's identity): the
    // issuer's signature no longer verifies.
    let mut as_device = share.clone();
    as_device["kind"] = json!("device");
    assert_eq!(
        get(&app, &uri, &bob.key, &as_device).await,
        StatusCode::UNAUTHORIZED
    );
    // Presented as a public link by Bob (X-Starfish-Pub): still Bob's member cap.
    assert_eq!(redeem(&app, &uri, &bob.key, &share).await, StatusCode::OK);
}

#[tokio::test]
async fn expired_or_revoked_shares_are_refused() {
    let revocations = Arc::new(InMemoryRevocationStore::new());
    let app = router_with(
        starfish_server::sharing::validators(),
        Some(revocations.clone()),
    );
    let (alice, bob) = (user(1), user(2));
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    let mut g = grant(CapKind::Member, &["read"], "spaces", READ_ONLY);
    g.nbf = T0 / 1000 - 7200;
    g.exp = T0 / 1000 - 3600;
    let expired = issue_cap(&alice.key, &bob.key.verifying_key(), &[9; 32], &g, [7; 16]);
    assert_eq!(
        get(&app, &uri, &bob.key, &expired).await,
        StatusCode::UNAUTHORIZED
    );
    let share = member(&alice, &bob, &["read"], "spaces", READ_ONLY);
    assert_eq!(get(&app, &uri, &bob.key, &share).await, StatusCode::OK);
    let mut list = json!({
        "v": 1, "iss": pub_hex(&alice.key), "issUserId": alice.id, "generation": 1,
        "revoked": [{"sub": pub_hex(&bob.key), "nonce": share["nonce"]}],
    });
    let input = format!(
        "starfish-revlist-v1\n{}",
        starfish_protocol::stable_stringify(&list)
    );
    let sig = ed25519_dalek::Signer::sign(&alice.key, input.as_bytes());
    list["sig"] = json!(starfish_protocol::BASE64.encode(sig.to_bytes()));
    revocations.accept_list(&list).unwrap();
    assert_eq!(
        get(&app, &uri, &bob.key, &share).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_nonce_is_spent_whichever_certificate_carries_it() {
    let app = router();
    let (alice, bob) = (user(1), user(2));
    let own = format!("/pull/users/{}/notes", bob.id);
    let (status, _) = send_with_nonce(
        &app,
        "GET",
        &own,
        &bob.key,
        &bob.device,
        None,
        false,
        "same-nonce",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let share = member(&alice, &bob, &["read"], "spaces", READ_ONLY);
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    let (status, _) = send_with_nonce(
        &app,
        "GET",
        &uri,
        &bob.key,
        &share,
        None,
        false,
        "same-nonce",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a replay under another kind of cap"
    );
}

#[tokio::test]
async fn a_share_acts_only_in_a_namespace_that_trusts_its_issuer() {
    let app = router();
    let (alice, bob) = (user(1), user(2));
    let share = member(&alice, &bob, &["read", "list", "write"], "spaces", WRITER);
    // Namespace `a` trusts Alice's root: her share works there.
    let push = json!({"data": {"t": 1}, "baseHash": null});
    let uri = format!("/a/push/spaces/{}/s1", alice.id);
    let (status, _) = send(
        &app,
        "POST",
        &uri,
        &alice.key,
        &alice.device,
        Some(push),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let uri = format!("/a/pull/spaces/{}/s1", alice.id);
    assert_eq!(get(&app, &uri, &bob.key, &share).await, StatusCode::OK);
    // Namespace `b` trusts only Carol: Alice's share acts nowhere there.
    let uri = format!("/b/pull/spaces/{}/s1", alice.id);
    assert_eq!(
        get(&app, &uri, &bob.key, &share).await,
        StatusCode::FORBIDDEN
    );
}

fn link(issuer: &User, ops: &[&str], paths: &[&str], aud: Option<&[String]>) -> Value {
    let n = NONCE.fetch_add(1, Ordering::Relaxed);
    let mut nonce = [1u8; 16];
    nonce[..8].copy_from_slice(&n.to_be_bytes());
    issue_audience_cap(
        &issuer.key,
        &grant(CapKind::Audience, ops, "spaces", paths),
        aud,
        nonce,
    )
}

#[tokio::test]
async fn a_public_link_is_redeemed_with_the_redeemers_own_key_within_its_audience() {
    let app = router();
    let (alice, carol, dave) = (user(1), user(3), user(5));
    alice_writes_her_space(&app, &alice).await;
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    let open = link(&alice, &["read"], READ_ONLY, None);
    let (status, body) = send(&app, "GET", &uri, &carol.key, &open, None, true).await;
    assert_eq!(
        (status, &body["data"]),
        (StatusCode::OK, &json!({"t": 1})),
        "{body}"
    );
    // Without naming its key, the redeemer cannot be verified.
    assert_eq!(
        get(&app, &uri, &carol.key, &open).await,
        StatusCode::UNAUTHORIZED
    );
    // A read link does not write.
    let push = json!({"data": {"t": 9}, "baseHash": null});
    let (status, _) = send(
        &app,
        "POST",
        &uri.replace("/pull/", "/push/"),
        &carol.key,
        &open,
        Some(push),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A link for Dave alone.
    let for_dave = link(&alice, &["read"], READ_ONLY, Some(&[pub_hex(&dave.key)]));
    assert_eq!(
        redeem(&app, &uri, &carol.key, &for_dave).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        redeem(&app, &uri, &dave.key, &for_dave).await,
        StatusCode::OK
    );
    // A link edited to reach further: the issuer's signature breaks.
    let mut widened = open.clone();
    widened["scope"]["ops"] = json!(["read", "write"]);
    assert_eq!(
        redeem(&app, &uri, &carol.key, &widened).await,
        StatusCode::UNAUTHORIZED
    );
    // A link some stranger minted for Alice's space gives nothing.
    let stranger = link(&carol, &["read"], READ_ONLY, None);
    assert_eq!(
        redeem(&app, &uri, &dave.key, &stranger).await,
        StatusCode::FORBIDDEN
    );
}

/// Accepts every certificate of its kind: a validator weaker than the sharing one.
struct AcceptAll(CapKind);

impl CapValidator for AcceptAll {
    fn kind(&self) -> CapKind {
        self.0
    }
    fn validate(&self, _cert: &CapCert) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test]
async fn a_share_without_scope_paths_reaches_nothing_even_past_a_weak_validator() {
    let (alice, bob) = (user(1), user(2));
    let unscoped = member(&alice, &bob, &["read"], "spaces", &[]);
    let uri = format!("/pull/spaces/{}/s1", alice.id);
    // The sharing validator refuses it (it would reach `spaces/_members`).
    let app = router();
    assert_eq!(
        get(&app, &uri, &bob.key, &unscoped).await,
        StatusCode::UNAUTHORIZED
    );
    // A validator that lets it through still leaves the resolver's rule.
    let weak = CapValidators::new().with(Arc::new(AcceptAll(CapKind::Member)));
    let app = router_with(weak, None);
    assert_eq!(
        get(&app, &uri, &bob.key, &unscoped).await,
        StatusCode::FORBIDDEN
    );
}

const ENRICHED: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "products", "storagePath": "products/{productId}/docs/{doc}",
     "readRoles": ["p:member"], "writeRoles": ["p:owner"]},
    {"name": "registry", "storagePath": "products/{productId}/_registry",
     "readRoles": ["p:member"], "writeRoles": ["p:owner"]},
    {"name": "entitlements", "storagePath": "users/{identity}/entitlements",
     "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "premium", "storagePath": "premium/{id}", "readRoles": ["entitlement:gold"], "writeRoles": ["entitlement:gold"]}
  ]
}"#;

fn enriched_router(clock: &ManualClock) -> Router {
    let registry = starfish_server::sharing::RegistryEnricher::new(
        "productId",
        "products/{id}/_registry",
        "p:owner",
        "p:member",
        true,
    )
    .unwrap();
    let entitlements = starfish_server::sharing::EntitlementEnricher::new(
        "users/{identity}/entitlements",
        "features",
        "entitlement",
        60_000,
        Arc::new(clock.clone()),
    )
    .unwrap();
    let enrichers = Enrichers::new()
        .with(Arc::new(registry))
        .with(Arc::new(entitlements));
    let options = SyncOptions::new(
        SyncConfig::from_json_str(ENRICHED).unwrap(),
        DocStore::memory(),
    )
    .with_clock(Arc::new(clock.clone()))
    .with_role_enricher(Arc::new(enrichers));
    create_sync_router(options).unwrap()
}

#[tokio::test]
async fn a_registry_record_decides_who_owns_and_who_reads_a_resource() {
    let app = enriched_router(&ManualClock::new(T0));
    let (alice, bob, mallory) = (user(1), user(2), user(4));
    // No record yet: the first writer owns the resource (trust on first use).
    let record = json!({"data": {"owner": alice.id, "members": [bob.id]}, "baseHash": null});
    let (status, body) = send(
        &app,
        "POST",
        "/push/products/p1/_registry",
        &alice.key,
        &alice.device,
        Some(record),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let doc = json!({"data": {"price": 3}, "baseHash": null});
    let (status, _) = send(
        &app,
        "POST",
        "/push/products/p1/docs/card",
        &alice.key,
        &alice.device,
        Some(doc.clone()),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A member reads; a stranger neither reads nor takes the record over.
    assert_eq!(
        get(&app, "/pull/products/p1/docs/card", &bob.key, &bob.device).await,
        StatusCode::OK
    );
    assert_eq!(
        get(
            &app,
            "/pull/products/p1/docs/card",
            &mallory.key,
            &mallory.device
        )
        .await,
        StatusCode::FORBIDDEN
    );
    let takeover = json!({"data": {"owner": mallory.id}, "baseHash": ""});
    let (status, _) = send(
        &app,
        "POST",
        "/push/products/p1/_registry",
        &mallory.key,
        &mallory.device,
        Some(takeover),
        false,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A member does not write what only the owner writes.
    assert_eq!(
        send(
            &app,
            "POST",
            "/push/products/p1/docs/card",
            &bob.key,
            &bob.device,
            Some(doc),
            false
        )
        .await
        .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn entitlements_grant_roles_from_the_callers_own_document_cached_for_their_ttl() {
    let clock = ManualClock::new(T0);
    let app = enriched_router(&clock);
    let bob = user(2);
    let premium = "/pull/premium/x";
    assert_eq!(
        get(&app, premium, &bob.key, &bob.device).await,
        StatusCode::FORBIDDEN
    );
    let grant = json!({"data": {"features": ["gold", 7]}, "baseHash": null});
    let uri = format!("/push/users/{}/entitlements", bob.id);
    assert_eq!(
        send(
            &app,
            "POST",
            &uri,
            &bob.key,
            &bob.device,
            Some(grant),
            false
        )
        .await
        .0,
        StatusCode::OK
    );
    // The empty lookup is cached for its TTL; then the entitlement holds.
    assert_eq!(
        get(&app, premium, &bob.key, &bob.device).await,
        StatusCode::FORBIDDEN
    );
    clock.advance(61_000);
    SIGNED_AT.store(T0 + 61_000, Ordering::Relaxed);
    let status = get(&app, premium, &bob.key, &bob.device).await;
    SIGNED_AT.store(T0, Ordering::Relaxed);
    assert_eq!(status, StatusCode::OK);
}
