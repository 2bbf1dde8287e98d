//! Encryption at rest from the binary: `starfish serve` seals a namespace with the
//! master key from `STARFISH_MASTER_KEY`, and `starfish admin rotate-keys` seals its
//! objects again under a new key; the server reads them after.

use crate::common;

use common::{BIN, Server};
use std::process::Command;

const CONFIG: &str = r#"
version: 1
collections: []
namespaces:
  acme:
    isolation: prefixed
    encryptAtRest: true
    collections:
      - {name: board, storagePath: "board/{id}", readRoles: [public], writeRoles: [public]}
"#;

const KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";

fn serve(config: &std::path::Path, data: &std::path::Path) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--port", "0", "--config"])
        .arg(config)
        .arg("--data")
        .arg(data)
        .env("STARFISH_MASTER_KEY", KEY);
    Server::spawn(command)
}

fn rotate(config: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["admin", "rotate-keys", "acme", "--grace", "0"])
        .args(extra)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .env("STARFISH_MASTER_KEY", KEY)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The key version the stored document is sealed under.
fn version(data: &std::path::Path) -> u32 {
    let bytes = std::fs::read(data.join("_starfish/ns/acme/board/b1")).unwrap();
    assert!(bytes.starts_with(b"SFSEAL1\0"), "not sealed");
    assert!(!String::from_utf8_lossy(&bytes).contains("secret-words"));
    u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]])
}

#[test]
fn rotate_keys_reseals_what_serve_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let data = dir.path().join("data");
    let server = serve(&config, &data);
    let body = r#"{"data":{"text":"secret-words"}}"#;
    let (status, text) = server.request("POST", "/acme/push/board/b1", Some(body));
    assert_eq!(status, 200, "{text}");
    let (_, before) = server.request("GET", "/acme/pull/board/b1", None);
    server.terminate();
    // On disk once the server stopped (its journal is written out on the way).
    assert_eq!(version(&data), 1);

    // The filesystem has no conditional writes: only with the server stopped.
    let (ok, out) = rotate(&config, &data, &[]);
    assert!(!ok && out.contains("offline"), "{out}");
    let (ok, out) = rotate(&config, &data, &["--offline"]);
    assert!(ok, "{out}");
    assert!(out.contains("key version 2"), "{out}");
    assert_eq!(version(&data), 2);

    let server = serve(&config, &data);
    let (status, after) = server.request("GET", "/acme/pull/board/b1", None);
    assert_eq!(status, 200);
    let strip = |t: &str| t[..t.find(",\"timestamp\"").unwrap_or(t.len())].to_owned();
    assert_eq!(strip(&after), strip(&before));
    server.terminate();
}
