//! The binary's browser flags: `--cors-origin` (and its environment variables),
//! wildcard with credentials refused at startup, `--no-compression`.

use std::process::Command;

use crate::common;
use common::*;

fn has(headers: &[String], line: &str) -> bool {
    headers.iter().any(|h| h == line)
}

#[test]
fn cors_origin_answers_preflights_for_that_origin_only() {
    let server = Server::memory(
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
    let server = Server::memory(
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
        let server = Server::memory(flags, &[]);
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
