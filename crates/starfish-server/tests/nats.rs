//! Live changes carried between nodes by NATS (`--nats`): a subscriber on one node
//! hears of a write accepted by another, once, and a node does not hear its own
//! changes twice; what no node would send is not handed on. Needs a NATS server:
//! run by `tests/nats/run.sh`, which starts one and sets `STARFISH_TEST_NATS_URL`.
#![cfg(feature = "nats")]

mod common;

use axum::Router;
use axum::body::BodyDataStream;
use axum::http::StatusCode;
use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::live::NatsFeed;
use starfish_server::store::DocStore;
use starfish_server::{Metrics, SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::time::Duration;

async fn node(store: &DocStore, url: &str, prefix: &str, metrics: &Metrics) -> Router {
    let config = SyncConfig::from_value(json!({
        "version": 1,
        "collections": [{"name": "board", "storagePath": "board/{id}",
                         "readRoles": ["public"], "writeRoles": ["public"]}]
    }))
    .unwrap();
    let feed = NatsFeed::connect(url, Some(prefix)).await.unwrap();
    create_sync_router(
        SyncOptions::new(config, store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_change_feed(Arc::new(feed))
            .with_metrics(metrics.clone()),
    )
    .unwrap()
}

async fn subscribe(app: &Router, uri: &str) -> BodyDataStream {
    let res = send(app, get(uri)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut stream = res.into_body().into_data_stream();
    let hello = next(&mut stream, Duration::from_secs(5)).await.unwrap();
    assert!(hello.starts_with(':'), "{hello}");
    stream
}

/// The next frame within `wait`, `None` when none came.
async fn next(stream: &mut BodyDataStream, wait: Duration) -> Option<String> {
    let chunk = tokio::time::timeout(wait, stream.next()).await.ok()??;
    Some(String::from_utf8(chunk.unwrap().to_vec()).unwrap())
}

fn data(frame: &str) -> Value {
    let line = frame
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    serde_json::from_str(line).unwrap()
}

#[tokio::test]
#[ignore = "needs a NATS server: run by tests/nats/run.sh"]
async fn a_change_on_one_node_reaches_the_subscribers_of_the_other() {
    let url = std::env::var("STARFISH_TEST_NATS_URL")
        .expect("STARFISH_TEST_NATS_URL is not set: run tests/nats/run.sh");
    // Subjects of this run's own: tests may share one server.
    let prefix = format!("test{}.changes", std::process::id());
    let store = DocStore::memory();
    let (on_a_metrics, on_b_metrics) = (Metrics::new(), Metrics::new());
    let (a, b) = (
        node(&store, &url, &prefix, &on_a_metrics).await,
        node(&store, &url, &prefix, &on_b_metrics).await,
    );
    let mut on_a = subscribe(&a, "/events?paths=board/b1").await;
    let mut on_b = subscribe(&b, "/events?paths=board/b1").await;
    let mut elsewhere = subscribe(&b, "/events?paths=board/b2").await;
    // NATS subscriptions are set up by now (connect waits for them); a write on A:
    let (status, body) = push_doc(&a, "/push/board/b1", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let hash = body["hash"].as_str().unwrap().to_owned();
    let heard = next(&mut on_b, Duration::from_secs(1)).await;
    let change = data(&heard.expect("B hears of A's write within a second"));
    assert_eq!(
        change,
        json!({"namespace": null, "collection": "board", "path": "board/b1",
               "hash": hash, "timestamp": change["timestamp"]})
    );
    // A's own subscriber hears it once (from A itself, not again through NATS).
    let own = next(&mut on_a, Duration::from_secs(1)).await.unwrap();
    assert_eq!(data(&own)["hash"], hash.as_str());
    // A write on B reaches A; nobody hears of documents they did not name.
    let (status, body) = push_doc(&b, "/push/board/b1", json!({"n": 2}), Some(&hash)).await;
    assert_eq!(status, StatusCode::OK);
    let second = next(&mut on_a, Duration::from_secs(1)).await.unwrap();
    assert_eq!(data(&second)["hash"], body["hash"]);
    assert!(
        next(&mut on_a, Duration::from_millis(500)).await.is_none(),
        "once"
    );
    assert!(
        next(&mut elsewhere, Duration::from_millis(200))
            .await
            .is_none()
    );

    // Messages no node would send are not handed on: a change under another
    // collection's subject, an implausible hash, a payload that is not a change.
    let raw = async_nats::connect(url.as_str()).await.unwrap();
    let forged = |collection: &str, hash: &str| {
        serde_json::to_vec(
            &json!({"namespace": null, "generation": "", "collection": collection,
            "path": "board/b1", "hash": hash, "timestamp": 1}),
        )
        .unwrap()
    };
    let subject = format!("{prefix}.~.board");
    for payload in [
        forged("other", "ab12"),
        forged("board", "<b>not a hash</b>"),
        b"not json".to_vec(),
    ] {
        raw.publish(subject.clone(), payload.into()).await.unwrap();
    }
    // A well-formed one last, as a node would send it: it arrives, alone.
    raw.publish(subject, forged("board", "cafe01").into())
        .await
        .unwrap();
    raw.flush().await.unwrap();
    let heard = next(&mut on_a, Duration::from_secs(1)).await.unwrap();
    assert_eq!(data(&heard)["hash"], "cafe01");
    // Counted: A sent one change and received two (B's, and the well-formed one).
    let a_metrics = on_a_metrics.render();
    for line in [
        "starfish_live_changes_total{outcome=\"sent\"} 1\n",
        "starfish_live_changes_total{outcome=\"received\"} 2\n",
    ] {
        assert!(a_metrics.contains(line), "{line} in {a_metrics}");
    }
    assert!(
        on_b_metrics
            .render()
            .contains("starfish_live_changes_total{outcome=\"sent\"} 1\n")
    );
}

/// True when `stream` ends within `wait` (what was sent before still comes first).
async fn ends(stream: &mut BodyDataStream, wait: Duration) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(None) => return true,
            Ok(Some(_)) => {}
            Err(_) => return false,
        }
    }
}

#[tokio::test]
#[ignore = "needs nats-server: run by tests/nats/run.sh"]
async fn a_nats_outage_ends_every_stream_instead_of_leaving_a_silent_gap() {
    let port = free_port();
    let nats = OwnServer::nats(port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let store = DocStore::memory();
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let a = node(&store, &url, "outage.changes", &ma).await;
    let b = node(&store, &url, "outage.changes", &mb).await;
    let mut on_b = subscribe(&b, "/events?paths=board/o1").await;
    // NATS goes away: a write on A now cannot reach B's subscriber, so B's stream
    // must not stay open as if nothing happened.
    drop(nats);
    let (status, _) = push_doc(&a, "/push/board/o1", json!({"n": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        ends(&mut on_b, Duration::from_secs(5)).await,
        "B's stream ends when its NATS connection is cut"
    );
    // NATS is back: the client reconnects, pulls, and hears what comes next.
    let _nats = OwnServer::nats(port).await;
    let mut heard = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = subscribe(&b, "/events?paths=board/o1").await;
        let pulled = json_body(send(&a, get("/pull/board/o1")).await).await;
        let (status, body) = push_doc(
            &a,
            "/push/board/o1",
            json!({"n": 2}),
            pulled["hash"].as_str(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        if let Some(frame) = next(&mut again, Duration::from_secs(1)).await {
            heard = Some((data(&frame), body));
            break;
        }
    }
    let (frame, body) = heard.expect("B hears A's writes again once NATS is back");
    assert_eq!(frame["hash"], body["hash"]);
}

#[tokio::test]
#[ignore = "needs a NATS server: run by tests/nats/run.sh"]
async fn a_gap_in_a_nodes_numbered_changes_ends_the_streams() {
    let url = std::env::var("STARFISH_TEST_NATS_URL")
        .expect("STARFISH_TEST_NATS_URL is not set: run tests/nats/run.sh");
    let prefix = format!("gap{}.changes", std::process::id());
    let store = DocStore::memory();
    let b = node(&store, &url, &prefix, &Metrics::new()).await;
    let mut on_b = subscribe(&b, "/events?paths=board/g1").await;
    let raw = async_nats::connect(url.as_str()).await.unwrap();
    let subject = format!("{prefix}.~.board");
    let numbered = |seq: u64| {
        serde_json::to_vec(
            &json!({"namespace": null, "generation": "", "collection": "board",
            "path": "board/g1", "hash": format!("ab{seq:02}"), "timestamp": seq,
            "node": "elsewhere", "seq": seq}),
        )
        .unwrap()
    };
    // Changes 1 and 2 of another node arrive, then 4: number 3 was lost.
    for seq in [1, 2, 4] {
        raw.publish(subject.clone(), numbered(seq).into())
            .await
            .unwrap();
    }
    raw.flush().await.unwrap();
    for seq in [1, 2] {
        let frame = next(&mut on_b, Duration::from_secs(2)).await.unwrap();
        assert_eq!(data(&frame)["hash"], format!("ab{seq:02}"));
    }
    assert!(
        ends(&mut on_b, Duration::from_secs(2)).await,
        "a change that never came ends the stream"
    );
}
