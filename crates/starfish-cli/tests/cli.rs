//! The `starfish` binary as a user runs it: a real process on a free loopback port,
//! stopped by PID with SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_starfish");
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/serve-yaml/starfish.yaml"
);

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Serves the sample config with the data directory `data` and `extra` flags.
    fn start(extra: &[&str], data: &std::path::Path) -> Self {
        Self::start_with(std::path::Path::new(SAMPLE), data, extra)
    }

    /// Serves `config` on a free port, and reads the port from the log.
    fn start_with(config: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--port", "0", "--config"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("server exited before listening")
                .unwrap();
            if let Some(rest) = line.split("listening on http://127.0.0.1:").nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                break digits.parse().unwrap();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let body = body.unwrap_or("");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (status, body)
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        self.child.wait().unwrap()
    }
}

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
    // Stored in the reference's layout under --data.
    let stored = std::fs::read_to_string(data.path().join("guestbook/lobby")).unwrap();
    assert!(
        stored.starts_with(r#"{"v":1,"data":{"msg":"hi"},"ts":"#),
        "{stored}"
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
    assert!(
        peak < 32 * 1024,
        "peak RSS {peak} KiB is not far below 50 MB"
    );
    assert!(server.terminate().success());
}
