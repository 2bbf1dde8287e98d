//! Live-change streams through the real `starfish serve`, which serves them off
//! hyper (`src/serve/stream.rs`): the same answers as any route (layers, request
//! ids, refusals with their JSON bodies), frames as they come, resuming with
//! `Last-Event-ID`, the subscription gone when the client goes, streams ended at
//! shutdown, and heads it will not take refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common;
use common::*;

/// A connection to `port`, its reads waiting at most 15 s.
fn connect_to(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
}

/// Opens a connection and sends `head` (a request line and headers, no blank line).
fn send_head(server: &Server, head: &str) -> TcpStream {
    let mut stream = connect_to(server.port);
    write!(stream, "{head}\r\n\r\n").unwrap();
    stream
}

/// Pulls the guestbook room `room` on `stream`, kept alive: `200`.
fn pull_on(stream: &mut TcpStream, room: &str) {
    write!(
        stream,
        "GET /pull/guestbook/{room} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let (head, _) = read_answer(stream);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
}

/// The response head on `stream`, lower-cased.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed: {head:?}");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_ascii_lowercase()
}

/// One line, CRLF removed.
fn read_line(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "closed: {line:?}");
        line.push(byte[0]);
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).unwrap()
}

/// The next chunk of a chunked body; `None` for the last (empty) one.
fn next_chunk(stream: &mut TcpStream) -> Option<String> {
    let size = usize::from_str_radix(&read_line(stream), 16).unwrap();
    let mut data = vec![0u8; size + 2];
    stream.read_exact(&mut data).unwrap();
    assert!(data.ends_with(b"\r\n"));
    data.truncate(size);
    (size > 0).then(|| String::from_utf8(data).unwrap())
}

/// The last `id:` of a chunk.
fn last_id(chunk: &str) -> String {
    let id = chunk.lines().rev().find_map(|l| l.strip_prefix("id: "));
    id.expect("an id").to_owned()
}

/// Pushes `data` to the guestbook room `room`; the new hash.
fn push(server: &Server, room: &str, n: u32) -> String {
    let body = format!(r#"{{"data":{{"n":{n}}}}}"#);
    let (status, answer) = server.request("POST", &format!("/push/guestbook/{room}"), Some(&body));
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    answer["hash"].as_str().unwrap().to_owned()
}

/// The guestbook room `n`: each write here goes to a room of its own (a write
/// without a base hash creates a document).
fn room(n: u32) -> String {
    format!("r{n}")
}

/// The `live_subscribers` gauge on the metrics listener.
fn subscribers(metrics: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", metrics)).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("starfish_live_subscribers "));
    line.unwrap_or("").to_owned()
}

/// Reads a stream's answer as written off hyper (its head, then the opening) and
/// waits until the node counts its subscriber; then a push to `room` is its next
/// frame. The frame.
fn opened_off_hyper_hears(
    server: &Server,
    stream: &mut TcpStream,
    metrics: u16,
    room: &str,
) -> String {
    let head = read_head(stream);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "transfer-encoding: chunked",
        "connection: close",
        "x-request-id: ",
        "date: ",
    ] {
        assert!(head.contains(line), "{line} in {head}");
    }
    let opening = next_chunk(stream).unwrap();
    assert!(opening.starts_with(": connected\n"), "{opening}");
    assert!(eventually(
        || subscribers(metrics) == "starfish_live_subscribers 1"
    ));
    let hash = push(server, room, 1);
    let frame = next_chunk(stream).unwrap();
    assert!(frame.contains(&format!("\"hash\":\"{hash}\"")), "{frame}");
    frame
}

