//! Slow and many clients against the real `starfish serve`: half-sent headers and
//! idle kept-alive connections are cut off, a stalled body gets 408, past the
//! connection limit a new connection waits, and meanwhile other clients are answered.
//! Also: rate limits still see each peer's address through the accept loop.
//! Timeouts are configured to 1 s; the waits below only bound how long a test may
//! hang when the server misbehaves, they assert no speed.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common;
use common::*;

/// Longest a test waits for something the server is due to do within a second or two.
const PATIENCE: Duration = Duration::from_secs(15);

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
}

/// Sends a kept-alive `GET path` on `stream`.
fn send_get(stream: &mut TcpStream, path: &str) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
}

/// Reads one response (status line, headers, a `Content-Length` body): its status.
fn read_response(stream: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).expect("a response");
        assert_eq!(n, 1, "connection closed mid-response: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// One request on a kept-alive connection: its status.
fn get_on(stream: &mut TcpStream, path: &str) -> u16 {
    send_get(stream, path);
    read_response(stream)
}

/// True when the server closes `stream` (end of file or reset) without a byte of
/// response; false when it is still open after [`PATIENCE`].
fn closed_without_answer(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!(
            "expected no answer, got {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

/// Sends a request head a byte at a time, one every 200 ms (waiting for an answer
/// in between): true when the server closes the connection before the head is done.
fn drip_until_closed(mut stream: TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let head = format!(
        "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: {}\r\n\r\n",
        "a".repeat(60)
    );
    let mut buf = [0u8; 256];
    for b in head.bytes() {
        if stream.write_all(&[b]).is_err() {
            return true;
        }
        match stream.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Ok(0) | Err(_) => return true,
            Ok(n) => panic!(
                "expected no answer, got {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
    false
}

/// True when nothing arrives on `stream` for `wait` and it stays open.
fn silent_for(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    let silent = matches!(stream.read(&mut buf), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    silent
}

/// A normal client on a fresh connection.
fn health(server: &Server) -> u16 {
    server.request("GET", "/health", None).0
}

#[test]
fn half_sent_headers_are_cut_off_while_others_are_served() {
    let server = Server::memory(&["--header-read-timeout", "1", "--idle-timeout", "60"], &[]);
    // A connection that never sends a byte, one that stops mid-header, and one that
    // drips a byte every 200 ms (each byte must not restart the clock).
    let mut silent = connect(&server);
    let mut half = connect(&server);
    half.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let drip = connect(&server);
    let dripping = std::thread::spawn(move || drip_until_closed(drip));
    // Meanwhile, others are answered.
    for _ in 0..3 {
        assert_eq!(health(&server), 200);
    }
    assert!(
        closed_without_answer(&mut silent),
        "a silent connection is closed"
    );
    assert!(
        closed_without_answer(&mut half),
        "a half-sent head is cut off"
    );
    assert!(
        dripping.join().unwrap(),
        "a dripped head is cut off while bytes are still dripping in"
    );
    assert_eq!(health(&server), 200);
    assert!(server.terminate().success());
}

/// The head is due within the header-read timeout of the accept, whoever reads it
/// (hyper, or the live-change stream path): a client that waits before its first
/// byte does not get a fresh timeout from that byte.
#[test]
fn a_head_begun_late_is_still_due_from_the_accept() {
    let server = Server::memory(&["--header-read-timeout", "2", "--idle-timeout", "60"], &[]);
    let mut late = [connect(&server), connect(&server)];
    // Both wait (their clocks run together).
    assert!(silent_for(&mut late[0], Duration::from_millis(1500)));
    // 1.5 s after the accept: half a head, for a pull and for a stream.
    late[0].write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    late[1]
        .write_all(b"GET /events?paths=guestbook/a HTTP/1.1\r\n")
        .unwrap();
    // Due at 2 s: closed well before 1.5 s + 2 s.
    for stream in &mut late {
        stream
            .set_read_timeout(Some(Duration::from_millis(1200)))
            .unwrap();
        assert!(closed_without_answer(stream), "cut off at its due time");
    }
    assert_eq!(health(&server), 200);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_but_not_by_the_header_timeout() {
    // Idle timeout 1 s, header timeout 30 s: the close is the idle timeout's.
    let server = Server::memory(&["--idle-timeout", "1", "--header-read-timeout", "30"], &[]);
    let mut kept = connect(&server);
    assert_eq!(get_on(&mut kept, "/health"), 200);
    assert_eq!(
        get_on(&mut kept, "/health"),
        200,
        "kept alive between requests"
    );
    assert_eq!(health(&server), 200, "others are served meanwhile");
    assert!(closed_without_answer(&mut kept), "idle past 1 s: closed");
    drop(server);

    // Header timeout 1 s, idle timeout 30 s: a connection idle for longer than the
    // header timeout between two requests is still served.
    let server = Server::memory(&["--idle-timeout", "30", "--header-read-timeout", "1"], &[]);
    let mut kept = connect(&server);
    assert_eq!(get_on(&mut kept, "/health"), 200);
    assert!(
        silent_for(&mut kept, Duration::from_millis(2500)),
        "open and idle past the header timeout"
    );
    assert_eq!(get_on(&mut kept, "/health"), 200, "idle, not cut off");
    // The next head, half sent on that kept-alive connection: cut off by the header
    // timeout (1 s), long before the idle one (30 s).
    kept.write_all(b"GET /health HTTP/1.1\r\nX-Slow: ").unwrap();
    assert!(
        closed_without_answer(&mut kept),
        "a half-sent head on a kept-alive connection is cut off"
    );
    assert!(server.terminate().success());
}

#[test]
fn a_stalled_body_gets_408_while_others_are_served() {
    let server = Server::memory(&["--request-timeout", "1"], &[]);
    let mut slow = connect(&server);
    slow.write_all(
        b"POST /push/guestbook/stalled HTTP/1.1\r\nHost: 127.0.0.1\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"data\"",
    )
    .unwrap();
    for _ in 0..3 {
        assert_eq!(health(&server), 200);
    }
    assert_eq!(read_response(&mut slow), 408);
    let (status, body) = server.request("GET", "/pull/guestbook/stalled", None);
    assert_eq!(status, 200);
    assert!(
        body.contains(r#""hash":"""#),
        "nothing half-written: {body}"
    );
    assert!(server.terminate().success());
}

#[test]
fn past_max_in_flight_a_request_gets_503_at_once() {
    let server = Server::memory(&["--max-in-flight", "1", "--request-timeout", "2"], &[]);
    let stalled = || {
        let mut slow = connect(&server);
        slow.write_all(
            b"POST /push/guestbook/slot HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .unwrap();
        slow
    };
    let mut slow = stalled();
    // Once the stalled push holds the only slot, another request is refused. (On a
    // busy machine a health check can take the slot first and the push is the one
    // refused: then the push is sent again.)
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut refused = false;
    while !refused && std::time::Instant::now() < deadline {
        refused = health(&server) == 503;
        slow.set_nonblocking(true).unwrap();
        let answered = slow.peek(&mut [0u8; 1]).is_ok_and(|n| n > 0);
        slow.set_nonblocking(false).unwrap();
        if !refused && answered {
            slow = stalled();
        }
    }
    assert!(refused, "--max-in-flight 1: the second request gets 503");
    assert_eq!(read_response(&mut slow), 408);
    assert_eq!(health(&server), 200, "the slot is free again");
    assert!(server.terminate().success());
}

#[test]
fn past_the_connection_limit_a_new_connection_waits_while_others_are_served() {
    let server = Server::memory(
        &[
            "--max-connections",
            "2",
            "--idle-timeout",
            "60",
            "--header-read-timeout",
            "60",
        ],
        &[],
    );
    let mut a = connect(&server);
    let mut b = connect(&server);
    assert_eq!(get_on(&mut a, "/health"), 200);
    assert_eq!(get_on(&mut b, "/health"), 200);
    // A third connection: the kernel completes the handshake, the server does not
    // accept it while two are open.
    let mut c = connect(&server);
    send_get(&mut c, "/health");
    assert!(
        silent_for(&mut c, Duration::from_millis(1500)),
        "not served past the limit"
    );
    // The two connections it holds keep being served.
    for _ in 0..3 {
        assert_eq!(get_on(&mut a, "/health"), 200);
        assert_eq!(get_on(&mut b, "/health"), 200);
    }
    // One closes: the waiting connection is accepted and answered.
    drop(a);
    c.set_read_timeout(Some(PATIENCE)).unwrap();
    assert_eq!(read_response(&mut c), 200);
    assert!(server.terminate().success());
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_closes_idle_connections() {
    let server = Server::memory(&[], &[]);
    let mut idle = connect(&server);
    assert_eq!(get_on(&mut idle, "/health"), 200);
    let body = r#"{"data":{"msg":"last"},"baseHash":null}"#;
    let mut busy = connect(&server);
    write!(
        busy,
        "POST /push/guestbook/last HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    assert!(
        silent_for(&mut busy, Duration::from_millis(300)),
        "waiting for its body"
    );
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        closed_without_answer(&mut idle),
        "the idle connection is closed"
    );
    // The request in flight finishes, and is its connection's last.
    busy.write_all(&body.as_bytes()[10..]).unwrap();
    assert_eq!(read_response(&mut busy), 200);
    assert!(closed_without_answer(&mut busy));
    assert!(server.terminate_waited().success());
}

/// `GET path` from the local address `from`: the status.
fn get_from(server: &Server, from: [u8; 4], path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
        let mut stream = socket
            .connect(std::net::SocketAddr::from(([127, 0, 0, 1], server.port)))
            .await
            .unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        String::from_utf8_lossy(&response[9..12]).parse().unwrap()
    })
}

#[test]
fn rate_limits_key_on_the_peer_address() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("limited.yaml");
    std::fs::write(
        &config,
        "version: 1\ncollections:\n  - {name: docs, storagePath: \"docs/{id}\", readRoles: [public], writeRoles: [public],\n     rateLimit: {pull: {windowMs: 600000, maxRequests: 1, bucket: ip}}}\n",
    )
    .unwrap();
    let server = Server::start_with(&config, &dir.path().join("data"), &["--store", "memory"]);
    assert_eq!(get_from(&server, [127, 0, 0, 1], "/pull/docs/a"), 200);
    assert_eq!(get_from(&server, [127, 0, 0, 1], "/pull/docs/a"), 429);
    // Another peer address is another bucket: the accept loop passes ConnectInfo on.
    assert_eq!(get_from(&server, [127, 0, 0, 2], "/pull/docs/a"), 200);
    assert!(server.terminate().success());
}
