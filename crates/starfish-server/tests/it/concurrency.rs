//! Compare-and-swap under concurrency: on one router, and across two routers that
//! share only the object store (as two server processes would).

use crate::common;

use axum::http::StatusCode;
use common::*;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use serde_json::json;
use starfish_server::store::{Capabilities, DocStore};
use std::sync::Arc;
use std::time::Duration;

async fn same_base_hash_race(store: DocStore) {
    let app = router(store);
    let (_, first) = push_doc(&app, "/push/docs/race", json!({"n": 0}), None).await;
    let base = first["hash"].as_str().unwrap().to_owned();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            let base = base.clone();
            tokio::spawn(async move {
                push_doc(&app, "/push/docs/race", json!({"n": i + 1}), Some(&base)).await
            })
        })
        .collect();
    let mut ok = 0;
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::CONFLICT, body) => {
                assert_eq!(body, json!({"error": "hash_mismatch"}));
                conflicts += 1;
            }
            (s, body) => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!((ok, conflicts), (1, 7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_pushes_with_one_base_hash_on_memory_give_one_winner() {
    same_base_hash_race(DocStore::memory()).await;
    // With store latency every racer reads before anyone writes: only the store's
    // conditional put can pick a single winner.
    let slow = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_get_per_call: Duration::from_millis(20),
            ..ThrottleConfig::default()
        },
    );
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    same_base_hash_race(DocStore::new(Arc::new(slow), caps)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_pushes_with_one_base_hash_on_the_filesystem_give_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    same_base_hash_race(DocStore::local(dir.path()).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_creates_on_the_filesystem_give_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(DocStore::local(dir.path()).unwrap());
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                push_doc(&app, "/push/docs/new", json!({"n": i}), None)
                    .await
                    .0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::OK).count(), 1);
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7
    );
}

/// Pull, add one, push with the pulled hash; retry on 409. Returns accepted pushes.
async fn increment_loop(app: axum::Router, increments: usize) -> usize {
    let mut done = 0;
    while done < increments {
        let res = send(&app, get("/pull/shared/counter")).await;
        let body = json_body(res).await;
        let n = body["data"]["n"].as_u64().unwrap_or(0);
        let hash = body["hash"].as_str().unwrap().to_owned();
        let base = if hash.is_empty() {
            None
        } else {
            Some(hash.as_str())
        };
        let (status, _) = push_doc(&app, "/push/shared/counter", json!({"n": n + 1}), base).await;
        match status {
            StatusCode::OK => done += 1,
            StatusCode::CONFLICT => tokio::task::yield_now().await,
            s => panic!("unexpected {s}"),
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_sharing_only_the_store_lose_no_update() {
    // One object store; two routers, each with its own DocStore (own lock stripes,
    // own everything): the only thing they share is the InMemory store, so no update
    // may be lost only if compare-and-swap rests on the store's conditional put.
    let shared: Arc<InMemory> = Arc::new(InMemory::new());
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    let node_a = router(DocStore::new(shared.clone(), caps));
    let node_b = router(DocStore::new(shared, caps));
    const WORKERS_PER_NODE: usize = 4;
    const INCREMENTS: usize = 25;
    let mut tasks = Vec::new();
    for _ in 0..WORKERS_PER_NODE {
        tasks.push(tokio::spawn(increment_loop(node_a.clone(), INCREMENTS)));
        tasks.push(tokio::spawn(increment_loop(node_b.clone(), INCREMENTS)));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    assert_eq!(accepted, 2 * WORKERS_PER_NODE * INCREMENTS);
    for node in [&node_a, &node_b] {
        let body = json_body(send(node, get("/pull/shared/counter")).await).await;
        assert_eq!(body["data"]["n"].as_u64().unwrap() as usize, accepted);
    }
}
