//! Live changes (`GET /[ns/]events?paths=…`): a subscriber hears of every write to
//! the documents it named, as the official client's `subscribeChanges` reads them
//! (`data:` frames; which document, its hash and time, never the data), and only of
//! documents it may read.

use crate::common;

use axum::Router;
use axum::body::{Body, BodyDataStream};
use axum::http::StatusCode;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::time::Duration;

fn app() -> Router {
    let collections = json!([
        {"name": "notes", "storagePath": "users/{identity}/notes",
         "readRoles": ["self"], "writeRoles": ["self"]},
        {"name": "board", "storagePath": "board/{id}",
         "readRoles": ["public"], "writeRoles": ["public"]}
    ]);
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": [{"name": "board", "storagePath": "board/{id}",
                         "readRoles": ["public"], "writeRoles": ["public"]}],
        "namespaces": {"acme": {"isolation": "prefixed", "collections": collections}}
    }))
    .unwrap();
    let clock = ManualClock::new(T0);
    create_sync_router(SyncOptions::new(config, DocStore::memory()).with_clock(Arc::new(clock)))
        .unwrap()
}

/// The next SSE frame's text (comments included), within a few seconds.
async fn next_frame(stream: &mut BodyDataStream) -> String {
    let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a frame in time")
        .expect("the stream is open")
        .unwrap();
    String::from_utf8(chunk.to_vec()).unwrap()
}

