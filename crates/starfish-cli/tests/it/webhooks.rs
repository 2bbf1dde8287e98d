//! `server: webhooks:`: a webhook route from the config, its secret from the
//! environment, verified, transformed and pushed by the running binary; a secret
//! written in the config file is refused.

use crate::common;

use common::*;
use sha2::{Digest, Sha256};
use std::process::Command;

const CONFIG: &str = r#"version: 1
collections:
  - name: inbox
    storagePath: inbox/{id}
    readRoles: [public]
    writeRoles: [public]
server:
  webhooks:
    ci:
      target: /push/inbox/{id}
      secretEnv: TEST_WEBHOOK_SECRET
      timestampHeader: x-webhook-timestamp
      transform:
        data: {status: /build/status}
        params: {id: /delivery}
"#;

/// HMAC-SHA256 (RFC 2104), hex.
fn hmac_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    block[..key.len()].copy_from_slice(key);
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

#[test]
fn a_configured_webhook_is_verified_and_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--store", "memory", "--port", "0", "--config"])
        .arg(&config)
        .env("TEST_WEBHOOK_SECRET", "s3cret");
    let server = Server::spawn(command);
    let body = r#"{"delivery":"d-7","build":{"status":"green"}}"#;
    // The server's own clock is the wall clock: so is this one.
    let ts = starfish_server::auth::Clock::now_ms(&starfish_server::auth::SystemClock) / 1000;
    let signature = hmac_hex(b"s3cret", format!("{ts}.{body}").as_bytes());
    let head = format!(
        "POST /webhook/ci HTTP/1.1\r\nContent-Type: application/json\r\nX-Webhook-Timestamp: {ts}\r\nX-Webhook-Signature: {signature}"
    );
    let (status, _, answer) = server.send(&head, body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let (status, pulled) = server.request("GET", "/pull/inbox/d-7", None);
    assert_eq!(status, 200);
    assert!(pulled.contains(r#""status":"green""#), "{pulled}");
    // Sent again: a replay.
    let (status, _, answer) = server.send(&head, body);
    assert_eq!(status, 401);
    assert_eq!(String::from_utf8_lossy(&answer), r#"{"error":"replayed"}"#);
    // Another secret: refused.
    let forged = head.replace(
        &signature,
        &hmac_hex(b"guess", format!("{ts}.{body}").as_bytes()),
    );
    assert_eq!(server.send(&forged, body).0, 401);
    assert!(server.terminate().success());
}

#[test]
fn a_secret_in_the_config_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    let inline = CONFIG.replace("secretEnv: TEST_WEBHOOK_SECRET", "secret: s3cret");
    std::fs::write(&config, inline).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--store", "memory", "--port", "0", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("never in the config file"), "{stderr}");
}
