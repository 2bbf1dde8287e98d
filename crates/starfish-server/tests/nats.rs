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

/// JetStream queue messages (`--queue-stream`): a consumer that was down through
/// 1,000 writes and a restart of NATS (killed, its stream on disk) receives every
/// write's message, once each. Writes never waited on NATS meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs nats-server: run by tests/nats/run.sh"]
async fn a_jetstream_consumer_down_through_writes_and_a_nats_restart_gets_each_once() {
    use async_nats::jetstream::consumer::{self, pull};
    use starfish_server::queue::{JetStreamSettings, NatsQueue};

    const WRITES: usize = 1000;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let args = |p: &str| -> Vec<String> {
        [
            "-a",
            "127.0.0.1",
            "-p",
            p,
            "-js",
            "-sd",
            dir.path().to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let p = port.to_string();
    let start = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        OwnServer::start("nats-server", &refs, port).await
    };
    let mut nats = start(args(&p)).await;
    let url = format!("nats://127.0.0.1:{port}");
    let settings = JetStreamSettings {
        stream: "STARFISH_QUEUE".into(),
        subjects: vec!["items".into(), "items.>".into()],
    };
    let queue = NatsQueue::connect(&url, Some(settings)).await.unwrap();
    // The consumer exists (durable) but reads nothing until the end.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("STARFISH_QUEUE").await.unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some("late".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();

    let config = SyncConfig::from_value(json!({"version": 1, "collections": [
        {"name": "items", "storagePath": "items/{id}", "readRoles": ["public"],
         "writeRoles": ["public"], "queue": {"subjectParam": "id"}}]}))
    .unwrap();
    let app = create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_queue(Arc::new(queue)),
    )
    .unwrap();
    for i in 0..WRITES {
        if i == 400 {
            nats.kill(); // NATS dies mid-stream, its stream on disk.
        }
        if i == 700 {
            nats = start(args(&p)).await;
        }
        let body = json!({"data": {"i": i}, "baseHash": null});
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            send(&app, push(&format!("/push/items/i{i}"), &body)),
        )
        .await
        .expect("a write never waits on NATS");
        assert_eq!(res.status(), StatusCode::OK);
    }

    // The consumer comes back and reads everything.
    let consumer: async_nats::jetstream::consumer::PullConsumer =
        stream.get_consumer("late").await.unwrap();
    let mut seen = std::collections::HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < WRITES && tokio::time::Instant::now() < deadline {
        let mut batch = consumer
            .fetch()
            .max_messages(200)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            let subject = message.subject.to_string();
            *seen.entry(subject).or_insert(0) += 1;
            message.ack().await.unwrap();
        }
    }
    let mut info = js.get_stream("STARFISH_QUEUE").await.unwrap();
    let stored = info.info().await.unwrap().state.messages;
    assert_eq!(
        seen.len(),
        WRITES,
        "every write's message arrived ({stored} in the stream)"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(stored, WRITES as u64, "the stream holds each once");
    drop(nats);
}

/// The audit trail on NATS: one subject per namespace (`~` for the root), so each
/// tenant's consumer hears its own records only.
#[tokio::test]
#[ignore = "needs nats-server: run by tests/nats/run.sh"]
async fn audit_records_reach_nats_on_a_subject_per_namespace() {
    use starfish_server::audit::{AuditOptions, NatsAudit};
    let port = free_port();
    let _nats = OwnServer::nats(port).await;
    let url = format!("nats://127.0.0.1:{port}");
    let client = async_nats::connect(&url).await.unwrap();
    let mut acme = client.subscribe("starfish.audit.acme").await.unwrap();
    let mut root = client.subscribe("starfish.audit.~").await.unwrap();
    client.flush().await.unwrap();
    let sink = NatsAudit::connect(&url, None).await.unwrap();
    let config = SyncConfig::from_value(json!({"version": 1,
        "collections": [{"name": "board", "storagePath": "board/{id}", "readRoles": ["public"], "writeRoles": ["public"]}],
        "namespaces": {"acme": {"collections": [
            {"name": "notes", "storagePath": "users/{identity}/notes", "readRoles": ["self"], "writeRoles": ["self"]}]}}}))
    .unwrap();
    let app = create_sync_router(
        SyncOptions::new(config, DocStore::memory())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_audit(AuditOptions::new(Arc::new(sink), "n1")),
    )
    .unwrap();
    push_doc(&app, "/push/board/b1", json!({"t": 1}), None).await;
    let res = send(&app, get("/acme/pull/users/someone/notes")).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let on_root = next_record(&mut root).await;
    assert_eq!(
        (on_root["action"].as_str(), on_root["statusCode"].as_u64()),
        (Some("push"), Some(200))
    );
    let on_acme = next_record(&mut acme).await;
    assert_eq!(on_acme["namespace"], "acme");
    assert_eq!(on_acme["statusCode"], 403);
    assert_eq!(on_acme["documentKey"], "users/someone/notes");
}

