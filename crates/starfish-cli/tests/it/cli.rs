//! The `starfish` binary as a user runs it: a real process on a free loopback port,
//! stopped by PID with SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;

use crate::common;
use common::*;

#[test]
fn serves_the_sample_config_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[], data.path());
    let (status, body) = server.request(
        "POST",
        "/push/guestbook/lobby",
        Some(r#"{"data":{"msg":"hi"},"baseHash":null}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.request("GET", "/pull/guestbook/lobby", None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""data":{"msg":"hi"}"#), "{body}");
    assert_eq!(server.request("GET", "/health", None).0, 200);
    assert!(server.terminate().success());
    // Stored in the reference's layout under --data (the journal is written to the
    // files within a second, and on the way out).
    let stored = std::fs::read_to_string(data.path().join("guestbook/lobby")).unwrap();
    assert!(
        stored.starts_with(r#"{"v":1,"data":{"msg":"hi"},"ts":"#),
        "{stored}"
    );
    let left: Vec<_> = std::fs::read_dir(data.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != ".starfish-journal#0" && n != "guestbook")
        .collect();
    assert!(left.is_empty(), "journal segments left behind: {left:?}");
}

/// The handlers of SIGINT and SIGTERM are installed before the server says it
/// listens, so a stop signal sent the moment it is up is a graceful stop (exit 0),
/// never the signal's default death. (They used to be installed on the accept loop's
/// first look at its shutdown future, which a busy machine could delay past a
/// request or two: CI once saw a SIGTERM kill the server.)
#[cfg(target_os = "linux")]
#[test]
fn stop_signals_are_handled_from_the_moment_the_server_listens() {
    let server = Server::memory(&[], &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let caught = status
        .lines()
        .find_map(|line| line.strip_prefix("SigCgt:"))
        .map(|mask| u64::from_str_radix(mask.trim(), 16).unwrap())
        .expect("SigCgt in /proc/<pid>/status");
    for (signal, name) in [(2, "SIGINT"), (15, "SIGTERM")] {
        assert_ne!(
            caught & (1 << (signal - 1)),
            0,
            "{name} not handled: {status}"
        );
    }
    assert!(server.terminate().success());
}

/// A crash (SIGKILL) right after acknowledged pushes loses none of them: the next
/// start replays the journal into the files.
#[test]
fn a_killed_server_loses_no_acknowledged_push() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(&[], data.path());
    let mut hash = "null".to_owned();
    for i in 0..20 {
        let body = format!(r#"{{"data":{{"n":{i}}},"baseHash":{hash}}}"#);
        let (status, body) = server.request("POST", "/push/guestbook/lobby", Some(&body));
        assert_eq!(status, 200, "{body}");
        let hash_at = body.find(r#""hash":""#).unwrap() + 8;
        hash = format!("\"{}\"", &body[hash_at..hash_at + 64]);
    }
    server.kill();
    let server = Server::start(&[], data.path());
    let (status, body) = server.request("GET", "/pull/guestbook/lobby", None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""data":{"n":19}"#), "{body}");
    let stored = std::fs::read_to_string(data.path().join("guestbook/lobby")).unwrap();
    assert!(
        stored.contains(r#""data":{"n":19}"#),
        "replayed at start: {stored}"
    );
    assert!(server.terminate().success());
}

#[test]
fn base_path_mounts_the_routes_under_a_prefix() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(
        &[
            "--store",
            "memory",
            "--base-path",
            "/v1",
            "--config-endpoint",
            "public",
        ],
        data.path(),
    );
    assert_eq!(server.request("GET", "/v1/pull/guestbook/x", None).0, 200);
    let (status, body) = server.request("GET", "/v1/config", None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""name":"guestbook""#), "{body}");
    assert_eq!(server.request("GET", "/pull/guestbook/x", None).0, 404);
    assert!(server.terminate().success());
}

#[test]
fn a_bad_config_is_one_line_on_stderr_and_a_failing_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "version: 1\nnamespaces:\n  health:\n    collections:\n      - {name: a, storagePath: a, readRoles: [public]}\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["serve", "--config", path.to_str().unwrap(), "--port", "0"],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(
                "Namespace \"health\": name is reserved and cannot be used as a namespace"
            ),
            "{stderr}"
        );
    }
    let out = Command::new(BIN)
        .args(["check-config", SAMPLE])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("ok (3 root collections")
    );
}

/// `check-config` builds the webhooks as `serve` would: a bad target or transform,
/// a secret written in the file, is an error; a secret this machine cannot read
/// (set only where the server runs) is a warning.
#[test]
fn check_config_checks_the_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, hook: &str| {
        let path = dir.path().join(name);
        let text = format!(
            "version: 1\ncollections:\n  - {{name: inbox, storagePath: \"inbox/{{id}}\", readRoles: [public], writeRoles: [public]}}\nserver:\n  webhooks:\n    ci: {hook}\n"
        );
        std::fs::write(&path, text).unwrap();
        Command::new(BIN)
            .arg("check-config")
            .arg(&path)
            .env_remove("CI_HOOK_SECRET")
            .output()
            .unwrap()
    };
    std::fs::write(dir.path().join("empty.secret"), "\n").unwrap();
    let transform = r#"transform: {data: {status: "/status"}, params: {id: "/id"}}"#;
    let out = write(
        "ok.yaml",
        &format!("{{target: \"/push/inbox/{{id}}\", secretEnv: CI_HOOK_SECRET, {transform}}}"),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("1 webhooks"), "{stdout}");
    assert!(
        stdout.contains("warning: server.webhooks.ci: secretEnv: CI_HOOK_SECRET is not set"),
        "{stdout}"
    );
    for (name, hook, error) in [
        (
            "target.yaml",
            format!("{{target: \"/pull/inbox/{{id}}\", secretEnv: X, {transform}}}"),
            "server.webhooks.ci",
        ),
        (
            "inline.yaml",
            format!("{{target: \"/push/inbox/{{id}}\", secret: s3cret, {transform}}}"),
            "never in the config file",
        ),
        (
            "transform.yaml",
            r#"{target: "/push/inbox/{id}", secretEnv: X, transform: 7}"#.to_owned(),
            "server.webhooks.ci",
        ),
        (
            "empty.yaml",
            format!("{{target: \"/push/inbox/{{id}}\", secretFile: empty.secret, {transform}}}"),
            "the secret is empty",
        ),
    ] {
        let out = write(name, &hook);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            !out.status.success() && stderr.contains(error),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn check_config_warns_of_a_role_one_edit_away_from_public_or_self() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(
        &path,
        "version: 1\ncollections:\n  - {name: wiki, storagePath: \"wiki/{page}\", readRoles: [publik], writeRoles: [editor]}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "a warning, not an error");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(
            r#"readRoles contains "publik", one edit away from the built-in role "public""#
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("editor"), "{stdout}");
}

#[test]
fn openapi_json_is_served_when_turned_on_by_flag_or_config() {
    let data = tempfile::tempdir().unwrap();
    let off = Server::start(&["--store", "memory"], data.path());
    assert_eq!(off.request("GET", "/openapi.json", None).0, 404);
    assert!(off.terminate().success());
    let on = Server::start(&["--store", "memory", "--openapi-endpoint"], data.path());
    let (status, body) = on.request("GET", "/openapi.json", None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""openapi":"3.1"#), "{body}");
    assert!(on.terminate().success());
    let config = data.path().join("openapi.yaml");
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    std::fs::write(
        &config,
        format!("{sample}\nserver:\n  openapiEndpoint: true\n"),
    )
    .unwrap();
    let from_config = Server::start_with(&config, data.path(), &["--store", "memory"]);
    assert_eq!(from_config.request("GET", "/openapi.json", None).0, 200);
}

#[test]
fn no_anonymous_refuses_callers_without_a_cap() {
    let data = tempfile::tempdir().unwrap();
    let open = Server::start(&["--store", "memory"], data.path());
    assert_eq!(open.request("GET", "/pull/guestbook/x", None).0, 200);
    assert!(open.terminate().success());
    let closed = Server::start(&["--store", "memory", "--no-anonymous"], data.path());
    let (status, body) = closed.request("GET", "/pull/notes-do-not-exist/x", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = closed.request("GET", "/pull/users/abc/notes", None);
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"Unauthorized"}"#)
    );
    assert!(closed.terminate().success());
}

/// Peak resident memory of a process, from /proc (Linux).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_50_mb_blob_round_trips_while_the_server_stays_far_below_50_mb() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("blobs.yaml");
    std::fs::write(
        &config,
        "version: 1\ncollections:\n  - {name: files, storagePath: \"files/{id}\", readRoles: [public], writeRoles: [public], allowedMimeTypes: [\"application/octet-stream\"], maxBodyBytes: 60000000}\n",
    )
    .unwrap();
    let server = Server::start_with(&config, &dir.path().join("data"), &[]);
    let port = server.port;
    let baseline = peak_rss_kib(server.child.id());

    // Upload 50 MB of non-repeating bytes, 64 KiB at a time.
    const SIZE: usize = 50 * 1024 * 1024;
    let mut sent = Sha256::new();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "POST /push/files/big HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\n\r\n"
    )
    .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 64 * 1024];
    for _ in 0..SIZE / chunk.len() {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        sent.update(&chunk);
        stream.write_all(&chunk).unwrap();
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let sent = hex::encode(sent.finalize());
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains(&sent),
        "the push answers the SHA-256 of the bytes: {response}"
    );

    // Download with HTTP/1.0 (no chunked encoding): read until the server closes.
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET /pull/files/big HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("etag: \"{sent}\"")),
        "{head}"
    );
    let mut got = Sha256::new();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        got.update(&buf[..n]);
    }
    assert_eq!(total, SIZE);
    assert_eq!(hex::encode(got.finalize()), sent, "byte-identical");

    let peak = peak_rss_kib(server.child.id());
    eprintln!(
        "starfish peak RSS: baseline {} KiB, after 50 MB up and down {} KiB",
        baseline, peak
    );
    // What the transfer adds, not the binary's own footprint (which grows with the
    // stores built in: the default build links the S3 client). Measured on 2 cores
    // with the whole suite running (2026-12-07, 13 runs): 11.3 to 14.2 MiB (the
    // allocator's arenas of the file threads, hyper's buffers), and once past 16
    // MiB; a transfer held in memory would add 50 MB. Half of it is the bound.
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown < 25 * 1024,
        "the 50 MB transfer grew the server by {grown} KiB: not far below 50 MB"
    );
    // No bound on the peak itself: the debug binary alone is resident for 29.5 MiB
    // here (it was 26.5 when a 44 MiB bound was set, and grows with the code linked
    // in), so such a bound measured the binary, not the transfer; the growth above is
    // the transfer's.
    assert!(server.terminate().success());
}