#[test]
fn a_stream_hears_changes_resumes_and_ends_with_its_client_and_the_server() {
    let metrics = free_port();
    let addr = format!("127.0.0.1:{metrics}");
    let server = Server::memory(&["--metrics-addr", &addr], &[]);
    let (a, b) = (room(1), room(2));
    let get = format!("GET /events?paths=guestbook/{a},guestbook/{b} HTTP/1.1\r\nHost: x");
    let mut stream = send_head(&server, &get);
    let frame = opened_off_hyper_hears(&server, &mut stream, metrics, &a);
    let id = last_id(&frame);
    // The client goes: its subscription goes with it.
    drop(stream);
    assert!(eventually(
        || subscribers(metrics) == "starfish_live_subscribers 0"
    ));
    // What it missed meanwhile comes first when it is back with its last id.
    let missed = [push(&server, &b, 2), push(&server, &room(3), 3)];
    let mut stream = send_head(&server, &format!("{get}\r\nLast-Event-ID: {id}"));
    read_head(&mut stream);
    let opening = next_chunk(&mut stream).unwrap();
    assert!(opening.contains(&missed[0]), "{opening}");
    assert!(
        !opening.contains(&missed[1]),
        "not a path it named: {opening}"
    );
    // At shutdown the stream ends (its last chunk) and the server exits.
    let status = server.terminate();
    assert!(status.success());
    let rest = std::iter::from_fn(|| next_chunk(&mut stream)).count();
    assert_eq!(rest, 0, "nothing but the end");
}