/// The next message of `sub`, as JSON (within 5 s).
async fn next_record(sub: &mut async_nats::Subscriber) -> Value {
    let message = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    serde_json::from_slice(&message.payload).unwrap()
}

/// A stream that drops on node A and comes back on node B with A's last id hears
/// every change it missed, whichever node accepted it: B replays what it heard
/// through NATS from a little before that id's time.
#[tokio::test]
#[ignore = "needs nats-server: run by tests/nats/run.sh"]
async fn a_stream_resumed_on_another_node_hears_what_it_missed() {
    let url = std::env::var("STARFISH_TEST_NATS_URL")
        .expect("STARFISH_TEST_NATS_URL is not set: run tests/nats/run.sh");
    let prefix = format!("test{}.resume", std::process::id());
    let store = DocStore::memory();
    // The nodes' clocks agree; they started ten seconds before the stream opened.
    let clock = ManualClock::new(T0);
    let node = |clock: ManualClock| {
        let (store, url, prefix) = (store.clone(), url.clone(), prefix.clone());
        async move {
            let config = SyncConfig::from_value(json!({
                "version": 1,
                "collections": [{"name": "board", "storagePath": "board/{id}",
                                 "readRoles": ["public"], "writeRoles": ["public"]}]
            }))
            .unwrap();
            let feed = NatsFeed::connect(&url, Some(&prefix)).await.unwrap();
            create_sync_router(
                SyncOptions::new(config, store)
                    .with_clock(Arc::new(clock))
                    .with_change_feed(Arc::new(feed)),
            )
            .unwrap()
        }
    };
    let (a, b) = (node(clock.clone()).await, node(clock.clone()).await);
    clock.set(T0 + 10_000);
    let uri = "/events?paths=board/b1";
    let res = send(&a, get(uri)).await;
    let mut on_a = res.into_body().into_data_stream();
    let opening = next(&mut on_a, Duration::from_secs(5)).await.unwrap();
    let id = opening
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap()
        .to_owned();
    drop(on_a);
    // Meanwhile, writes on both nodes; B hears them all (its own, A's by NATS).
    let mut watch_b = subscribe(&b, uri).await;
    let mut base: Option<String> = None;
    let mut written = Vec::new();
    for (n, node) in [&a, &b, &a, &b, &a].into_iter().enumerate() {
        let (status, body) =
            push_doc(node, "/push/board/b1", json!({"n": n}), base.as_deref()).await;
        assert_eq!(status, StatusCode::OK);
        base = body["hash"].as_str().map(str::to_owned);
        written.extend(base.clone());
        let heard = next(&mut watch_b, Duration::from_secs(2))
            .await
            .expect("B hears it");
        assert_eq!(data(&heard)["hash"], body["hash"]);
    }
    let mut req = get(uri);
    req.headers_mut()
        .insert("last-event-id", id.parse().unwrap());
    let res = send(&b, req).await;
    let mut on_b = res.into_body().into_data_stream();
    let opening = next(&mut on_b, Duration::from_secs(5)).await.unwrap();
    let replayed: Vec<&str> = opening
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|v| v["hash"].as_str().map(str::to_owned))
        .map(|h| {
            written
                .iter()
                .find(|w| **w == h)
                .map(String::as_str)
                .unwrap()
        })
        .collect();
    assert_eq!(
        replayed,
        written.iter().map(String::as_str).collect::<Vec<_>>()
    );
    // An id from further ahead than B's own time cannot be matched: pull.
    let ahead = id.replacen(&(T0 + 10_000).to_string(), &(T0 + 100_000).to_string(), 1);
    let mut req = get(uri);
    req.headers_mut()
        .insert("last-event-id", ahead.parse().unwrap());
    let res = send(&b, req).await;
    let mut told = res.into_body().into_data_stream();
    let opening = next(&mut told, Duration::from_secs(5)).await.unwrap();
    assert!(opening.contains("event: pull"), "{opening}");
}
