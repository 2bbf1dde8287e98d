//! Answers sent before a request's body was read reach the client: the server reads
//! and discards what the client still sends (a lingering close, bounded in bytes and
//! time) instead of closing under it, which would reset the connection and lose the
//! answer. Against the real `starfish serve`, with a raw TCP client that keeps
//! sending its body after the server has answered, as browsers and most HTTP
//! clients do (they read the answer once the body is sent).

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common;
use common::*;

/// How many pushes the oversize test sends: every one must get its answer.
const TRIES: usize = 200;
/// How many pushes the tests of other early answers send.
const FEWER_TRIES: usize = 40;
/// The collection's `maxBodyBytes`.
const MAX_BODY: usize = 4096;
/// The size of a body chunk, and the body's size (about 6 KB).
const CHUNK: usize = 256;
const BODY: usize = 6 * 1024;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("small.yaml");
    std::fs::write(
        &config,
        format!(
            "version: 1\ncollections:\n  - {{name: small, storagePath: \"small/{{id}}\", readRoles: [public], writeRoles: [public], maxBodyBytes: {MAX_BODY}}}\n  - {{name: private, storagePath: \"private/{{id}}\", readRoles: [public], writeRoles: [\"cap:write:private\"]}}\n"
        ),
    )
    .unwrap();
    config
}

/// A push body of `BODY` bytes.
fn body() -> Vec<u8> {
    let head = br#"{"data":{"pad":""#;
    let tail = br#""},"baseHash":null}"#;
    let mut body = head.to_vec();
    body.resize(BODY - tail.len(), b'x');
    body.extend_from_slice(tail);
    body
}

/// Sends a chunked push of [`BODY`] bytes, a chunk at a time: until the server has
/// answered, each chunk waits (at most 2 ms) for an answer; after it, the rest of the
/// body goes on a millisecond apart, then the last chunk. Then reads everything the
/// server sent. `Err` when a write or the read failed.
async fn chunked_push(port: u16, head: &str) -> Result<Vec<u8>, std::io::Error> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(head.as_bytes()).await?;
    let body = body();
    let mut answered = false;
    for chunk in body.chunks(CHUNK) {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await?;
        stream.write_all(chunk).await?;
        stream.write_all(b"\r\n").await?;
        if answered {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            answered = tokio::time::timeout(Duration::from_millis(2), stream.readable())
                .await
                .is_ok();
        }
    }
    stream.write_all(b"0\r\n\r\n").await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    Ok(response)
}

/// Sends `tries` chunked pushes with `head`: how many got a response starting with
/// `status_line`, and what the others got.
fn tries(port: u16, tries: usize, head: &str, status_line: &str) -> (usize, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut answered = 0;
        let mut others = Vec::new();
        for _ in 0..tries {
            match chunked_push(port, head).await {
                Ok(response) if response.starts_with(status_line.as_bytes()) => answered += 1,
                Ok(response) => others.push(String::from_utf8_lossy(&response).into_owned()),
                Err(e) => others.push(e.to_string()),
            }
        }
        (answered, others)
    })
}

fn head(path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n{extra}\r\n")
}

#[test]
fn an_oversize_chunked_push_gets_its_413_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&config(dir.path()), &dir.path().join("data"), &[]);
    let (answered, others) = tries(
        server.port,
        TRIES,
        &head("/push/small/doc", "Content-Type: application/json\r\n"),
        "HTTP/1.1 413",
    );
    assert_eq!(
        answered,
        TRIES,
        "every oversize push gets its 413; the others got: {:?}",
        &others[..others.len().min(5)]
    );
    // The connection limit still serves others: lingering connections are done.
    assert_eq!(server.request("GET", "/pull/small/doc", None).0, 200);
    assert!(server.terminate().success());
}

/// The answers decided from the head alone (a junk certificate: 401; no credentials
/// where a capability is needed: 403; a media type the collection does not take:
/// 415) reach the client as well.
#[test]
fn answers_decided_from_the_head_reach_a_client_still_sending() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(&config(dir.path()), &dir.path().join("data"), &[]);
    for (head, status_line) in [
        (
            head(
                "/push/private/doc",
                "Content-Type: application/json\r\nAuthorization: Cap junk\r\n",
            ),
            "HTTP/1.1 401",
        ),
        (
            head("/push/private/doc", "Content-Type: application/json\r\n"),
            "HTTP/1.1 403",
        ),
        (
            head("/push/small/doc", "Content-Type: text/plain\r\n"),
            "HTTP/1.1 415",
        ),
    ] {
        let (answered, others) = tries(server.port, FEWER_TRIES, &head, status_line);
        assert_eq!(
            answered,
            FEWER_TRIES,
            "every push gets its {status_line}; the others got: {:?}",
            &others[..others.len().min(5)]
        );
    }
    assert!(server.terminate().success());
}

/// Sends the head and the first `MAX_BODY + CHUNK` bytes of an oversize chunked push,
/// then reads the answer's status line.
fn answered_push(server: &Server) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut sent = head("/push/small/doc", "Content-Type: application/json\r\n").into_bytes();
    for chunk in body()[..MAX_BODY + CHUNK].chunks(CHUNK) {
        sent.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        sent.extend_from_slice(chunk);
        sent.extend_from_slice(b"\r\n");
    }
    stream.write_all(&sent).unwrap();
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).unwrap();
    assert_eq!(&status, b"HTTP/1.1 413");
    stream
}

/// A client that stops sending, but keeps its connection open, after an early answer
/// is closed once the lingering time is over, long before the idle and header
/// timeouts (60 s; the read below gives up after 15 s).
#[test]
fn lingering_ends_when_its_time_is_over() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &config(dir.path()),
        &dir.path().join("data"),
        &["--idle-timeout", "60", "--header-read-timeout", "60"],
    );
    let mut stream = answered_push(&server);
    let mut rest = Vec::new();
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "still open: {e}"
        ),
    }
    assert!(server.terminate().success());
}

/// A client that goes on sending after an early answer is cut off once the lingering
/// close has discarded its bound (1 MiB): its writes fail long before 64 MiB.
#[test]
fn lingering_ends_when_its_bytes_are_spent() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &config(dir.path()),
        &dir.path().join("data"),
        &["--idle-timeout", "60", "--header-read-timeout", "60"],
    );
    let mut stream = answered_push(&server);
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
    let cut_off = (0..1024).any(|_| stream.write_all(chunk.as_bytes()).is_err());
    assert!(cut_off, "the connection is cut off");
    assert!(server.terminate().success());
}
