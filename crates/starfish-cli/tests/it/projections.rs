//! `server: projections:` and `starfish admin reproject`: cards written before the
//! projection was configured are indexed by reproject after a restart with it.

use crate::common;

use common::*;
use std::process::Command;

const KEY: &str = "cli-admin-key-0123456789";
const CONFIG: &str = r#"version: 1
collections:
  - {name: cards, storagePath: "boards/{board}/cards/{id}", readRoles: [public], writeRoles: [public]}
  - {name: index, storagePath: "boards/{board}/index", readRoles: [public], writeRoles: [public], pullOnly: true}
server:
  tenancy:
    adminKeyFile: admin.key
"#;
const PROJECTION: &str =
    "  projections:\n    - {source: cards, target: \"boards/{board}/index\", fields: [title]}\n";

fn push_card(server: &Server, id: &str, title: &str) {
    let body = format!(r#"{{"data":{{"title":"{title}"}},"baseHash":null}}"#);
    let head =
        format!("POST /push/boards/b1/cards/{id} HTTP/1.1\r\nContent-Type: application/json");
    let (status, _, answer) = server.send(&head, &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn reproject_indexes_what_was_written_before_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(dir.path().join("admin.key"), format!("{KEY}\n")).unwrap();
    let data = dir.path().join("data");
    std::fs::write(&config, CONFIG).unwrap();
    let before = Server::start_with(&config, &data, &[]);
    for id in ["c1", "c2", "c3"] {
        push_card(&before, id, id);
    }
    assert!(before.terminate().success());

    std::fs::write(&config, format!("{CONFIG}{PROJECTION}")).unwrap();
    let after = Server::start_with(&config, &data, &[]);
    // A write now is projected at once; the older ones are not, yet.
    push_card(&after, "c4", "c4");
    let (_, index) = after.request("GET", "/pull/boards/b1/index", None);
    assert!(
        index.contains(r#""id":"c4""#) && !index.contains(r#""id":"c1""#),
        "{index}"
    );
    let out = Command::new(BIN)
        .args([
            "admin",
            "--url",
            &format!("http://127.0.0.1:{}", after.port),
        ])
        .args(["reproject", "~", "cards"])
        .env("STARFISH_ADMIN_KEY", KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(r#""done":true"#));
    let (status, index) = after.request("GET", "/pull/boards/b1/index", None);
    assert_eq!(status, 200);
    for id in ["c1", "c2", "c3", "c4"] {
        assert!(index.contains(&format!(r#""id":"{id}""#)), "{index}");
    }
    assert!(after.terminate().success());
}
