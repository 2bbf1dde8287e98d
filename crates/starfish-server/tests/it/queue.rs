//! Queue messages: the reference's queuing plugin's subjects and payloads for each
//! accepted write to a collection with a `queue` setting, handed to a sink without
//! waiting; a queue-only collection publishes and stores nothing.

use crate::common;

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::queue::QueueSink;
use starfish_server::store::DocStore;
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::{Arc, Mutex};

const CONFIG: &str = r#"{
  "version": 1,
  "collections": [
    {"name": "posts", "storagePath": "posts/{postId}", "readRoles": ["public"], "writeRoles": ["public"],
     "queue": {"topic": "posts.changed", "subjectParam": "postId", "includeParams": true,
               "includeBody": true, "includeIdentity": true}},
    {"name": "plain", "storagePath": "plain/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "queue": {}},
    {"name": "quiet", "storagePath": "quiet/{id}", "readRoles": ["public"], "writeRoles": ["public"]},
    {"name": "orders", "storagePath": "orders/{shop}", "readRoles": ["public"], "writeRoles": ["public"],
     "appendOnly": {"persist": false, "requireAuthorSignature": false},
     "queue": {"subjectParam": "shop", "includeBody": true}}
  ],
  "namespaces": {"acme": {"collections": [
    {"name": "plain", "storagePath": "plain/{id}", "readRoles": ["public"], "writeRoles": ["public"],
     "queue": {"topic": "acme-plain"}}
  ]}}
}"#;

/// Keeps every message.
#[derive(Default)]
struct Kept(Mutex<Vec<(String, Value)>>);

impl QueueSink for Kept {
    fn publish(&self, subject: String, payload: Bytes) -> bool {
        let payload = serde_json::from_slice(&payload).unwrap();
        self.0.lock().unwrap().push((subject, payload));
        true
    }
}

#[tokio::test]
async fn each_write_to_a_queued_collection_is_one_message_as_the_reference_publishes_it() {
    let store = DocStore::memory();
    let kept = Arc::new(Kept::default());
    let app = create_sync_router(
        SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store.clone())
            .with_clock(Arc::new(ManualClock::new(T0)))
            .with_queue(kept.clone()),
    )
    .unwrap();
    let (_, post) = push_doc(&app, "/push/posts/p1", json!({"title": "hi"}), None).await;
    push_doc(&app, "/push/plain/x", json!({"a": 1}), None).await;
    push_doc(&app, "/push/quiet/x", json!({"a": 1}), None).await;
    push_doc(&app, "/acme/push/plain/y", json!({"b": 2}), None).await;
    let res = send(
        &app,
        push("/push/orders/shop-1", &json!({"data": {"sku": 7}})),
    )
    .await;
    let order = json_body(res).await;
    // Refused writes publish nothing.
    push_doc(
        &app,
        "/push/posts/p1",
        json!({"title": "stale"}),
        Some("nope"),
    )
    .await;

    let messages = kept.0.lock().unwrap().clone();
    let hash = |v: &Value| v["hash"].as_str().unwrap().to_owned();
    assert_eq!(
        messages,
        vec![
            (
                "posts.changed.p1".into(),
                json!({"collection": "posts", "hash": hash(&post),
                "timestamp": T0, "params": {"postId": "p1"}, "body": {"title": "hi"}})
            ),
            (
                "plain".into(),
                json!({"collection": "plain", "hash": messages[1].1["hash"], "timestamp": T0})
            ),
            (
                "acme-plain".into(),
                json!({"collection": "plain", "hash": messages[2].1["hash"],
                "timestamp": T0, "namespace": "acme"})
            ),
            (
                "orders.shop-1".into(),
                json!({"collection": "orders", "hash": hash(&order),
                "timestamp": T0, "body": {"sku": 7}})
            ),
        ]
    );
    // The queue-only collection stored nothing: only the three documents are there.
    assert!(stored(&store, "orders/shop-1").await.is_none());
    assert!(stored(&store, "posts/p1").await.is_some());
}