/// `starfish` with no `STARFISH_*` or `AWS_*` variable inherited from the test's own
/// environment, so each test sets exactly the ones it means.
fn starfish() -> Command {
    let mut command = Command::new(BIN);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("STARFISH_") || key.starts_with("AWS_") {
            command.env_remove(key);
        }
    }
    command
}

/// `starfish serve --print-config=json` with `env` and `flags`: the `server` object.
fn print_config(
    config: &std::path::Path,
    env: &[(&str, &str)],
    flags: &[&str],
) -> serde_json::Value {
    let out = starfish()
        .args(["serve", "--print-config=json", "--config"])
        .arg(config)
        .args(flags)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    value["server"].clone()
}

#[test]
fn environment_variables_set_the_port_and_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mut command = starfish();
    command
        .arg("serve")
        .env("STARFISH_CONFIG", SAMPLE)
        .env("STARFISH_PORT", port.to_string())
        .env("STARFISH_STORE", "memory")
        .env("STARFISH_DATA", &data);
    let server = Server::spawn(command);
    assert_eq!(server.port, port, "STARFISH_PORT is the port listened on");
    let (status, body) = server.request(
        "POST",
        "/push/guestbook/env",
        Some(r#"{"data":{"msg":"from env"},"baseHash":null}"#),
    );
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.request("GET", "/pull/guestbook/env", None);
    assert_eq!(status, 200);
    assert!(body.contains(r#""msg":"from env""#), "{body}");
    assert!(
        !data.exists(),
        "STARFISH_STORE=memory: nothing under STARFISH_DATA"
    );
    assert!(server.terminate().success());
}

#[test]
fn a_flag_beats_the_environment_which_beats_the_config_section() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    std::fs::write(
        &config,
        format!(
            "{sample}\nserver:\n  port: 1111\n  store: memory\n  data: ./section-data\n  basePath: /v1\n  auth:\n    noAnonymous: true\n    maxSkewMs: 1000\n  cors:\n    origin: https://app.example\n    maxAge: 60\n  noCompression: true\n"
        ),
    )
    .unwrap();
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, &sample).unwrap();

    // Defaults, with no section.
    let s = print_config(&plain, &[], &[]);
    assert_eq!(
        (s["port"].as_u64(), s["store"].as_str(), s["host"].as_str()),
        (Some(8080), Some("fs"), Some("127.0.0.1"))
    );
    assert_eq!(s["basePath"], serde_json::json!(["/"]));
    assert_eq!(s["auth"]["noAnonymous"], false);

    // The section beats the defaults (its paths are beside the file).
    let s = print_config(&config, &[], &[]);
    assert_eq!(s["port"], 1111);
    assert_eq!(s["store"], "memory");
    assert_eq!(s["basePath"], serde_json::json!(["/v1"]));
    assert_eq!(s["auth"]["noAnonymous"], true);
    assert_eq!(s["auth"]["maxSkewMs"], 1000);
    assert_eq!(
        s["cors"]["origin"],
        serde_json::json!(["https://app.example"])
    );
    assert_eq!(s["cors"]["maxAge"], 60);
    assert_eq!(s["noCompression"], true);
    let s = print_config(&config, &[("STARFISH_STORE", "fs")], &[]);
    assert_eq!(
        s["data"].as_str().map(std::path::PathBuf::from),
        Some(dir.path().join("section-data"))
    );

    // The environment beats the section, false included.
    let env = [
        ("STARFISH_PORT", "2222"),
        ("STARFISH_NO_ANONYMOUS", "false"),
        ("STARFISH_BASE_PATH", "/a,/b"),
        (
            "STARFISH_CORS_ORIGIN",
            "https://b.example,https://c.example",
        ),
    ];
    let s = print_config(&config, &env, &[]);
    assert_eq!(s["port"], 2222);
    assert_eq!(s["auth"]["noAnonymous"], false);
    assert_eq!(s["basePath"], serde_json::json!(["/a", "/b"]));
    assert_eq!(s["auth"]["maxSkewMs"], 1000, "untouched keys stay");
    assert_eq!(
        s["cors"]["origin"],
        serde_json::json!(["https://b.example", "https://c.example"])
    );

    // A flag beats the environment.
    let s = print_config(
        &config,
        &env,
        &[
            "--port",
            "3333",
            "--no-anonymous",
            "--base-path",
            "/c",
            "--no-compression=false",
        ],
    );
    assert_eq!(s["noCompression"], false);
    assert_eq!(s["port"], 3333);
    assert_eq!(s["auth"]["noAnonymous"], true);
    assert_eq!(s["basePath"], serde_json::json!(["/c"]));

    // And the server does as the section says: memory store, under /v1, no anonymous.
    let mut command = starfish();
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("STARFISH_PORT", "0");
    let server = Server::spawn(command);
    let (status, body) = server.request("GET", "/v1/pull/users/abc/notes", None);
    assert_eq!(
        (status, body.as_str()),
        (401, r#"{"error":"Unauthorized"}"#)
    );
    assert_eq!(server.request("GET", "/pull/guestbook/x", None).0, 404);
    assert!(server.terminate().success());
    assert!(!dir.path().join("section-data").exists());

    // A typo in the section is an error, not a silent default.
    std::fs::write(&config, format!("{sample}\nserver:\n  prot: 1111\n")).unwrap();
    for args in [
        vec!["check-config", config.to_str().unwrap()],
        vec![
            "serve",
            "--print-config",
            "--config",
            config.to_str().unwrap(),
        ],
    ] {
        let out = starfish().args(&args).output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("server.prot: unknown field"), "{stderr}");
    }
}

