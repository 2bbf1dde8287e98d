//! `starfish serve --metrics-addr`: Prometheus metrics on a listener of their own;
//! a request id on every response (the client's, or a fresh one); JSON logs.

use crate::common;

use common::Server;
use std::io::{Read, Write};
use std::net::TcpStream;

const CONFIG: &str = r#"
version: 1
collections:
  - {name: docs, storagePath: "docs/{id}", readRoles: [public], writeRoles: [public]}
"#;

fn get(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn metrics_are_served_apart_and_every_response_names_its_request() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("starfish.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let metrics_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{metrics_port}");
    let server = Server::start_with(
        &config,
        &dir.path().join("data"),
        &["--metrics-addr", &addr, "--log-format", "json"],
    );
    let (status, _) = server.request("POST", "/push/docs/a", Some(r#"{"data":{"v":1}}"#));
    assert_eq!(status, 200);
    let (status, _) = server.request("GET", "/pull/docs/a", None);
    assert_eq!(status, 200);

    let text = get(metrics_port, "/metrics");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for series in [
        r#"starfish_requests_total{namespace="",collection="docs",action="push",status="200"} 1"#,
        r#"starfish_requests_total{namespace="",collection="docs",action="pull",status="200"} 1"#,
        r#"starfish_store_request_seconds_count{op="put",outcome="ok"}"#,
    ] {
        assert!(text.contains(series), "{series} in {text}");
    }
    // The public port does not serve them.
    let (status, _) = server.request("GET", "/metrics", None);
    assert_eq!(status, 404);

    // A request id: the client's, echoed; or a fresh one.
    let (_, headers, _) = server.send("GET /pull/docs/a HTTP/1.1\r\nX-Request-Id: trace-me-42", "");
    assert!(
        headers.iter().any(|h| h == "x-request-id: trace-me-42"),
        "{headers:?}"
    );
    let (_, headers, _) = server.send("GET /pull/docs/a HTTP/1.1", "");
    let id = headers
        .iter()
        .find_map(|h| h.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("{headers:?}"));
    assert!(
        id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
    // Ready: the store answers.
    let (status, body) = server.request("GET", "/health/ready", None);
    assert_eq!(status, 200, "{body}");
}
