//! The per-request verification path: cap-cert + request signature + replay cache,
//! with the verified-certificate cache hit and missed, and a signed pull end to end
//! through the router over `InMemory`.
//!
//! `cargo bench -p starfish-server --bench auth`

use axum::body::Body;
use axum::http::{Method, Request};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use starfish_server::auth::{
    AuthRequest, Authenticator, CapAuthOptions, CapCertAuthenticator, ManualClock,
    NonceCacheLimits, SignedBody,
};
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use tower::ServiceExt;

mod support;

use support::{HOST, T0, cap_header, keys, signed_headers};

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
                // Each batch's requests are signed (the clock moving 1 ms each)
                // before any is verified: a batch must fit in the replay window.
                BatchSize::NumIterations(256),
            )
        });
    };
    // Same certificate every time: one Ed25519 verification per request.
    run("verify/cert_cache_hit", 16 << 20, 1);
    // A new certificate every time (cache of 1, 512 certs in turn): two verifications.
    run("verify/cert_cache_miss", 1, 512);
}

/// One Ed25519 verification: `starfish_protocol::author::verify` (what every check
/// uses: points compared without the final inversion) against `ed25519_dalek`'s
/// `verify_strict`, which it replaces and agrees with.
///
/// `cargo bench -p starfish-server --bench auth -- ed25519/`
fn ed25519(c: &mut Criterion) {
    let secret = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let key = secret.verifying_key();
    let message = b"GET\n/pull/users/abc/settings\nhost\n1767225600000\nnonce";
    let signature = ed25519_dalek::Signer::sign(&secret, message);
    c.bench_function("ed25519/verify_strict", |b| {
        b.iter(|| key.verify_strict(std::hint::black_box(message), &signature))
    });
    c.bench_function("ed25519/author_verify", |b| {
        b.iter(|| {
            starfish_protocol::author::verify(&key, std::hint::black_box(message), &signature)
        })
    });
}

/// Requests refused for their signature, under a normal certificate and under a
/// validly issued bloated one (scope `ops` repeating `"read"` 300 times, 400 empty
/// collection names: 5 KB of certificate header). Neither certificate has carried a
/// valid request, so neither is cached. Two signatures: junk (not a signature at all)
/// and a well-formed one by another key. Refusing a request must cost no more for the
/// bloated certificate than for the normal one. The headers are dropped outside the
/// measure (freeing a request costs the same, refused or not).
///
/// `cargo bench -p starfish-server --bench auth -- refuse/`
fn refuse(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let k = keys();
    let stranger = support::keys_from(7);
    let path = format!("/pull/users/{}/settings", k.id);
    let method = Method::GET;
    let normal = cap_header(&k, 0);
    let bloated = support::cap_header_scoped(
        &k,
        0,
        T0 / 1000,
        serde_json::json!({"ops": vec!["read"; 300], "collections": vec![""; 400]}),
    );
    assert!(bloated.len() > 4_500 && bloated.len() <= 8 * 1024);
    let clock = ManualClock::new(T0);
    let auth = authenticator(&clock, 16 << 20);
    for (sig, cert, cap) in [
        ("junk_sig", "normal_cert", &normal),
        ("junk_sig", "bloated_cert", &bloated),
        ("wrong_key_sig", "normal_cert", &normal),
        ("wrong_key_sig", "bloated_cert", &bloated),
    ] {
        c.bench_function(&format!("refuse/{sig}/{cert}"), |b| {
            b.iter_batched_ref(
                || {
                    clock.advance(1);
                    let mut headers = signed_headers(&stranger, cap, &path, clock_now(&clock));
                    headers.insert("authorization", cap.parse().unwrap());
                    if sig == "junk_sig" {
                        headers.insert("x-starfish-sig", "junk".parse().unwrap());
                    }
                    headers
                },
                |headers| {
                    let req = AuthRequest {
                        method: &method,
                        path_and_query: &path,
                        host: HOST,
                        headers,
                        body: SignedBody::Empty,
                    };
                    rt.block_on(auth.authenticate(req)).expect_err("refused")
                },
                BatchSize::SmallInput,
            )
        });
    }
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
                    // At least twice the allowed skew, as the router requires.
                    window_ms: 600_000,
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
            // A batch is signed before it is served: it must fit in the replay window.
            BatchSize::NumIterations(256),
        )
    });
}

/// An anonymous pull of a public 1 KB document, whole request through the router and
/// its layers (limits, compression, security headers), without the socket.
fn public_pull(c: &mut Criterion) {
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = SyncConfig::from_json_str(
        r#"{"version":1,"collections":[{"name":"pub1","storagePath":"public/pub1","readRoles":["public"],"writeRoles":["cap:write:pub1"]}]}"#,
    )
    .unwrap();
    let inner = Arc::new(object_store::memory::InMemory::new());
    let doc = format!(
        r#"{{"v":1,"data":{{"body":"{}","title":"pub1"}},"ts":{T0},"hash":"{}"}}"#,
        "x".repeat(1000),
        "ab".repeat(32)
    );
    rt.block_on(inner.put(&object_store::path::Path::from("public/pub1"), doc.into()))
        .unwrap();
    let store = DocStore::new(
        inner,
        starfish_server::store::Capabilities {
            conditional_update: true,
            attributes: true,
        },
    )
    .with_read_cache(1 << 20);
    let app = create_sync_router(SyncOptions::new(config, store)).unwrap();
    c.bench_function("router/public_pull_cached", |b| {
        b.iter(|| {
            let req = Request::get("/pull/public/pub1")
                .header("host", HOST)
                .body(Body::empty())
                .unwrap();
            let res = rt.block_on(app.clone().oneshot(req)).unwrap();
            assert_eq!(res.status(), 200);
            res
        })
    });
}

criterion_group!(benches, ed25519, verify, refuse, router, public_pull);
criterion_main!(benches);