#[test]
fn connection_limits_and_fsync_come_from_flags_environment_and_section() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    std::fs::write(
        &config,
        format!(
            "{sample}\nserver:\n  fsync: true\n  limits:\n    headerReadTimeout: 5\n    idleTimeout: 1.5\n    maxConnections: 100\n    requestTimeout: 20\n    maxInFlight: 64\n"
        ),
    )
    .unwrap();
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, &sample).unwrap();

    // The connection limits of `limits` (its subscription bounds are checked below).
    let connection_limits = |s: &serde_json::Value| {
        let keys = [
            "headerReadTimeout",
            "idleTimeout",
            "maxConnections",
            "requestTimeout",
            "maxInFlight",
        ];
        serde_json::Value::Object(
            keys.iter()
                .map(|k| ((*k).to_owned(), s["limits"][k].clone()))
                .collect(),
        )
    };
    let s = print_config(&plain, &[], &[]);
    assert_eq!(
        connection_limits(&s),
        serde_json::json!({"headerReadTimeout": 10, "idleTimeout": 60, "maxConnections": 10000,
                           "requestTimeout": 30, "maxInFlight": 1024}),
        "the defaults"
    );
    assert_eq!(s["limits"]["maxSubscriptionsPerCaller"], 8);
    assert_eq!(s["limits"]["maxSubscriptionsPerIp"], 256);
    assert_eq!(s["fsync"], false);
    let s = print_config(&config, &[], &[]);
    assert_eq!(
        connection_limits(&s),
        serde_json::json!({"headerReadTimeout": 5, "idleTimeout": 1.5, "maxConnections": 100,
                           "requestTimeout": 20, "maxInFlight": 64})
    );
    // Subscriptions stay under the connection limit.
    assert_eq!(s["limits"]["maxSubscriptions"], 90);
    assert_eq!(s["fsync"], true);
    let env = [
        ("STARFISH_IDLE_TIMEOUT", "7"),
        ("STARFISH_MAX_CONNECTIONS", "50"),
        ("STARFISH_FSYNC", "false"),
    ];
    let s = print_config(
        &config,
        &env,
        &["--max-connections", "3", "--max-in-flight", "2"],
    );
    assert_eq!(s["limits"]["headerReadTimeout"], 5);
    assert_eq!(s["limits"]["idleTimeout"], 7);
    assert_eq!(s["limits"]["maxConnections"], 3);
    assert_eq!(s["limits"]["maxInFlight"], 2);
    assert_eq!(s["fsync"], false);
    let s = print_config(
        &config,
        &[("STARFISH_STORE", "memory"), ("STARFISH_FSYNC", "0")],
        &[],
    );
    assert!(s.get("fsync").is_none(), "fsync is the fs store's: {s}");

    // Nonsense is refused in one line, wherever it comes from.
    for (env, flags, message) in [
        (
            vec![],
            vec!["--idle-timeout", "0"],
            "not a number of seconds between",
        ),
        (vec![], vec!["--max-connections", "0"], "--max-connections"),
        (
            vec![("STARFISH_HEADER_READ_TIMEOUT", "soon")],
            vec![],
            "not a number of seconds",
        ),
        (
            vec![],
            vec!["--store", "memory"],
            "--fsync applies to the filesystem store only",
        ),
    ] {
        let out = starfish()
            .args(["serve", "--print-config", "--config"])
            .arg(&config)
            .args(flags)
            .envs(env)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(message), "{stderr}");
    }
    std::fs::write(
        &config,
        format!("{sample}\nserver:\n  limits:\n    idleTimeout: -1\n"),
    )
    .unwrap();
    let out = starfish()
        .args(["serve", "--print-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("server.limits.idleTimeout:"), "{stderr}");
}

#[test]
fn print_config_masks_secrets() {
    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    const TOKEN: &str = "FwoGZXIvYXdzEXAMPLE-session-token";
    const PASSWORD: &str = "hunter2-in-the-url";
    let env = [
        ("STARFISH_STORE", "s3"),
        ("STARFISH_S3_BUCKET", "my-documents"),
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_SESSION_TOKEN", TOKEN),
        ("AWS_DEFAULT_REGION", "eu-west-3"),
    ];
    let endpoint = format!("http://minio:{PASSWORD}@127.0.0.1:9000");
    for format in ["--print-config", "--print-config=json"] {
        let out = starfish()
            .args([
                "serve",
                format,
                "--config",
                SAMPLE,
                "--s3-endpoint",
                &endpoint,
            ])
            .envs(env)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        for secret in [SECRET, TOKEN, PASSWORD, "AKIAIOSFODNN7EXAMPLE"] {
            assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        }
        assert!(stdout.contains("my-documents"), "{stdout}");
        assert!(stdout.contains("********"), "{stdout}");
        assert!(stdout.contains("127.0.0.1:9000"), "{stdout}");
    }
    // The YAML form: the file, then a `server:` section.
    let out = starfish()
        .args(["serve", "--print-config", "--config", SAMPLE])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("configFile: "), "{stdout}");
    assert!(
        stdout.contains("\nserver:\n  host: 127.0.0.1\n  port: 8080\n"),
        "{stdout}"
    );
}