/// The `data:` payload of a frame.
fn data(frame: &str) -> Value {
    let line = frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("no data in {frame:?}"));
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
async fn a_subscriber_hears_of_writes_to_what_it_named_and_nothing_else() {
    let app = app();
    let alice = user(1);
    let notes = format!("users/{}/notes", alice.id);
    let uri = format!("/acme/events?paths={notes},board/b1");
    let res = send(&app, Signed::get(&uri, &alice).build()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.into_body().into_data_stream();
    assert!(next_frame(&mut stream).await.starts_with(':'), "connected");

    // Someone else's write elsewhere (another document, the root's board): nothing.
    let (s, _) = push_doc(&app, "/push/board/b1", json!({"n": 1}), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = push_doc(&app, "/acme/push/board/b2", json!({"n": 1}), None).await;
    assert_eq!(s, StatusCode::OK);
    // Alice's own note, then the public board in acme.
    let res = send(
        &app,
        Signed::push(
            &format!("/acme/push/{notes}"),
            &alice,
            &json!({"data": {"secret": "s3"}}),
        )
        .build(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let pushed = json_body(res).await;
    let frame = next_frame(&mut stream).await;
    assert!(!frame.contains("s3"), "never the data: {frame}");
    assert_eq!(
        data(&frame),
        json!({"namespace": "acme", "collection": "notes", "path": notes,
               "hash": pushed["hash"], "timestamp": T0})
    );
    let (s, board) = push_doc(&app, "/acme/push/board/b1", json!({"n": 2}), None).await;
    assert_eq!(s, StatusCode::OK);
    let frame = data(&next_frame(&mut stream).await);
    assert_eq!(frame["path"], "board/b1");
    assert_eq!(frame["hash"], board["hash"]);
}

#[tokio::test]
async fn only_what_the_caller_may_read_and_within_bounds() {
    let app = app();
    let (alice, bob) = (user(1), user(2));
    let bobs = format!("users/{}/notes", bob.id);
    // Bob's notes are not Alice's to hear about.
    let res = send(
        &app,
        Signed::get(&format!("/acme/events?paths={bobs}"), &alice).build(),
    )
    .await;
    assert_error(res, StatusCode::FORBIDDEN, "Forbidden").await;
    // Unsigned, for a private document: refused as a pull of it is.
    let pull = send(&app, get(&format!("/acme/pull/{bobs}")))
        .await
        .status();
    assert!(pull.is_client_error());
    let res = send(&app, get(&format!("/acme/events?paths={bobs}"))).await;
    assert_eq!(res.status(), pull);
    // Bounds, before any signature is looked at.
    let many = vec!["board/x"; 65].join(",");
    let res = send(&app, get(&format!("/acme/events?paths={many}"))).await;
    assert_error(res, StatusCode::BAD_REQUEST, "too many candidates").await;
    let res = send(&app, get("/acme/events")).await;
    assert_error(res, StatusCode::BAD_REQUEST, "Missing paths parameter").await;
    let res = send(&app, get("/acme/events?paths=nowhere/x")).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    // Public documents need no credentials, at the root too; a caller's
    // subscriptions are bounded.
    let mut open = Vec::new();
    for _ in 0..8 {
        let res = send(&app, get("/events?paths=board/b1")).await;
        assert_eq!(res.status(), StatusCode::OK);
        open.push(res);
    }
    let res = send(&app, get("/events?paths=board/b1")).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(open);
    let res = send(&app, get("/events?paths=board/b1")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body().into_data_stream();
    next_frame(&mut stream).await;
    let (s, _) = push_doc(&app, "/push/board/b1", json!({"n": 1}), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        data(&next_frame(&mut stream).await)["namespace"],
        Value::Null
    );
}

#[tokio::test]
async fn dropping_the_connection_ends_the_subscription() {
    let app = app();
    let mut open = Vec::new();
    for _ in 0..8 {
        let res = send(&app, get("/events?paths=board/b1")).await;
        assert_eq!(res.status(), StatusCode::OK);
        open.push(res.into_body());
    }
    assert_eq!(
        send(&app, get("/events?paths=board/b1")).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // A client goes away: its place is given back at once, and writes reach only
    // the others.
    let gone: Body = open.pop().unwrap();
    drop(gone);
    let res = send(&app, get("/events?paths=board/b1")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (s, _) = push_doc(&app, "/push/board/b1", json!({"n": 1}), None).await;
    assert_eq!(s, StatusCode::OK);
    let mut stream = res.into_body().into_data_stream();
    next_frame(&mut stream).await;
    assert_eq!(data(&next_frame(&mut stream).await)["path"], "board/b1");
}

#[tokio::test]
async fn streams_end_when_the_server_shuts_down() {
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": [{"name": "board", "storagePath": "board/{id}",
                         "readRoles": ["public"], "writeRoles": ["public"]}]
    }))
    .unwrap();
    let app =
        create_sync_router(SyncOptions::new(config, DocStore::memory()).with_shutdown(stopping))
            .unwrap();
    let res = send(&app, get("/events?paths=board/b1")).await;
    let mut stream = res.into_body().into_data_stream();
    next_frame(&mut stream).await;
    stop.send(true).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream ends at once");
    assert!(end.is_none(), "{end:?}");
    // One opened while shutting down ends after its opening.
    let res = send(&app, get("/events?paths=board/b1")).await;
    let mut late = res.into_body().into_data_stream();
    assert!(next_frame(&mut late).await.starts_with(": connected"));
    let end = tokio::time::timeout(Duration::from_secs(5), late.next()).await;
    assert!(end.expect("it ends at once").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_when_the_callers_certificate_expires() {
    let app = app();
    let alice = user(3);
    let notes = format!("users/{}/notes", alice.id);
    // A certificate that expires 90 s after the server's clock (T0): accepted until
    // 300 s (the allowed skew) after that.
    let cert = cap(
        &alice,
        &alice.device,
        full_scope(),
        T0 / 1000 - 60,
        T0 / 1000 + 90,
    );
    let uri = format!("/acme/events?paths={notes}");
    let res = send(&app, Signed::new("GET", &uri, cert, &alice.device).build()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body().into_data_stream();
    assert!(next_frame(&mut stream).await.starts_with(':'));
    let started = tokio::time::Instant::now();
    // Keep-alive comments until the certificate expires, then the end.
    loop {
        let chunk = tokio::time::timeout(Duration::from_secs(600), stream.next())
            .await
            .expect("the stream ends long before its 15 minutes");
        if chunk.is_none() {
            break;
        }
    }
    let lasted = started.elapsed();
    assert!(
        lasted >= Duration::from_secs(389) && lasted <= Duration::from_secs(391),
        "{lasted:?}"
    );
}

/// The node's bounds are the embedder's (`SyncOptions::with_live_limits`), and a
/// namespace holds at most its share of them (its limits' `maxSubscriptions`, or
/// half of the node's): one tenant cannot take every stream.
#[tokio::test]
async fn a_namespace_holds_its_share_of_the_nodes_subscriptions() {
    let board = json!([{"name": "board", "storagePath": "board/{id}",
                        "readRoles": ["public"], "writeRoles": ["public"]}]);
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": board,
        "namespaces": {
            "acme": {"collections": board, "limits": {"maxSubscriptions": 2}},
            "globex": {"collections": board}
        }
    }))
    .unwrap();
    let mut limits = starfish_server::live::LiveLimits::with_total(6);
    limits.per_caller = 6;
    let app = create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_live_limits(limits),
    )
    .unwrap();
    let open = |uri: &'static str| {
        let app = app.clone();
        async move { send(&app, get(uri)).await }
    };
    let mut held = Vec::new();
    for _ in 0..2 {
        let res = open("/acme/events?paths=board/b1").await;
        assert_eq!(res.status(), StatusCode::OK);
        held.push(res);
    }
    // acme has its two (its limits); globex has half the node's six: three.
    assert_eq!(
        open("/acme/events?paths=board/b1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..3 {
        let res = open("/globex/events?paths=board/b1").await;
        assert_eq!(res.status(), StatusCode::OK);
        held.push(res);
    }
    assert_eq!(
        open("/globex/events?paths=board/b1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The root's own streams count only against the node: one more fits, then six.
    let res = open("/events?paths=board/b1").await;
    assert_eq!(res.status(), StatusCode::OK);
    held.push(res);
    assert_eq!(
        open("/events?paths=board/b1").await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    drop(held);
    assert_eq!(
        open("/acme/events?paths=board/b1").await.status(),
        StatusCode::OK
    );
}

/// Forty callers subscribing to one namespace at once: exactly its share is
/// taken, the rest refused, and every place comes back when they close.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespaces_share_holds_under_concurrent_subscriptions() {
    let board = json!([{"name": "board", "storagePath": "board/{id}",
                        "readRoles": ["public"], "writeRoles": ["public"]}]);
    let config = SyncConfig::from_value(json!({
        "version": 1, "collections": [],
        "namespaces": {"acme": {"collections": board, "limits": {"maxSubscriptions": 10}}}
    }))
    .unwrap();
    let mut limits = starfish_server::live::LiveLimits::with_total(100);
    limits.per_caller = 100;
    limits.per_ip = 100;
    let app = create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_live_limits(limits),
    )
    .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { send(&app, get("/acme/events?paths=board/b1")).await })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let res = task.await.unwrap();
        match res.status() {
            StatusCode::OK => open.push(res),
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!((open.len(), refused), (10, 30));
    drop(open);
    let again = send(&app, get("/acme/events?paths=board/b1")).await;
    assert_eq!(again.status(), StatusCode::OK);
}

/// A router on the sample config whose node remembers `replay` changes and lets
/// one caller hold 100 streams.
fn resumable(replay: usize) -> Router {
    let board = json!([{"name": "board", "storagePath": "board/{id}",
                        "readRoles": ["public"], "writeRoles": ["public"]}]);
    let config = SyncConfig::from_value(json!({"version": 1, "collections": board})).unwrap();
    let mut limits = starfish_server::live::LiveLimits::with_total(1000);
    limits.per_caller = 100;
    limits.per_ip = 100;
    limits.replay = replay;
    create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_live_limits(limits),
    )
    .unwrap()
}

/// Opens `GET uri`, with `Last-Event-ID: since` when given.
async fn open_stream(app: &Router, uri: &str, since: Option<&str>) -> BodyDataStream {
    let mut req = get(uri);
    if let Some(id) = since {
        req.headers_mut()
            .insert("last-event-id", id.parse().unwrap());
    }
    let res = send(app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().into_data_stream()
}

/// What a chunk of a stream says: the hashes of its changes, its last `id`, and
/// whether it said to pull.
fn read_chunk(chunk: &str, hashes: &mut Vec<String>, id: &mut Option<String>) -> bool {
    let mut pull = false;
    for frame in chunk.split("\n\n") {
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                *id = Some(v.to_owned());
            } else if line == "event: pull" {
                pull = true;
            } else if let Some(v) = line.strip_prefix("data: ") {
                let change: Value = serde_json::from_str(v).unwrap();
                if let Some(hash) = change["hash"].as_str() {
                    hashes.push(hash.to_owned());
                }
            }
        }
    }
    pull
}

