//! Helpers for router tests: a router over a store with a frozen clock, requests,
//! and response readers.
#![allow(dead_code, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use object_store::ObjectStoreExt;
use serde_json::Value;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use tower::ServiceExt;

/// 2026-01-01T00:00:00Z in ms.
pub const T0: u64 = 1_767_225_600_000;

pub const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "maxBodyBytes": 256, "cacheDurationMs": 60000},
    {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]},
    {"name": "shared", "storagePath": "shared/counter", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "board", "storagePath": "board/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "ttlMs": 1000, "cacheDurationMs": 5000},
    {"name": "inbox", "storagePath": "inbox/{id}", "readRoles": ["public"], "writeRoles": ["public"], "pushOnly": true}
  ],
  "namespaces": {
    "acme": {"collections": [
      {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]}
    ]}
  }
}"#;

pub fn config() -> SyncConfig {
    SyncConfig::from_json_str(CONFIG).unwrap()
}

pub fn router_with(store: DocStore, clock: &ManualClock) -> Router {
    create_sync_router(SyncOptions::new(config(), store).with_clock(Arc::new(clock.clone())))
        .unwrap()
}

pub fn router(store: DocStore) -> Router {
    router_with(store, &ManualClock::new(T0))
}

pub async fn send(app: &Router, req: Request<Body>) -> Response<Body> {
    app.clone().oneshot(req).await.unwrap()
}

pub fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

pub fn push_raw(uri: &str, body: impl Into<String>) -> Request<Body> {
    let body = body.into();
    Request::post(uri)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .body(Body::from(body))
        .unwrap()
}

pub fn push(uri: &str, body: &Value) -> Request<Body> {
    push_raw(uri, body.to_string())
}