/// A stream asked on a connection kept alive after other requests leaves hyper:
/// its answer is written as a fresh connection's stream is (`connection: close`,
/// which hyper never adds to a kept-alive HTTP/1.1 answer), after the answers
/// before it, whole; it hears changes and goes with its client.
#[test]
fn a_stream_asked_after_other_requests_on_its_connection_leaves_hyper() {
    let metrics = free_port();
    let addr = format!("127.0.0.1:{metrics}");
    let server = Server::memory(&["--metrics-addr", &addr], &[]);
    let (a, b) = (room(1), room(2));
    let big = "x".repeat(12_000);
    let body = format!(r#"{{"data":{{"big":"{big}"}}}}"#);
    let (status, answer) = server.request("POST", &format!("/push/guestbook/{b}"), Some(&body));
    assert_eq!(status, 200, "{answer}");
    let mut stream = send_head(
        &server,
        &format!("GET /pull/guestbook/{a} HTTP/1.1\r\nHost: x"),
    );
    for n in 0..3 {
        let head = read_head(&mut stream);
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(!head.contains("connection: close"), "kept alive: {head}");
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse::<usize>()
            .unwrap();
        let mut answer = vec![0u8; length];
        stream.read_exact(&mut answer).unwrap();
        let next = if n == 0 { &b } else { &a };
        if n == 1 {
            assert!(String::from_utf8(answer).unwrap().contains(&big));
        }
        if n < 2 {
            write!(
                stream,
                "GET /pull/guestbook/{next} HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .unwrap();
        }
    }
    write!(
        stream,
        "GET /events?paths=guestbook/{a} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    opened_off_hyper_hears(&server, &mut stream, metrics, &a);
    drop(stream);
    assert!(eventually(
        || subscribers(metrics) == "starfish_live_subscribers 0"
    ));
}

/// Thirty clients at once, each pulling and then subscribing on the same kept-alive
/// connection (as `fetch` does), while others pull on theirs: every stream is
/// handed over from hyper and hears every change, in order.
#[test]
fn thirty_clients_subscribing_after_a_pull_each_hear_every_change() {
    const CLIENTS: usize = 30;
    const CHANGES: u32 = 5;
    let metrics = free_port();
    let addr = format!("127.0.0.1:{metrics}");
    let server = Server::memory(
        &[
            "--metrics-addr",
            &addr,
            "--max-subscriptions-per-ip",
            "64",
            "--max-subscriptions-per-caller",
            "64",
        ],
        &[],
    );
    let room = room(30);
    let mut base = push(&server, &room, 0);
    let port = server.port;
    let subscribe = |n: usize| {
        let room = room.clone();
        std::thread::spawn(move || {
            let mut stream = connect_to(port);
            for _ in 0..(1 + n % 3) {
                pull_on(&mut stream, &room);
            }
            write!(
                stream,
                "GET /events?paths=guestbook/{room} HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            .unwrap();
            let head = read_head(&mut stream);
            assert!(head.contains("connection: close"), "off hyper: {head}");
            let opening = next_chunk(&mut stream).unwrap();
            assert!(opening.starts_with(": connected\n"), "{opening}");
            stream
        })
    };
    let streams: Vec<TcpStream> = (0..CLIENTS)
        .map(subscribe)
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let all = format!("starfish_live_subscribers {CLIENTS}");
    assert!(eventually(|| subscribers(metrics) == all));
    // Pulls on kept-alive connections of their own go on meanwhile.
    let pulling = (0..4)
        .map(|_| {
            let room = room.clone();
            std::thread::spawn(move || {
                let mut stream = connect_to(port);
                for _ in 0..50 {
                    pull_on(&mut stream, &room);
                }
            })
        })
        .collect::<Vec<_>>();
    let hashes: Vec<String> = (1..=CHANGES)
        .map(|n| {
            let body = format!(r#"{{"data":{{"n":{n}}},"baseHash":"{base}"}}"#);
            let (status, answer) =
                server.request("POST", &format!("/push/guestbook/{room}"), Some(&body));
            assert_eq!(status, 200, "{answer}");
            let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
            base = answer["hash"].as_str().unwrap().to_owned();
            base.clone()
        })
        .collect();
    for puller in pulling {
        puller.join().unwrap();
    }
    for mut stream in streams {
        for hash in &hashes {
            let frame = next_chunk(&mut stream).unwrap();
            assert!(frame.contains(&format!("\"hash\":\"{hash}\"")), "{frame}");
        }
    }
}

/// Waits `d` without sleeping: a read on a socket nobody writes to.
fn pause(d: Duration) {
    let idle = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    idle.set_read_timeout(Some(d)).unwrap();
    let _ = idle.recv(&mut [0u8; 1]);
}

/// Reads one answer with a `content-length` on `stream`: its head, lower-cased, and
/// its body.
fn read_answer(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(stream);
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |n| n.trim().parse::<usize>().unwrap());
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (head, body)
}

/// A stream asked while hyper still holds answers it could not write yet (the
/// client is not reading) is not taken from hyper: every answer before it arrives
/// whole, then the stream (served by hyper, after them).
#[test]
fn a_stream_asked_while_answers_wait_to_be_written_waits_its_turn() {
    let server = Server::memory(&[], &[]);
    let big = "x".repeat(12_000);
    let body = format!(r#"{{"data":{{"big":"{big}"}}}}"#);
    let (status, answer) = server.request("POST", "/push/guestbook/big", Some(&body));
    assert_eq!(status, 200, "{answer}");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    const PULLS: usize = 40;
    let pulls = "GET /pull/guestbook/big HTTP/1.1\r\nHost: x\r\n\r\n".repeat(PULLS);
    stream.write_all(pulls.as_bytes()).unwrap();
    // The server's buffers fill; then the stream's request, on its own.
    pause(Duration::from_millis(300));
    write!(
        stream,
        "GET /events?paths=guestbook/big HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    for n in 0..PULLS {
        let (head, body) = read_answer(&mut stream);
        assert!(
            head.starts_with("http/1.1 200 ok\r\n"),
            "answer {n}: {head}"
        );
        assert!(
            String::from_utf8(body).unwrap().contains(&big),
            "answer {n}"
        );
    }
    let head = read_head(&mut stream);
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let opening = next_chunk(&mut stream).unwrap();
    assert!(opening.starts_with(": connected\n"), "{opening}");
}

/// Bytes of a request's body that look like a stream's request are its body, not a
/// request: answered `413` from its head, the request's body is not taken for a
/// stream's request even when it arrives after the answer.
#[test]
fn a_body_that_looks_like_a_stream_request_is_not_one() {
    let server = Server::memory(&[], &[]);
    let mut stream = send_head(
        &server,
        "POST /push/guestbook/r1 HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100000",
    );
    let (head, _) = read_answer(&mut stream);
    assert!(head.starts_with("http/1.1 413 "), "{head}");
    pause(Duration::from_millis(300));
    let fake = "GET /events?paths=guestbook/r1 HTTP/1.1\r\nHost: x\r\n\r\n";
    let _ = stream.write_all(fake.as_bytes());
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest).to_ascii_lowercase();
    assert!(!rest.contains("text/event-stream"), "{rest}");
}

#[test]
fn refusals_and_heads_it_will_not_take_on_the_stream_path() {
    let server = Server::memory(&[], &[]);
    // The router's refusals, with their bodies and lengths.
    let (status, headers, body) = server.send("GET /events HTTP/1.1", "");
    assert_eq!(status, 400);
    assert!(headers.contains(&format!("content-length: {}", body.len())));
    assert_eq!(body, br#"{"error":"Missing paths parameter"}"#);
    let (status, _, _) = server.send("GET /nowhere/events?paths=x/y HTTP/1.1", "");
    assert_eq!(status, 404);
    // A body announced on a stream's request, a head too long: refused, closed.
    let (status, _, _) = server.send("GET /events?paths=guestbook/r1 HTTP/1.1", "hello");
    assert_eq!(status, 400);
    let long = format!(
        "GET /events?paths=guestbook/r1 HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(20_000)
    );
    let mut stream = send_head(&server, &long);
    assert!(read_head(&mut stream).starts_with("http/1.1 431 "));
    // A request line sent in two pieces goes to hyper, and is served the same.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream.write_all(b"GET /eve").unwrap();
    // The pause between the pieces: a read that waits 100 ms for nothing.
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        stream.read(&mut [0u8; 1]).is_err(),
        "no answer to half a line"
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    stream
        .write_all(b"nts?paths=guestbook/r1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert!(read_head(&mut stream).starts_with("http/1.1 200 "));
    assert!(next_chunk(&mut stream).unwrap().starts_with(": connected"));
    // HTTP/1.0: no chunks, the stream runs until the connection closes.
    let mut stream = send_head(&server, "GET /events?paths=guestbook/r1 HTTP/1.0");
    let head = read_head(&mut stream);
    assert!(
        head.starts_with("http/1.1 200 ") && !head.contains("chunked"),
        "{head}"
    );
    let mut opening = [0u8; 12];
    stream.read_exact(&mut opening).unwrap();
    assert_eq!(&opening, b": connected\n");
}

/// A subscriber that stops reading holds nothing for long: once its socket's
/// buffers are full, the connection is cut off after `--request-timeout` plus
/// `--idle-timeout` without a byte moving, as on hyper's connections.
#[test]
fn a_stream_whose_reader_stopped_is_cut_off() {
    let server = Server::memory(&["--request-timeout", "1", "--idle-timeout", "1"], &[]);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut slow: TcpStream = socket.into();
    write!(
        slow,
        "GET /events?paths=guestbook/slow HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    // Changes until its buffers are full and more (each frame is about 250 bytes).
    let body = |n: u32| format!(r#"{{"data":{{"n":{n}}}}}"#);
    let (status, first) = server.request("POST", "/push/guestbook/slow", Some(&body(0)));
    assert_eq!(status, 200, "{first}");
    let mut base: String = serde_json::from_str::<serde_json::Value>(&first).unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    for n in 1..1500 {
        let push = format!(r#"{{"data":{{"n":{n}}},"baseHash":"{base}"}}"#);
        let (status, answer) = server.request("POST", "/push/guestbook/slow", Some(&push));
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        base = answer["hash"].as_str().unwrap().to_owned();
    }
    // Reading now: what was buffered, then the end (not a wait for more).
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut sink = Vec::new();
    match slow.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(
        sink.len() < 1500 * 250,
        "cut off before every frame: {}",
        sink.len()
    );
}