/// Twenty subscribers drop their streams and reconnect with `Last-Event-ID` at
/// random moments while four writers push sixty changes: each one hears every
/// change, none told to pull (the node remembers them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_reconnects_with_last_event_id_hears_every_change_it_missed() {
    let app = resumable(4096);
    let uri = "/events?paths=board/w0,board/w1,board/w2,board/w3";
    let (finish, done) = tokio::sync::watch::channel(false);
    // Every subscriber is there before the first write: it hears all of them.
    let mut first = Vec::new();
    for _ in 0..20 {
        first.push(open_stream(&app, uri, None).await);
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let (mut base, mut written) = (None::<String>, Vec::new());
                for n in 0..15 {
                    let path = format!("/push/board/w{w}");
                    let (s, body) =
                        push_doc(&app, &path, json!({"w": w, "n": n}), base.as_deref()).await;
                    assert_eq!(s, StatusCode::OK, "{body}");
                    base = body["hash"].as_str().map(str::to_owned);
                    written.extend(base.clone());
                    tokio::task::yield_now().await;
                }
                written
            })
        })
        .collect();
    let subscribers: Vec<_> = (1u64..)
        .zip(first)
        .map(|(seed, stream)| {
            let (app, mut done) = (app.clone(), done.clone());
            tokio::spawn(async move {
                let (mut heard, mut id, mut r) = (Vec::new(), None::<String>, seed);
                let mut stream = Some(stream);
                loop {
                    // Once the writers are done: one last reconnect hears the rest.
                    let finishing = *done.borrow();
                    let mut stream = match stream.take() {
                        Some(stream) => stream,
                        None => open_stream(&app, uri, id.as_deref()).await,
                    };
                    let chunk = next_frame(&mut stream).await;
                    assert!(!read_chunk(&chunk, &mut heard, &mut id), "told to pull");
                    if finishing {
                        return heard;
                    }
                    // A few frames, then the connection drops.
                    r = r
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    for _ in 0..(r >> 60) % 4 {
                        tokio::select! {
                            chunk = next_frame(&mut stream) => {
                                assert!(!read_chunk(&chunk, &mut heard, &mut id));
                            }
                            _ = done.wait_for(|d| *d) => break,
                        }
                    }
                }
            })
        })
        .collect();
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    finish.send(true).unwrap();
    written.sort();
    for subscriber in subscribers {
        let mut heard = tokio::time::timeout(Duration::from_secs(20), subscriber)
            .await
            .expect("each subscriber finishes")
            .unwrap();
        heard.sort();
        heard.dedup();
        assert_eq!(
            heard, written,
            "every change, heard live or on reconnecting"
        );
    }
}

