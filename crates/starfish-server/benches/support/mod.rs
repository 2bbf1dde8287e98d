//! Signing for the benches: a fixed identity, its device certificate, and the
//! signature headers of a GET.
#![allow(dead_code, unreachable_pub)]

use axum::http::{HeaderMap, HeaderValue};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use starfish_protocol::capcert::user_id_from_pub_hex;
use starfish_protocol::{sha256_hex, stable_stringify};
use std::sync::atomic::{AtomicU64, Ordering};

pub const T0: u64 = 1_767_225_600_000;
pub const HOST: &str = "127.0.0.1:8080";

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub struct Keys {
    pub root: SigningKey,
    pub device: SigningKey,
    pub id: String,
}

/// The identity made from `seed`.
pub fn keys_from(seed: u8) -> Keys {
    let root = SigningKey::from_bytes(&[seed; 32]);
    let device = SigningKey::from_bytes(&[seed.wrapping_add(100); 32]);
    let id = user_id_from_pub_hex(&hex::encode(root.verifying_key().as_bytes())).unwrap();
    Keys { root, device, id }
}

pub fn keys() -> Keys {
    keys_from(1)
}

/// A device cap valid around `now_s`; `serial` makes each one a distinct certificate.
pub fn cap_header_at(k: &Keys, serial: u64, now_s: u64) -> String {
    let scope = json!({"ops": ["read", "list", "write"], "collections": ["*"], "paths": ["**"]});
    cap_header_scoped(k, serial, now_s, scope)
}

/// A device cap with `scope`, validly issued (signed by the identity's root key)
/// whatever the scope holds.
pub fn cap_header_scoped(k: &Keys, serial: u64, now_s: u64, scope: Value) -> String {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&serial.to_be_bytes());
    let mut cert = json!({
        "v": 1, "kind": "device",
        "iss": hex::encode(k.root.verifying_key().as_bytes()), "issUserId": k.id,
        "sub": hex::encode(k.device.verifying_key().as_bytes()), "subKem": "00".repeat(32),
        "scope": scope,
        "nbf": now_s - 60, "exp": now_s + 86400, "nonce": b64(&nonce),
    });
    let input = format!("starfish-capcert-v1\n{}", stable_stringify(&cert));
    cert["sig"] = Value::from(b64(&k.root.sign(input.as_bytes()).to_bytes()));
    format!("Cap {}", b64(stable_stringify(&cert).as_bytes()))
}

/// A device cap valid at [`T0`].
pub fn cap_header(k: &Keys, serial: u64) -> String {
    cap_header_at(k, serial, T0 / 1000)
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// Signature headers for a GET of `path` at `ts` with a fresh nonce.
pub fn signed_headers(k: &Keys, cap: &str, path: &str, ts: u64) -> HeaderMap {
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
