//! `starfish migrate` against the data directory of a running `starfish serve`: the
//! namespace moves to its prefix on disk, the server serves the same documents from
//! there without a restart, and its shared twin keeps the old ones.

use crate::common;

use common::{BIN, Server};
use std::process::Command;

const CONFIG: &str = r#"
version: 1
collections: []
namespaces:
  acme:
    collections:
      - {name: board, storagePath: "board/{id}", readRoles: [public], writeRoles: [public]}
  globex:
    collections:
      - {name: board, storagePath: "board/{id}", readRoles: [public], writeRoles: [public]}
"#;

fn migrate(config: &std::path::Path, data: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("migrate")
        .args(args)
        .arg("--config")
        .arg(config)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// The `data` of a pull, as text.
fn data(server: &Server, path: &str) -> String {
    let (status, text) = server.request("GET", path, None);
    assert_eq!(status, 200, "{path}: {text}");
    let start = text.find("\"data\":").unwrap();
    let end = text.find(",\"hash\"").unwrap();
    text[start..end].to_owned()
}

/// A `starfish serve` of [`CONFIG`] on a data directory in a fresh temporary folder:
/// the folder, the config's path, the data directory, the server.
fn serving() -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    Server,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start_with(&config, &data_dir, &[]);
    (dir, config, data_dir, server)
}

#[test]
fn migrate_moves_a_namespace_of_a_running_server_to_its_prefix() {
    let (_dir, config, data_dir, server) = serving();
    for i in 0..5 {
        let body = format!(r#"{{"data":{{"i":{i}}}}}"#);
        let (status, text) = server.request("POST", &format!("/acme/push/board/b{i}"), Some(&body));
        assert_eq!(status, 200, "{text}");
    }
    let before: Vec<String> = (0..5)
        .map(|i| data(&server, &format!("/acme/pull/board/b{i}")))
        .collect();
    assert_eq!(data(&server, "/globex/pull/board/b0"), before[0], "shared");

    let (ok, out) = migrate(&config, &data_dir, &["acme", "--grace", "1.5"]);
    assert!(ok, "{out}");
    assert!(out.contains("frozen") && out.contains("done"), "{out}");
    assert!(data_dir.join("_starfish/ns/acme/board/b4").is_file());
    let (ok, out) = migrate(&config, &data_dir, &["--status"]);
    assert!(ok && out.contains("\"phase\": \"done\""), "{out}");

    // The running server serves acme from its prefix within its refresh (1 s): a
    // write waits (503) until then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (mut status, mut text) = (503, String::new());
    while status == 503 && std::time::Instant::now() < deadline {
        (status, text) = server.request(
            "POST",
            "/acme/push/board/new",
            Some(r#"{"data":{"new":1}}"#),
        );
    }
    assert_eq!(status, 200, "{text}");
    for (i, was) in before.iter().enumerate() {
        assert_eq!(&data(&server, &format!("/acme/pull/board/b{i}")), was);
    }
    // On disk within the journal's interval (1 s).
    assert!(common::eventually(|| data_dir
        .join("_starfish/ns/acme/board/new")
        .is_file()));
    assert!(!data_dir.join("board/new").exists());
    let (status, _) = server.request("GET", "/globex/pull/board/new", None);
    assert_eq!(status, 200);
    assert_eq!(data(&server, "/globex/pull/board/new"), "\"data\":{}");

    let (ok, out) = migrate(&config, &data_dir, &["acme"]);
    assert!(!ok && out.contains("migrated already"), "{out}");
    // A migration is an admin action: it lands in the audit log, refused ones too.
    let log = data_dir.parent().unwrap().join("audit.jsonl");
    let log_arg = log.to_str().unwrap();
    let (ok, out) = migrate(&config, &data_dir, &["nope", "--audit-log", log_arg]);
    assert!(!ok && out.contains("no namespace"), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    let record: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(record["action"], "admin.namespace.migrate", "{text}");
    assert_eq!(record["target"], "nope");
    assert_eq!(
        (record["success"].as_bool(), record["statusCode"].as_u64()),
        (Some(false), Some(500))
    );
    assert!(
        record["reason"].as_str().unwrap().contains("no namespace"),
        "{text}"
    );
}

/// A SIGTERM (an orchestrator stopping the job) stops the copier as Ctrl-C does,
/// between two objects with its state saved, instead of killing it; run again, the
/// migration goes on to its end.
#[test]
fn a_stop_signal_stops_the_copier_as_ctrl_c_does() {
    use std::io::BufRead as _;
    let (_dir, config, data_dir, server) = serving();
    let (status, text) = server.request("POST", "/acme/push/board/b0", Some(r#"{"data":{}}"#));
    assert_eq!(status, 200, "{text}");

    let mut copier = Command::new(BIN)
        .args(["migrate", "acme", "--grace", "3", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(&data_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(copier.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("frozen") {
            break;
        }
    }
    assert!(seen.contains("frozen"), "{seen}");
    let sent = Command::new("kill")
        .args(["-TERM", &copier.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let exit = copier.wait().unwrap();
    assert_eq!(
        exit.code(),
        Some(1),
        "exits by itself, not by the signal: {seen}"
    );
    assert!(seen.contains("stopped; run again to go on"), "{seen}");
    let (ok, out) = migrate(&config, &data_dir, &["--status"]);
    assert!(ok && out.contains("\"phase\": \"frozen\""), "{out}");
    let (ok, out) = migrate(&config, &data_dir, &["acme", "--grace", "0.5"]);
    assert!(ok && out.contains("done"), "{out}");
    drop(server);
}
