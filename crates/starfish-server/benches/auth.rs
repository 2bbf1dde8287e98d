//! The per-request verification path: cap-cert + request signature + replay cache,
//! with the verified-certificate cache hit and missed, and a signed pull end to end
//! through the router over `InMemory`.
//!
//! `cargo bench -p starfish-server --bench auth`

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request};
use base64::Engine as _;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use starfish_server::auth::{
    AuthRequest, Authenticator, CapAuthOptions, CapCertAuthenticator, ManualClock,
    NonceCacheLimits, SignedBody,
};
use starfish_server::internals::user_id_from_pub_hex;
use starfish_server::internals::{sha256_hex, stable_stringify};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

const T0: u64 = 1_767_225_600_000;
const HOST: &str = "127.0.0.1:8080";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

struct Keys {
    root: SigningKey,
    device: SigningKey,
    id: String,
}

fn keys() -> Keys {
    let root = SigningKey::from_bytes(&[1; 32]);
    let device = SigningKey::from_bytes(&[2; 32]);
    let id = user_id_from_pub_hex(&hex::encode(root.verifying_key().as_bytes())).unwrap();
    Keys { root, device, id }
}

/// A device cap; `serial` makes each one a distinct certificate.
fn cap_header(k: &Keys, serial: u64) -> String {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&serial.to_be_bytes());
    let mut cert = json!({
        "v": 1, "kind": "device",
        "iss": hex::encode(k.root.verifying_key().as_bytes()), "issUserId": k.id,
        "sub": hex::encode(k.device.verifying_key().as_bytes()), "subKem": "00".repeat(32),
        "scope": {"ops": ["read", "list", "write"], "collections": ["*"], "paths": ["**"]},
        "nbf": T0 / 1000 - 60, "exp": T0 / 1000 + 86400, "nonce": b64(&nonce),
    });
    let input = format!("starfish-capcert-v1\n{}", stable_stringify(&cert));
    cert["sig"] = Value::from(b64(&k.root.sign(input.as_bytes()).to_bytes()));
    format!("Cap {}", b64(stable_stringify(&cert).as_bytes()))
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// Signature headers for a GET of `path` at `ts` with a fresh nonce.
fn signed_headers(k: &Keys, cap: &str, path: &str, ts: u64) -> HeaderMap {
    let nonce = b64(&NONCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let input = format!(
        "starfish-req-v1\n{}",
        stable_stringify(
            &json!({"b": sha256_hex(b""), "h": HOST, "m": "GET", "nonce": nonce, "p": path, "ts": ts})
        )
    );
    let mut h = HeaderMap::new();
    let v = |s: &str| HeaderValue::from_str(s).unwrap();
    h.insert("authorization", v(cap));
    h.insert(
        "x-starfish-sig",
        v(&b64(&k.device.sign(input.as_bytes()).to_bytes())),
    );
    h.insert("x-starfish-ts", v(&ts.to_string()));
    h.insert("x-starfish-nonce", v(&nonce));
    h.insert("host", v(HOST));
    h
}

fn authenticator(clock: &ManualClock, cache_bytes: u64) -> CapCertAuthenticator {
    CapCertAuthenticator::new(
        CapAuthOptions {
            cert_cache_bytes: cache_bytes,
            // Entries expire as the clock moves 1 ms per iteration: the cache stays small.
            nonce_limits: NonceCacheLimits {
                window_ms: 10_000,
                max_entries: 1_000_000,
                per_signer: 1_000_000,
            },
            ..CapAuthOptions::default()
        },
        Arc::new(clock.clone()),
    )
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let k = keys();
    let path = format!("/pull/users/{}/settings", k.id);
    let method = Method::GET;

    let mut run = |name: &str, cache_bytes: u64, distinct_certs: u64| {
        let clock = ManualClock::new(T0);
        let auth = authenticator(&clock, cache_bytes);
        let caps: Vec<String> = (0..distinct_certs).map(|i| cap_header(&k, i)).collect();
        let mut i = 0usize;
        c.bench_function(name, |b| {
            b.iter_batched(
                || {
                    clock.advance(1);
                    i = (i + 1) % caps.len();
                    signed_headers(&k, &caps[i], &path, clock_now(&clock))
                },
                |headers| {
                    let req = AuthRequest {
                        method: &method,
                        path_and_query: &path,
                        host: HOST,
                        headers: &headers,
                        body: SignedBody::Empty,
                    };
                    rt.block_on(auth.authenticate(req)).expect("verified")
                },
                BatchSize::SmallInput,
            )
        });
    };
    // Same certificate every time: one Ed25519 verification per request.
    run("verify/cert_cache_hit", 16 << 20, 1);
    // A new certificate every time (cache of 1, 512 certs in turn): two verifications.
    run("verify/cert_cache_miss", 1, 512);
}

fn clock_now(clock: &ManualClock) -> u64 {
    use starfish_server::auth::Clock;
    clock.now_ms()
}

fn router(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let k = keys();
    let config = SyncConfig::from_json_str(
        r#"{"version":1,"collections":[{"name":"settings","storagePath":"users/{identity}/settings","readRoles":["self"],"writeRoles":["self"]}]}"#,
    )
    .unwrap();
    let clock = ManualClock::new(T0);
    let app = create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(clock.clone()))
            .with_cap_auth(CapAuthOptions {
                nonce_limits: NonceCacheLimits {
                    window_ms: 10_000,
                    max_entries: 1_000_000,
                    per_signer: 1_000_000,
                },
                ..CapAuthOptions::default()
            }),
    )
    .unwrap();
    let cap = cap_header(&k, 0);
    let path = format!("/pull/users/{}/settings", k.id);
    c.bench_function("router/signed_pull_in_memory", |b| {
        b.iter_batched(
            || {
                clock.advance(1);
                let headers = signed_headers(&k, &cap, &path, clock_now(&clock));
                let mut req = Request::get(&path).body(Body::empty()).unwrap();
                *req.headers_mut() = headers;
                req
            },
            |req| {
                let res = rt.block_on(app.clone().oneshot(req)).unwrap();
                assert_eq!(res.status(), 200);
                res
            },
            BatchSize::SmallInput,
        )
    });
}

criterion_group!(benches, verify, router);
criterion_main!(benches);
