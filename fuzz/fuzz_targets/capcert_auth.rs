//! `Authorization: Cap …` parsing and cap-cert verification, with the signed-request
//! headers (`X-Starfish-Sig`, `-Ts`, `-Nonce`), through the public
//! `CapCertAuthenticator`. Must never panic, and:
//!
//! - a certificate the harness signed properly authenticates as its issuer and
//!   presenter, or not at all;
//! - the same signed request is never accepted twice (replay).
//!
//! Input: the first byte picks the mode; the rest are `\n`-separated fields.
//!
//! - even (raw): `authorization`, `x-starfish-sig`, `x-starfish-ts`,
//!   `x-starfish-nonce`, method, path, host, body, each sent as the client gave it;
//!   the `Cap` value is also parsed and verified on its own.
//! - odd (signed): a certificate as JSON text, path, body. The harness signs the
//!   certificate with a fixed issuer key (after filling in valid keys, ids and nonce
//!   when bit 1 of the mode is set) and signs the request with the subject's key, so
//!   the checks after the signatures are reached.
#![no_main]

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use starfish_server::auth::{
    AuthRequest, Authenticator, CapAuthOptions, CapCertAuthenticator, ManualClock, SignedBody,
};
use starfish_protocol::capcert::{CapCert, user_id_from_pub_hex, verify_cap_cert};
use starfish_protocol::signing::SignedRequest;
use starfish_protocol::stable_stringify;
use std::sync::Arc;

/// 2026-01-01T00:00:00Z, the vectors' clock.
const T0: u64 = 1_767_225_600_000;
const CAP_DOMAIN: &str = "starfish-capcert-v1\n";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fields: Vec<&[u8]> = rest.split(|b| *b == b'\n').collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or_default();
    if mode % 2 == 0 {
        raw(&fields, field(4), field(5), field(6), field(7));
    } else {
        signed(mode & 2 != 0, field(0), field(1), field(2));
    }
});

fn authenticator() -> CapCertAuthenticator {
    CapCertAuthenticator::new(CapAuthOptions::default(), Arc::new(ManualClock::new(T0)))
}

fn authenticate(
    auth: &CapCertAuthenticator,
    method: &Method,
    path: &str,
    host: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<starfish_server::auth::Caller, starfish_server::auth::AuthError> {
    let body = if body.is_empty() {
        SignedBody::Empty
    } else {
        SignedBody::Bytes(body)
    };
    let request = AuthRequest {
        method,
        path_and_query: path,
        host,
        headers,
        body,
    };
    futures::executor::block_on(auth.authenticate(request))
}

/// Headers exactly as the client sent them.
fn raw(fields: &[&[u8]], method: &[u8], path: &[u8], host: &[u8], body: &[u8]) {
    const NAMES: [&str; 4] = [
        "authorization",
        "x-starfish-sig",
        "x-starfish-ts",
        "x-starfish-nonce",
    ];
    let mut headers = HeaderMap::new();
    for (name, value) in NAMES.iter().zip(fields) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
    // The certificate on its own, as the conformance tests check it.
    if let Some(cap) = fields.first().and_then(|f| f.strip_prefix(b"Cap ")) {
        if let Ok(json) = B64.decode(cap) {
            if let Ok(value) = serde_json::from_slice::<Value>(&json) {
                let _ = CapCert::parse(&value).map(|c| (c.signing_input().map(str::len), c.is_root_device()));
                let _ = verify_cap_cert(&value, (T0 / 1000) as f64);
            }
        }
    }
    let method = Method::from_bytes(method).unwrap_or(Method::GET);
    let path = String::from_utf8_lossy(path);
    let host = String::from_utf8_lossy(host);
    let _ = authenticate(&authenticator(), &method, &path, &host, &headers, body);
    if let Ok(ts) = std::str::from_utf8(fields.get(2).copied().unwrap_or_default()) {
        if let Ok(ts) = ts.parse::<i64>() {
            let _ = SignedRequest {
                method: method.as_str(),
                path_and_query: &path,
                body,
                host: &host,
                ts,
                nonce: "n",
            }
            .signing_input();
        }
    }
}

/// A certificate the harness signs, on a request it signs.
fn signed(fill: bool, cert: &[u8], path: &[u8], body: &[u8]) {
    let Ok(Value::Object(mut cert)) = serde_json::from_slice::<Value>(cert) else {
        return;
    };
    let issuer = SigningKey::from_bytes(&[0x11; 32]);
    let device = SigningKey::from_bytes(&[0x21; 32]);
    let iss_hex = hex::encode(issuer.verifying_key().as_bytes());
    let dev_hex = hex::encode(device.verifying_key().as_bytes());
    let iss_user = user_id_from_pub_hex(&iss_hex).unwrap_or_default();
    if fill {
        cert.insert("iss".into(), iss_hex.clone().into());
        cert.insert("issUserId".into(), iss_user.clone().into());
        if cert.get("kind").and_then(Value::as_str) != Some("audience") {
            // The subject is the issuer (a root device) when the cert says so.
            let root = cert.get("sub").and_then(Value::as_str) == Some("root");
            let sub = if root { &iss_hex } else { &dev_hex };
            cert.insert("sub".into(), sub.clone().into());
            cert.insert("subKem".into(), "00".repeat(32).into());
        }
        cert.insert("nonce".into(), B64.encode([7u8; 16]).into());
    }
    cert.remove("sig");
    let input = format!(
        "{CAP_DOMAIN}{}",
        stable_stringify(&Value::Object(cert.clone()))
    );
    cert.insert(
        "sig".into(),
        B64.encode(issuer.sign(input.as_bytes()).to_bytes()).into(),
    );
    let header = format!(
        "Cap {}",
        B64.encode(stable_stringify(&Value::Object(cert.clone())))
    );

    let signer_hex = cert
        .get("sub")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let signer = if signer_hex == iss_hex {
        &issuer
    } else {
        &device
    };
    let path = String::from_utf8_lossy(path);
    let path = if path.starts_with('/') {
        path.into_owned()
    } else {
        format!("/{path}")
    };
    let method = if body.is_empty() {
        Method::GET
    } else {
        Method::POST
    };
    let nonce = B64.encode([9u8; 16]);
    let signing = SignedRequest {
        method: method.as_str(),
        path_and_query: &path,
        body,
        host: "h",
        ts: T0 as i64,
        nonce: &nonce,
    }
    .signing_input();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    set("authorization", header);
    set(
        "x-starfish-sig",
        B64.encode(signer.sign(signing.as_bytes()).to_bytes()),
    );
    set("x-starfish-ts", T0.to_string());
    set("x-starfish-nonce", nonce.clone());

    let auth = authenticator();
    let first = authenticate(&auth, &method, &path, "h", &headers, body);
    if let Ok(caller) = &first {
        if let Some(identity) = caller.identity() {
            if fill {
                assert_eq!(identity, iss_user, "a cap authenticates as its issuer");
            }
            assert_eq!(
                caller.presenter(),
                Some(signer_hex.as_str()),
                "the presenter is the key that signed the request"
            );
            let again = authenticate(&auth, &method, &path, "h", &headers, body);
            assert!(again.is_err(), "a replayed request was accepted");
        }
    }
}
