//! The client subcommands (`starfish identity|pull|push|append|watch`) as a user runs
//! them, against a real `starfish serve`; and the README's first signed request, run
//! exactly as written there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common;
use common::*;

const CONFIG: &str = r#"
version: 1
collections:
  - {name: notes, storagePath: "users/{identity}/notes", readRoles: [self], writeRoles: [self]}
  - {name: journal, storagePath: "users/{identity}/journal", readRoles: [self], writeRoles: [self],
     appendOnly: true}
  - {name: board, storagePath: "board/{topic}", readRoles: [public], writeRoles: [public]}
namespaces:
  acme:
    collections:
      - {name: wiki, storagePath: "wiki/{identity}/{page}", readRoles: [public], writeRoles: [self]}
"#;

/// Runs `starfish ARGS` against `url`; (exit success, stdout, stderr).
fn starfish(url: &str, args: &[&str]) -> (bool, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .args(args)
        .env("STARFISH_URL", url)
        .env_remove("STARFISH_IDENTITY")
        .env_remove("STARFISH_NAMESPACE")
        .output()
        .unwrap();
    (
        status.success(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// Runs `starfish ARGS`, which must succeed; its stdout as JSON.
fn json_of(url: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = starfish(url, args);
    assert!(ok, "starfish {args:?} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// Runs `starfish ARGS`, which must fail; its stderr.
fn refused(url: &str, args: &[&str]) -> String {
    let (ok, out, err) = starfish(url, args);
    assert!(!ok, "starfish {args:?} succeeded: {out}");
    err
}

fn serve(dir: &Path) -> Server {
    let config = dir.join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    Server::start_with(&config, &dir.join("data"), &[])
}

#[test]
fn a_new_identity_is_readable_by_its_owner_alone_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("me.json");
    let file = file.to_str().unwrap();
    let (ok, user_id, _) = starfish("http://127.0.0.1:1", &["identity", "new", file]);
    assert!(ok);
    let user_id = user_id.trim();
    assert_eq!(user_id.len(), 32, "{user_id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let before = std::fs::read(file).unwrap();
    let err = refused("http://127.0.0.1:1", &["identity", "new", file]);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(file).unwrap(), before, "overwritten");
    let shown = json_of("http://127.0.0.1:1", &["identity", "show", file]);
    assert_eq!(shown["userId"], user_id);
    // A certificate edited by hand no longer verifies: the identity is refused.
    let mut edited: serde_json::Value = serde_json::from_slice(&before).unwrap();
    edited["cert"]["exp"] = serde_json::json!(4_000_000_000u64);
    let edited_file = dir.path().join("edited.json");
    std::fs::write(&edited_file, edited.to_string()).unwrap();
    let err = refused(
        "http://127.0.0.1:1",
        &["identity", "show", edited_file.to_str().unwrap()],
    );
    assert!(err.contains("bad-signature"), "{err}");
}

#[test]
fn signed_pulls_pushes_and_appends_act_as_the_identity_and_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let url = format!("http://127.0.0.1:{}", server.port);
    let url = url.as_str();
    let me = dir.path().join("me.json");
    let other = dir.path().join("other.json");
    let (me, other) = (me.to_str().unwrap(), other.to_str().unwrap());
    let my_id = starfish(url, &["identity", "new", me]).1.trim().to_owned();
    starfish(url, &["identity", "new", other]);

    let notes = "users/{identity}/notes";
    let pushed = json_of(url, &["push", notes, r#"{"title":"hi"}"#, "--identity", me]);
    let pulled = json_of(url, &["pull", notes, "--identity", me]);
    assert_eq!(pulled["data"], serde_json::json!({"title": "hi"}));
    assert_eq!(pulled["hash"], pushed["hash"]);
    // Without --base-hash the current hash is read first: a second push replaces.
    json_of(
        url,
        &["push", notes, r#"{"title":"again"}"#, "--identity", me],
    );
    assert_eq!(
        json_of(url, &["pull", notes, "--identity", me])["data"]["title"],
        "again"
    );
    // A stale base is the protocol's conflict.
    let stale = pushed["hash"].as_str().unwrap();
    let err = refused(
        url,
        &["push", notes, "{}", "--base-hash", stale, "--identity", me],
    );
    assert!(err.contains("409"), "{err}");
    // No identity, or another identity, cannot read my notes.
    let mine = format!("users/{my_id}/notes");
    let err = refused(url, &["pull", &mine]);
    assert!(err.contains("403"), "{err}");
    let err = refused(url, &["pull", &mine, "--identity", other]);
    assert!(err.contains("403"), "{err}");

    // Appends carry an author proof by the device key.
    let journal = "users/{identity}/journal";
    for n in 1..=3 {
        let item = format!(r#"{{"n":{n}}}"#);
        json_of(url, &["append", journal, &item, "--identity", me]);
    }
    let err = refused(url, &["pull", journal, "--identity", me]);
    assert!(
        err.contains("pull_bound_required"),
        "a log pull names a bound: {err}"
    );
    let last = format!("{journal}?last=10");
    let log = json_of(url, &["pull", &last, "--identity", me]);
    let items = log["data"]["items"].as_array().unwrap();
    let ns: Vec<_> = items
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3], "{log}");
    assert!(items.iter().all(|e| e["authorPubkey"].is_string()), "{log}");

    // In a namespace: signed push, anonymous pull of a public document there, and
    // the same path at the root names no collection.
    let page = "wiki/{identity}/home";
    json_of(
        url,
        &[
            "push",
            page,
            r#"{"t":1}"#,
            "--namespace",
            "acme",
            "--identity",
            me,
        ],
    );
    let home = format!("wiki/{my_id}/home");
    let pulled = json_of(url, &["pull", &home, "--namespace", "acme"]);
    assert_eq!(pulled["data"]["t"], 1);
    let err = refused(url, &["pull", &home]);
    assert!(err.contains("404"), "{err}");
    let base = pulled["hash"].as_str().unwrap();
    let err = refused(
        url,
        &[
            "push",
            &home,
            "{}",
            "--base-hash",
            base,
            "--namespace",
            "acme",
            "--identity",
            other,
        ],
    );
    assert!(
        err.contains("403"),
        "another user cannot write my page: {err}"
    );
}

#[test]
fn watch_prints_each_change_of_the_documents_it_follows() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let url = format!("http://127.0.0.1:{}", server.port);
    let me = dir.path().join("me.json");
    let me = me.to_str().unwrap();
    starfish(&url, &["identity", "new", me]);
    let mut watch = Command::new(BIN)
        .args([
            "watch",
            "users/{identity}/notes",
            "board/lobby",
            "--count",
            "2",
        ])
        .args(["--identity", me])
        .env("STARFISH_URL", &url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Writes until the subscription is open and has heard them (it opens in the
    // background; a write before it opens is not a change it hears).
    let mut heard = Vec::new();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = std::thread::spawn({
        let (url, me, done) = (url.clone(), me.to_owned(), done.clone());
        move || {
            // Each write is a process of its own: a few a second, until heard.
            for n in 0..500 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let data = format!(r#"{{"n":{n}}}"#);
                starfish(&url, &["push", "board/lobby", &data]);
                starfish(
                    &url,
                    &["push", "users/{identity}/notes", &data, "--identity", &me],
                );
            }
        }
    });
    for line in lines.by_ref().take(2) {
        heard.push(serde_json::from_str::<serde_json::Value>(&line.unwrap()).unwrap());
    }
    assert!(watch.wait().unwrap().success(), "--count 2 ends the watch");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let paths: Vec<_> = heard.iter().map(|c| c["path"].as_str().unwrap()).collect();
    assert!(
        paths
            .iter()
            .all(|p| *p == "board/lobby" || (p.starts_with("users/") && p.ends_with("/notes"))),
        "{heard:?}"
    );
    assert!(
        heard
            .iter()
            .all(|c| c["hash"].as_str().is_some_and(|h| h.len() == 64))
    );
    writer.join().unwrap();
    // A path the identity may not read is refused, not retried forever.
    let (ok, _, err) = starfish(&url, &["watch", "users/someone-else/notes"]);
    assert!(!ok && err.contains("403"), "{err}");
}

/// `watch` reconnects with the last id it heard: a server restarted meanwhile
/// (another run, which cannot tell what was missed) says to pull, and `watch`
/// prints that as a line of its own.
#[test]
fn watch_resumes_with_the_last_id_and_says_when_to_pull() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let port = free_port().to_string();
    let start = || {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--port", &port, "--config"])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join("data"));
        Server::spawn(command)
    };
    let server = start();
    let url = format!("http://127.0.0.1:{port}");
    let mut watch = Reaped(
        Command::new(BIN)
            .args(["watch", "board/lobby", "--count", "2"])
            .env("STARFISH_URL", &url)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = watch.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    // Writes until the stream has heard one (it opens in the background).
    let first = (0..500).find_map(|n| {
        starfish(&url, &["push", "board/lobby", &format!(r#"{{"n":{n}}}"#)]);
        lines
            .recv_timeout(std::time::Duration::from_millis(200))
            .ok()
    });
    assert!(first.expect("a change heard").contains("board/lobby"));
    server.kill();
    let again = start();
    let pull = lines.recv_timeout(std::time::Duration::from_secs(30));
    assert_eq!(pull.expect("a line after the restart"), r#"{"pull":true}"#);
    assert!(watch.0.wait().unwrap().success());
    drop(again);
}

/// A child process killed when the test is done with it, passed or not.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's first signed request, run as written: its code block between
/// the `first-signed-request` markers, in an empty folder, with the binary on
/// `PATH` and `STARFISH_URL` pointing at a server on the sample config.
#[test]
fn the_readmes_first_signed_request_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let start = readme
        .find("<!-- first-signed-request -->")
        .expect("the README marks its first signed request");
    let block = &readme[start..];
    let code = block
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block after the marker");
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[], data.path());
    let work = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", code])
        .current_dir(work.path())
        .env("PATH", path)
        .env("STARFISH_URL", format!("http://127.0.0.1:{}", server.port))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{code}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\"hello\""),
        "the pull shows the pushed note: {stdout}"
    );
}