/// A node that remembers three changes: a stream further behind is told to pull,
/// as is one whose id is not one this server gives; from the pull frame's id it
/// resumes exactly.
#[tokio::test]
async fn a_stream_further_behind_than_the_window_is_told_to_pull() {
    let app = resumable(3);
    let uri = "/events?paths=board/b1";
    let mut stream = open_stream(&app, uri, None).await;
    let (mut heard, mut id) = (Vec::new(), None);
    assert!(!read_chunk(
        &next_frame(&mut stream).await,
        &mut heard,
        &mut id
    ));
    drop(stream);
    let mut base: Option<String> = None;
    for n in 0..4 {
        let (s, body) = push_doc(&app, "/push/board/b1", json!({"n": n}), base.as_deref()).await;
        assert_eq!(s, StatusCode::OK);
        base = body["hash"].as_str().map(str::to_owned);
    }
    let mut stream = open_stream(&app, uri, id.as_deref()).await;
    let chunk = next_frame(&mut stream).await;
    assert!(
        read_chunk(&chunk, &mut heard, &mut id),
        "told to pull: {chunk}"
    );
    assert!(heard.is_empty(), "no change, only the pull: {chunk}");
    drop(stream);
    let (s, body) = push_doc(&app, "/push/board/b1", json!({"n": 9}), base.as_deref()).await;
    assert_eq!(s, StatusCode::OK);
    let mut stream = open_stream(&app, uri, id.as_deref()).await;
    assert!(!read_chunk(
        &next_frame(&mut stream).await,
        &mut heard,
        &mut id
    ));
    assert_eq!(heard, [body["hash"].as_str().unwrap()]);
    for unknown in ["garbage", "1-2-zz", "99999999999999999999999-1-ab"] {
        let mut stream = open_stream(&app, uri, Some(unknown)).await;
        assert!(read_chunk(
            &next_frame(&mut stream).await,
            &mut heard,
            &mut id
        ));
    }
}

