//! Slow and many clients: a stalled body is cut off with 408 while others are served,
//! and past `max_in_flight` a request gets 503 at once instead of queueing.

use crate::common;

use common::*;
use starfish_server::auth::ManualClock;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn serve(timeout: Duration, max_in_flight: usize) -> (SocketAddr, DocStore) {
    let store = DocStore::memory();
    let options = SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store.clone())
        .with_clock(Arc::new(ManualClock::new(T0)))
        .with_request_timeout(timeout)
        .with_max_in_flight(max_in_flight);
    let app = create_sync_router(options).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, store)
}

/// A push that declares 100 bytes and sends 7: its body never completes.
async fn stalled_push(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /push/docs/a HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"data\"",
    )
    .await
    .unwrap();
    s
}

/// The status line of the response on `s`, waiting at most 10 s for the server.
async fn status_of(s: &mut TcpStream) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("the server answers")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or("").to_owned()
}

async fn get_status(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    status_of(&mut s).await
}

#[tokio::test]
async fn a_stalled_body_is_cut_off_while_others_are_served() {
    let (addr, store) = serve(Duration::from_millis(300), 64).await;
    let mut slow = stalled_push(addr).await;
    // Meanwhile, other clients are answered.
    for _ in 0..3 {
        assert_eq!(get_status(addr, "/health").await, "HTTP/1.1 200 OK");
    }
    assert_eq!(status_of(&mut slow).await, "HTTP/1.1 408 Request Timeout");
    assert_eq!(stored(&store, "docs/a").await, None, "nothing half-written");
}

#[tokio::test]
async fn past_the_in_flight_limit_a_request_is_refused_at_once() {
    let (addr, _) = serve(Duration::from_millis(500), 1).await;
    let mut slow = stalled_push(addr).await;
    // While the stalled push holds the only slot, another request gets 503 at once.
    let mut refused = false;
    for _ in 0..50 {
        if get_status(addr, "/health").await == "HTTP/1.1 503 Service Unavailable" {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(
        refused,
        "a request past max_in_flight is refused, not queued"
    );
    assert_eq!(status_of(&mut slow).await, "HTTP/1.1 408 Request Timeout");
    // The slot is free again.
    assert_eq!(get_status(addr, "/health").await, "HTTP/1.1 200 OK");
}
