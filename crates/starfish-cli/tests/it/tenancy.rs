//! `starfish serve` with tenancy settings and `starfish admin` against it: a
//! namespace created at runtime from a template, served, then deleted; `--isolation`
//! separating two namespaces' identical storage paths on disk.

use crate::common;

use common::{BIN, Server};
use std::process::Command;

const KEY: &str = "cli-admin-key-0123456789";

const CONFIG: &str = r#"
version: 1
collections: []
namespaces:
  acme:
    collections:
      - {name: board, storagePath: board, readRoles: [public], writeRoles: [public]}
  globex:
    collections:
      - {name: board, storagePath: board, readRoles: [public], writeRoles: [public]}
namespaceTemplates:
  team:
    collections:
      - {name: board, storagePath: board, readRoles: [public], writeRoles: [public]}
server:
  tenancy:
    adminKeyFile: admin.key
"#;

fn admin(port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("admin")
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(args)
        .env("STARFISH_ADMIN_KEY", KEY)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn admin_subcommands_manage_runtime_namespaces_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    std::fs::write(dir.path().join("admin.key"), format!("{KEY}\n")).unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(&config, &data, &["--isolation", "prefixed"]);
    let port = server.port;

    let (ok, out, err) = admin(
        port,
        &["namespaces", "create", "initech", "--template", "team"],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("\"name\": \"initech\""), "{out}");
    let (ok, _, err) = admin(
        port,
        &["namespaces", "create", "initech", "--template", "team"],
    );
    assert!(
        !ok && err.contains("409") && err.contains("Namespace exists"),
        "{err}"
    );

    // Its template has no quota: there is none to set.
    let (ok, _, err) = admin(
        port,
        &["namespaces", "quota", "initech", "--max-documents", "5"],
    );
    assert!(
        !ok && err.contains("400") && err.contains("no quota"),
        "{err}"
    );

    for ns in ["acme", "globex", "initech"] {
        let body = format!(r#"{{"data":{{"from":"{ns}"}}}}"#);
        let (status, text) = server.request("POST", &format!("/{ns}/push/board"), Some(&body));
        assert_eq!(status, 200, "{ns}: {text}");
    }
    // --isolation prefixed: three namespaces, three files, none at the shared key.
    let runtime_board = |data: &std::path::Path| {
        let dir = data.join("_starfish/t/initech");
        std::fs::read_dir(&dir)
            .ok()
            .and_then(|mut gens| gens.next())
            .map(|g| g.unwrap().path().join("board"))
    };
    for ns in ["acme", "globex", "initech"] {
        let file = || {
            if ns == "initech" {
                runtime_board(&data)
            } else {
                Some(data.join("_starfish/ns").join(ns).join("board"))
            }
        };
        // On disk within the journal's interval (1 s).
        assert!(common::eventually(|| file().is_some_and(|f| f.is_file())));
        let file = file().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("\"from\":\"{ns}\"")),
            "{}: {text}",
            file.display()
        );
    }
    assert!(!data.join("board").exists());

    let (ok, out, err) = admin(port, &["namespaces", "list", "--usage"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"][0]["name"], "initech");
    assert_eq!(list["items"][0]["objects"], 1);
    assert_eq!(list["configured"].as_array().unwrap().len(), 2);

    let (ok, out, err) = admin(port, &["keys", "create", "--grant", "initech=read"]);
    assert!(ok, "{err}");
    let key: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = key["key"].as_str().unwrap();
    assert!(token.starts_with("sfk_"), "{out}");

    let (ok, _, err) = admin(port, &["namespaces", "delete", "initech"]);
    assert!(ok, "{err}");
    let (status, _) = server.request("GET", "/initech/pull/board", None);
    assert_eq!(status, 404);
    assert!(runtime_board(&data).is_none_or(|f| !f.exists()));

    // A wrong key is refused.
    let out = Command::new(BIN)
        .args([
            "admin",
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "namespaces",
            "list",
        ])
        .env("STARFISH_ADMIN_KEY", "not-the-admin-key-at-all")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}