/// Over TCP: a subscriber that stops reading is dropped once its buffers are
/// full, while another subscriber of the same document hears every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_delay_a_fast_one() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// More frames than the sockets' buffers and the stream's hold.
    const CHANGES: usize = 1000;
    let app = resumable(16);
    // Small send buffers (the accepted sockets inherit them): a reader that stops
    // fills them in a few dozen frames, not thousands.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let addr = listener.local_addr().unwrap();
    let served = app.clone();
    tokio::spawn(async move { axum::serve(listener, served).await.unwrap() });
    let request = b"GET /events?paths=board/b1 HTTP/1.1\r\nHost: x\r\n\r\n";
    // The slow one: a small receive buffer, and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(request).await.unwrap();
    let mut fast = tokio::net::TcpStream::connect(addr).await.unwrap();
    fast.write_all(request).await.unwrap();
    let (mut fast_rd, _keep) = fast.into_split();
    let (progress, mut heard_so_far) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        let (mut text, mut buf) = (String::new(), vec![0u8; 65536]);
        while text.matches("data: ").count() < CHANGES {
            progress.send_replace(text.matches("data: ").count());
            let n = tokio::time::timeout(Duration::from_secs(10), fast_rd.read(&mut buf))
                .await
                .expect("the fast subscriber is never kept waiting")
                .unwrap();
            assert!(n > 0, "the fast stream stays open");
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        text
    });
    // Both streams are open before the first write.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Writes go through the same router in process; the streams are over TCP.
    let mut base: Option<String> = None;
    for n in 0..CHANGES {
        // The fast one keeps up (never 64 behind); the slow one reads nothing.
        let keeping_up = heard_so_far.wait_for(|heard| heard + 64 > n);
        tokio::time::timeout(Duration::from_secs(10), keeping_up)
            .await
            .expect("the fast subscriber is never kept waiting")
            .unwrap();
        let (s, body) = push_doc(&app, "/push/board/b1", json!({"n": n}), base.as_deref()).await;
        assert_eq!(s, StatusCode::OK);
        base = body["hash"].as_str().map(str::to_owned);
    }
    let text = reader.await.unwrap();
    assert_eq!(
        text.matches("data: ").count(),
        CHANGES,
        "every change, in order"
    );
    // The slow one was cut off: reading now, it finds fewer changes, then the end
    // of its stream (the last chunk of the body; the connection may stay open).
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while !got.ends_with(b"\r\n0\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
            .await
            .expect("the slow stream ends")
            .unwrap();
        assert!(n > 0, "the connection closed before the stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    let heard = String::from_utf8_lossy(&got).matches("data: ").count();
    assert!(
        heard < CHANGES,
        "the slow subscriber was dropped after {heard}"
    );
}