/// The JSON object stored at `key`, read straight from the store; `None` when absent.
pub async fn stored(store: &DocStore, key: &str) -> Option<Value> {
    match store
        .inner()
        .get(&object_store::path::Path::from(key))
        .await
    {
        Ok(r) => Some(serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()),
        Err(object_store::Error::NotFound { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

pub async fn body_bytes(res: Response<Body>) -> Vec<u8> {
    res.into_body().collect().await.unwrap().to_bytes().to_vec()
}

pub async fn json_body(res: Response<Body>) -> Value {
    let bytes = body_bytes(res).await;
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// Asserts the status and the exact `{"error": ...}` body with a JSON content type.
pub async fn assert_error(res: Response<Body>, status: StatusCode, message: &str) {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        json_body(res).await,
        serde_json::json!({ "error": message })
    );
}

/// Pushes `data` with `base` and returns (status, body).
pub async fn push_doc(
    app: &Router,
    uri: &str,
    data: Value,
    base: Option<&str>,
) -> (StatusCode, Value) {
    let res = send(
        app,
        push(uri, &serde_json::json!({ "data": data, "baseHash": base })),
    )
    .await;
    let status = res.status();
    (status, json_body(res).await)
}

// ---- signed requests ------------------------------------------------------------

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;
use starfish_protocol::{sha256_hex, stable_stringify};

pub const HOST: &str = "sync.example.com";

/// A user: a root key (the identity) and a paired device key.
pub struct User {
    pub root: SigningKey,
    pub device: SigningKey,
    pub id: String,
}

pub fn pub_hex(k: &SigningKey) -> String {
    hex::encode(k.verifying_key().as_bytes())
}

pub fn user(seed: u8) -> User {
    let root = SigningKey::from_bytes(&[seed; 32]);
    let device = SigningKey::from_bytes(&[seed.wrapping_add(100); 32]);
    let id = starfish_protocol::capcert::user_id_from_pub_hex(&pub_hex(&root)).unwrap();
    User { root, device, id }
}

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A cap-cert for `subject`, issued and signed by `issuer`'s root key.
pub fn cap(
    issuer: &User,
    subject: &SigningKey,
    scope: serde_json::Value,
    nbf: u64,
    exp: u64,
) -> serde_json::Value {
    let mut cert = json!({
        "v": 1, "kind": "device",
        "iss": pub_hex(&issuer.root), "issUserId": issuer.id,
        "sub": pub_hex(subject), "subKem": "00".repeat(32),
        "scope": scope, "nbf": nbf, "exp": exp,
        "nonce": b64(&[7u8; 16]),
    });
    let input = format!("starfish-capcert-v1\n{}", stable_stringify(&cert));
    cert["sig"] = json!(b64(&issuer.root.sign(input.as_bytes()).to_bytes()));
    cert
}

pub fn full_scope() -> serde_json::Value {
    json!({"ops": ["read", "list", "write"], "collections": ["*"], "paths": ["**"]})
}

/// A one-hour cap for `u`'s paired device with `scope`, valid at [`T0`].
pub fn scoped_cap(u: &User, scope: serde_json::Value) -> serde_json::Value {
    cap(u, &u.device, scope, T0 / 1000 - 60, T0 / 1000 + 3600)
}

/// A one-hour self-signed cap of `u`'s root key (role `device:root`), valid at [`T0`].
pub fn root_cap(u: &User) -> serde_json::Value {
    cap(u, &u.root, full_scope(), T0 / 1000 - 60, T0 / 1000 + 3600)
}

/// A 30-day device cap for `u`'s paired device, valid at [`T0`].
pub fn device_cap(u: &User) -> serde_json::Value {
    cap(
        u,
        &u.device,
        full_scope(),
        T0 / 1000 - 60,
        T0 / 1000 + 30 * 86400,
    )
}

pub fn cap_header(cert: &serde_json::Value) -> String {
    format!("Cap {}", b64(stable_stringify(cert).as_bytes()))
}

static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Everything that goes into one signed request; tweak fields to forge one.
pub struct Signed {
    pub method: &'static str,
    /// The URI the request is sent to.
    pub uri: String,
    /// The path+query the client signs (normally equal to `uri`).
    pub signed_path: String,
    pub host: String,
    pub signed_host: String,
    pub body: Option<String>,
    pub signed_body: Option<String>,
    pub ts: u64,
    pub nonce: String,
    pub cert: serde_json::Value,
    pub key: SigningKey,
}

impl Signed {
    pub fn new(method: &'static str, uri: &str, cert: serde_json::Value, key: &SigningKey) -> Self {
        let n = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            method,
            uri: uri.to_owned(),
            signed_path: uri.to_owned(),
            host: HOST.into(),
            signed_host: HOST.into(),
            body: None,
            signed_body: None,
            ts: T0,
            nonce: b64(&n.to_be_bytes()),
            cert,
            key: key.clone(),
        }
    }

    pub fn get(uri: &str, u: &User) -> Self {
        Self::new("GET", uri, device_cap(u), &u.device)
    }

    pub fn push(uri: &str, u: &User, body: &serde_json::Value) -> Self {
        let mut s = Self::new("POST", uri, device_cap(u), &u.device);
        s.body = Some(body.to_string());
        s
    }

    pub fn build(&self) -> Request<Body> {
        let body = self.body.clone().unwrap_or_default();
        let signed_body = self.signed_body.clone().unwrap_or_else(|| body.clone());
        let input = format!(
            "starfish-req-v1\n{}",
            stable_stringify(&json!({
                "b": sha256_hex(signed_body.as_bytes()), "h": self.signed_host, "m": self.method,
                "nonce": self.nonce, "p": self.signed_path, "ts": self.ts,
            }))
        );
        let mut b = Request::builder()
            .method(self.method)
            .uri(&self.uri)
            .header("host", &self.host)
            .header("authorization", cap_header(&self.cert))
            .header(
                "x-starfish-sig",
                b64(&self.key.sign(input.as_bytes()).to_bytes()),
            )
            .header("x-starfish-ts", self.ts.to_string())
            .header("x-starfish-nonce", &self.nonce);
        if self.method == "POST" {
            b = b
                .header("content-type", "application/json")
                .header("content-length", body.len());
        }
        b.body(Body::from(body)).unwrap()
    }
}

// ---- admin API and API keys ---------------------------------------------------

/// A request with an optional `Authorization: Bearer` token and JSON body.
pub fn req(method: &str, uri: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match body {
        Some(v) => b
            .header("content-type", "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

/// The status and the JSON body (`null` when the body is not JSON).
pub async fn call(app: &Router, r: Request<Body>) -> (StatusCode, Value) {
    let res = send(app, r).await;
    let status = res.status();
    let bytes = body_bytes(res).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

// ---- servers of a test's own ------------------------------------------------------

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server program of a test's own (`redis-server`, `nats-server`) on loopback,
/// stopped by PID when dropped: one that a test can kill and start again on the
/// same port.
pub struct OwnServer {
    pub port: u16,
    child: std::process::Child,
}

impl OwnServer {
    /// Starts `program` with `args` and waits until `port` takes connections.
    pub async fn start(program: &str, args: &[&str], port: u16) -> Self {
        let child = std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        // Stopped by `Drop`, also when it does not come up.
        let server = Self { port, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{program} did not start on {port}");
    }

    /// A `redis-server` without persistence on `port`.
    pub async fn redis(port: u16) -> Self {
        let p = port.to_string();
        Self::start(
            "redis-server",
            &[
                "--bind",
                "127.0.0.1",
                "--port",
                &p,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            port,
        )
        .await
    }

    /// A `nats-server` on `port`.
    pub async fn nats(port: u16) -> Self {
        let p = port.to_string();
        Self::start("nats-server", &["-a", "127.0.0.1", "-p", &p], port).await
    }

    /// SIGKILL: everything it held is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}
