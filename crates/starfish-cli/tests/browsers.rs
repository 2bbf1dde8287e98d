//! The binary's browser flags: `--cors-origin` (and its environment variables),
//! wildcard with credentials refused at startup, `--no-compression`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_starfish");
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/serve-yaml/starfish.yaml"
);

/// `starfish serve` on the sample config, memory store, a free port; stopped by PID.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "serve", "--store", "memory", "--port", "0", "--config", SAMPLE,
            ])
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
        std::thread::spawn(move || for _ in lines {});
        Self { child, port }
    }

    /// Sends one request; returns the status, the lower-cased header lines and the body.
    fn send(&self, head: &str, body: &str) -> (u16, Vec<String>, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            stream,
            "{head}\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let end = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8(response[..end].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        let headers = head.lines().skip(1).map(str::to_ascii_lowercase).collect();
        (status, headers, response[end + 4..].to_vec())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn has(headers: &[String], line: &str) -> bool {
    headers.iter().any(|h| h == line)
}

#[test]
fn cors_origin_answers_preflights_for_that_origin_only() {
    let server = Server::start(
        &["--cors-origin", "http://127.0.0.1:5173"],
        &[("STARFISH_CORS_MAX_AGE", "60")],
    );
    let preflight = |origin: &str| {
        server.send(
            &format!(
                "OPTIONS /push/guestbook/lobby HTTP/1.1\r\nOrigin: {origin}\r\n\
                 Access-Control-Request-Method: POST\r\n\
                 Access-Control-Request-Headers: authorization,x-starfish-sig,x-starfish-ts,x-starfish-nonce"
            ),
            "",
        )
    };
    let (status, headers, _) = preflight("http://127.0.0.1:5173");
    assert_eq!(status, 200);
    assert!(
        has(
            &headers,
            "access-control-allow-origin: http://127.0.0.1:5173"
        ),
        "{headers:?}"
    );
    assert!(has(&headers, "access-control-max-age: 60"), "{headers:?}");
    let allow = headers
        .iter()
        .find(|h| h.starts_with("access-control-allow-headers:"))
        .unwrap();
    for name in [
        "authorization",
        "x-starfish-sig",
        "x-starfish-ts",
        "x-starfish-nonce",
    ] {
        assert!(allow.contains(name), "{allow}");
    }
    let (_, headers, _) = preflight("http://127.0.0.1:5174");
    assert!(
        !headers
            .iter()
            .any(|h| h.starts_with("access-control-allow-origin")),
        "{headers:?}"
    );
}

#[test]
fn cors_origins_from_the_environment() {
    let server = Server::start(
        &[],
        &[("STARFISH_CORS_ORIGIN", "http://a.example,http://b.example")],
    );
    for origin in ["http://a.example", "http://b.example"] {
        let (status, headers, _) = server.send(
            &format!("GET /pull/guestbook/x HTTP/1.1\r\nOrigin: {origin}"),
            "",
        );
        assert_eq!(status, 200);
        assert!(
            has(&headers, &format!("access-control-allow-origin: {origin}")),
            "{headers:?}"
        );
        assert!(
            has(&headers, "access-control-expose-headers: etag,retry-after"),
            "{headers:?}"
        );
    }
}

#[test]
fn wildcard_with_credentials_stops_the_binary() {
    let out = Command::new(BIN)
        .args([
            "serve", "--store", "memory", "--port", "0", "--config", SAMPLE,
        ])
        .args(["--cors-origin", "*", "--cors-credentials"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr
            .contains("CORS misconfiguration: credentials cannot be used with wildcard origin '*'"),
        "{stderr}"
    );
}

#[test]
fn json_is_gzipped_unless_no_compression() {
    let doc = format!(
        r#"{{"data":{{"msg":"{}"}},"baseHash":null}}"#,
        "hello ".repeat(200)
    );
    for (flags, gzipped) in [(&[][..], true), (&["--no-compression"][..], false)] {
        let server = Server::start(flags, &[]);
        let (status, _, body) = server.send(
            "POST /push/guestbook/big HTTP/1.1\r\nContent-Type: application/json",
            &doc,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let (status, headers, _) = server.send(
            "GET /pull/guestbook/big HTTP/1.1\r\nAccept-Encoding: gzip",
            "",
        );
        assert_eq!(status, 200);
        assert_eq!(
            has(&headers, "content-encoding: gzip"),
            gzipped,
            "{flags:?} {headers:?}"
        );
    }
}