#[test]
fn init_writes_a_config_that_check_config_accepts_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("starfish.yaml");
    let out = starfish().arg("init").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!("starfish serve --config {}", path.display())),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("server:"), "{written}");

    let out = starfish().arg("check-config").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("ok (2 root collections")
    );

    // A second init refuses, and leaves the file alone.
    std::fs::write(&path, "# mine\n").unwrap();
    let out = starfish().arg("init").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("already exists"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");

    // The starter serves as written: the fs store beside the file.
    let fresh = dir.path().join("fresh.yaml");
    assert!(
        starfish()
            .arg("init")
            .arg(&fresh)
            .output()
            .unwrap()
            .status
            .success()
    );
    let mut command = starfish();
    command
        .args(["serve", "--port", "0", "--config"])
        .arg(&fresh);
    let server = Server::spawn(command);
    let (status, body) = server.request(
        "POST",
        "/push/guestbook/lobby",
        Some(r#"{"data":{"msg":"hello"},"baseHash":null}"#),
    );
    assert_eq!(status, 200, "{body}");
    assert!(server.terminate().success());
    assert!(dir.path().join("data/guestbook/lobby").is_file());
}

/// `starfish serve --store s3` from the default build, configured only through
/// `STARFISH_*` and `AWS_*` variables: run by tests/s3/run.sh, which starts an
/// S3-compatible server and exports `STARFISH_TEST_S3=1` and the `AWS_*` variables.
#[test]
fn s3_store_configured_only_by_environment_variables() {
    if std::env::var_os("STARFISH_TEST_S3").is_none() {
        // Straight to stderr, past the test harness's capture, so a plain run says so.
        let _ = writeln!(
            std::io::stderr(),
            "note: skipping s3_store_configured_only_by_environment_variables: STARFISH_TEST_S3 is not set (tests/s3/run.sh sets it)"
        );
        return;
    }
    let outer = |key: &str| std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set"));
    // tests/s3/run.sh starts an empty S3 server each run; the pid keeps runs apart
    // should one be reused.
    let room = format!("cli-{}", std::process::id());
    // Credentials and region from AWS_*; store, bucket and endpoint from STARFISH_*.
    // No AWS_ALLOW_HTTP: the http:// endpoint implies it. No flags at all.
    let node = || {
        let mut command = starfish();
        command
            .arg("serve")
            .env("STARFISH_CONFIG", SAMPLE)
            .env("STARFISH_PORT", "0")
            .env("STARFISH_STORE", "s3")
            .env("STARFISH_S3_BUCKET", outer("AWS_BUCKET_NAME"))
            .env("STARFISH_S3_ENDPOINT", outer("AWS_ENDPOINT"))
            .env("AWS_ACCESS_KEY_ID", outer("AWS_ACCESS_KEY_ID"))
            .env("AWS_SECRET_ACCESS_KEY", outer("AWS_SECRET_ACCESS_KEY"))
            .env("AWS_DEFAULT_REGION", outer("AWS_DEFAULT_REGION"));
        Server::spawn(command)
    };
    let path = format!("/guestbook/{room}");
    let first = node();
    let (status, body) = first.request(
        "POST",
        &format!("/push{path}"),
        Some(r#"{"data":{"msg":"stored in S3"},"baseHash":null}"#),
    );
    assert_eq!(status, 200, "{body}");
    // A second create of the same document loses the conditional put.
    let (status, body) = first.request(
        "POST",
        &format!("/push{path}"),
        Some(r#"{"data":{"msg":"again"},"baseHash":null}"#),
    );
    assert_eq!(status, 409, "{body}");
    assert!(first.terminate().success());

    // Another process reads it back from the bucket.
    let second = node();
    let (status, body) = second.request("GET", &format!("/pull{path}"), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""msg":"stored in S3""#), "{body}");
    assert!(second.terminate().success());
    let _ = writeln!(
        std::io::stderr(),
        "note: s3: pushed {path} through one starfish process, pulled it from another"
    );
}

#[test]
fn serve_refuses_to_start_when_its_redis_does_not_answer() {
    // A port nothing listens on: better not to start than to serve without the
    // shared replay cache the operator asked for.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(BIN)
        .args(["serve", "--config", SAMPLE, "--port", "0", "--store", "s3"])
        .args(["--s3-bucket", "b", "--s3-endpoint", "http://127.0.0.1:9"])
        .args(["--redis", &format!("redis://127.0.0.1:{port}/0")])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("cannot reach Redis (--redis)"), "{stderr}");
}

#[test]
fn several_node_mode_refuses_a_store_that_cannot_be_shared() {
    for (store, why) in [
        (
            "fs",
            "a directory has no conditional writes between processes",
        ),
        ("memory", "each process has a memory store of its own"),
    ] {
        for flag in [
            ["--redis", "redis://127.0.0.1:9/0"],
            ["--nats", "nats://127.0.0.1:9"],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let out = Command::new(BIN)
                .args(["serve", "--config", SAMPLE, "--port", "0", "--data"])
                .arg(dir.path())
                .args(["--store", store])
                .args(flag)
                .output()
                .unwrap();
            assert!(!out.status.success());
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert!(
                stderr.contains("are for several nodes over one store") && stderr.contains(why),
                "{stderr}"
            );
        }
    }
}
