//! Quotas under the concurrency users bring: tens of creates at once on one node and
//! across nodes never acknowledge, nor store, one document past the quota; every
//! refusal is `507 {"error":"Quota exceeded"}` and comes at once (no `408`, no `503`
//! from contention on the usage record).

use crate::common;

use async_trait::async_trait;
use axum::Router;
use axum::http::StatusCode;
use common::*;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use serde_json::{Value, json};
use starfish_server::store::{Capabilities, DocStore};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::time::Duration;

const ADMIN: &str = "admin-secret-0123456789";
/// Far below the request timeout: a write that waits this long is a stall.
const PATIENCE: Duration = Duration::from_secs(10);

fn config() -> SyncConfig {
    SyncConfig::from_value(json!({
        "version": 1,
        "collections": [],
        "namespaceTemplates": {"team": {
            "collections": [{"name": "docs", "storagePath": "docs/{id}",
                             "readRoles": ["public"], "writeRoles": ["public"]}],
            "quota": {"maxDocuments": 5}
        }}
    }))
    .unwrap()
}

fn node(store: &DocStore) -> Router {
    create_sync_router(SyncOptions::new(config(), store.clone()).with_admin_key(ADMIN)).unwrap()
}

async fn create_namespace(app: &Router, name: &str) {
    let (status, body) = call(
        app,
        req(
            "POST",
            "/_starfish/admin/namespaces",
            Some(ADMIN),
            Some(json!({"name": name, "template": "team"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Documents stored under `prefix` (every object there is a document here).
async fn stored_documents(store: &DocStore, prefix: &str) -> usize {
    let mut listing = store.inner().list(None);
    let mut n = 0;
    while let Some(meta) = listing.next().await {
        if meta.unwrap().location.as_ref().starts_with(prefix) {
            n += 1;
        }
    }
    n
}

/// `count` creates of `/<ns>/push/docs/c<first+i>` at once, sent to `nodes` in turn:
/// how many were acknowledged. Panics on any answer but 200 and 507, or a stall.
async fn concurrent_creates(nodes: &[Router], ns: &str, first: usize, count: usize) -> usize {
    let mut tasks = Vec::new();
    for i in first..first + count {
        let app = nodes[i % nodes.len()].clone();
        let uri = format!("/{ns}/push/docs/c{i}");
        tasks.push(tokio::spawn(async move {
            let body = json!({"data": {"i": i}, "baseHash": null});
            let res = tokio::time::timeout(PATIENCE, send(&app, push(&uri, &body)))
                .await
                .unwrap_or_else(|_| panic!("{uri} stalled"));
            let status = res.status();
            let body = json_body(res).await;
            (status, body)
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            (StatusCode::OK, _) => ok += 1,
            (StatusCode::INSUFFICIENT_STORAGE, body) => {
                assert_eq!(body, json!({"error": "Quota exceeded"}));
            }
            (status, body) => panic!("{status} {body}"),
        }
    }
    ok
}

async fn rounds(nodes: &[Router], store: &DocStore, tag: &str, before: usize, writers: usize) {
    for round in 0..8 {
        let ns = format!("{tag}{round}");
        create_namespace(&nodes[0], &ns).await;
        let first = concurrent_creates(&nodes[..1], &ns, 0, before).await;
        assert_eq!(first, before, "{ns}: the first writes fit");
        let ok = concurrent_creates(nodes, &ns, before, writers).await;
        let stored = stored_documents(store, &format!("_starfish/t/{ns}/")).await;
        assert_eq!(
            stored,
            before + ok,
            "{ns}: every acknowledged create is stored"
        );
        assert_eq!(
            before + ok,
            5,
            "{ns}: exactly the quota is acknowledged (nothing fails here but the quota)"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_creates_on_one_node_never_pass_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = DocStore::local_durable(dir.path()).unwrap();
    let app = node(&store);
    store.flush().await.unwrap();
    for before in [0, 1, 3] {
        rounds(
            std::slice::from_ref(&app),
            &store,
            &format!("fs{before}n"),
            before,
            10,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_creates_on_one_node_in_memory_never_pass_the_quota() {
    let store = DocStore::memory();
    let app = node(&store);
    rounds(std::slice::from_ref(&app), &store, "mem", 0, 10).await;
}

/// An in-memory store that answers after a short random delay, as a remote one does:
/// the window between a read and its conditional write is wide.
#[derive(Debug, Default)]
struct Remote {
    inner: InMemory,
    /// Documents' writes take effect and their answers are lost (the caller gets
    /// an error).
    answer_lost: std::sync::atomic::AtomicBool,
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Remote")
    }
}

async fn latency() {
    let mut b = [0u8; 1];
    getrandom::fill(&mut b).unwrap();
    tokio::time::sleep(Duration::from_micros(500 + 10 * u64::from(b[0]))).await;
}

#[async_trait]
impl ObjectStore for Remote {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        latency().await;
        let document = location.as_ref().contains("/docs/");
        let out = self.inner.put_opts(location, payload, opts).await;
        latency().await;
        if document && self.answer_lost.load(std::sync::atomic::Ordering::SeqCst) {
            out?;
            return Err(object_store::Error::Generic {
                store: "Remote",
                source: "the answer was lost".into(),
            });
        }
        out
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        latency().await;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_creates_across_three_nodes_never_pass_the_quota() {
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    let store = DocStore::new(Arc::new(Remote::default()), caps);
    let nodes: Vec<Router> = (0..3).map(|_| node(&store)).collect();
    rounds(&nodes, &store, "s3n", 0, 20).await;
    rounds(&nodes, &store, "s3m", 2, 20).await;
}

/// Every node's answer to the namespace admin view after the races, once each node
/// has written back: the record agrees with the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_usage_record_agrees_with_the_store_after_the_races() {
    let store = DocStore::memory();
    let nodes: Vec<Router> = (0..2).map(|_| node(&store)).collect();
    create_namespace(&nodes[0], "agree").await;
    let ok = concurrent_creates(&nodes, "agree", 0, 20).await;
    assert_eq!(ok, 5);
    // Each node's view writes back what that node spent; a node whose last write
    // was accepted holds its spend in its lease (still reserved, so the quota holds)
    // until it writes back. Once every node has, every view agrees with the store.
    for app in &nodes {
        let (status, _): (StatusCode, Value) = call(
            app,
            req(
                "GET",
                "/_starfish/admin/namespaces/agree",
                Some(ADMIN),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    for app in &nodes {
        let (status, item): (StatusCode, Value) = call(
            app,
            req(
                "GET",
                "/_starfish/admin/namespaces/agree",
                Some(ADMIN),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(item["quota"]["documents"], json!(5), "{item}");
    }
}

/// Eight nodes renewing their leases on one usage record at once: contention on the
/// record is retried inside the server, never answered `503`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_on_the_usage_record_is_not_an_error() {
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    let store = DocStore::new(Arc::new(Remote::default()), caps);
    let nodes: Vec<Router> = (0..8).map(|_| node(&store)).collect();
    for round in 0..3 {
        let ns = format!("busy{round}");
        create_namespace(&nodes[0], &ns).await;
        let ok = concurrent_creates(&nodes, &ns, 0, 40).await;
        assert_eq!(ok, 5, "{ns}");
        let stored = stored_documents(&store, &format!("_starfish/t/{ns}/")).await;
        assert_eq!(stored, 5, "{ns}");
    }
}

/// A node that dies between a write and its write-back takes what it spent with it;
/// once its lease lapses, the others must not hand that share out again.
#[tokio::test]
async fn a_node_that_dies_before_writing_back_does_not_open_room_past_the_quota() {
    let store = DocStore::memory();
    let clock = Arc::new(starfish_server::auth::ManualClock::new(T0));
    let node_at = |clock: &Arc<starfish_server::auth::ManualClock>| {
        create_sync_router(
            SyncOptions::new(config(), store.clone())
                .with_admin_key(ADMIN)
                .with_clock(clock.clone()),
        )
        .unwrap()
    };
    let a = node_at(&clock);
    create_namespace(&a, "dies").await;
    // Node A creates two documents, the second within a second of the first (not yet
    // written back), and dies.
    assert_eq!(
        concurrent_creates(std::slice::from_ref(&a), "dies", 0, 1).await,
        1
    );
    clock.advance(100);
    assert_eq!(
        concurrent_creates(std::slice::from_ref(&a), "dies", 1, 1).await,
        1
    );
    drop(a);
    // Its lease lapses; node B writes all it can.
    clock.advance(60_000);
    let b = node_at(&clock);
    let ok = concurrent_creates(std::slice::from_ref(&b), "dies", 2, 10).await;
    let stored = stored_documents(&store, "_starfish/t/dies/").await;
    assert_eq!(stored, 2 + ok);
    assert!(stored <= 5, "{stored} documents stored, quota 5");
}

/// A node that slept past its lease comes back: its lapsed lease, counted as spent
/// meanwhile, gives way to its own count, so the record ends exact.
#[tokio::test]
async fn a_node_that_sleeps_past_its_lease_comes_back_to_an_exact_record() {
    let store = DocStore::memory();
    let clock = Arc::new(starfish_server::auth::ManualClock::new(T0));
    let node_at = || {
        create_sync_router(
            SyncOptions::new(config(), store.clone())
                .with_admin_key(ADMIN)
                .with_clock(clock.clone()),
        )
        .unwrap()
    };
    let (a, b) = (node_at(), node_at());
    create_namespace(&a, "sleeps").await;
    assert_eq!(
        concurrent_creates(std::slice::from_ref(&a), "sleeps", 0, 1).await,
        1
    );
    clock.advance(100);
    assert_eq!(
        concurrent_creates(std::slice::from_ref(&a), "sleeps", 1, 1).await,
        1
    );
    // A sleeps past its lease; B writes (and counts A's lapsed lease as spent).
    clock.advance(60_000);
    let ok_b = concurrent_creates(std::slice::from_ref(&b), "sleeps", 2, 2).await;
    assert_eq!(ok_b, 2);
    // A wakes up and writes once more; then every node's spending is written back.
    clock.advance(2_000);
    let ok_a = concurrent_creates(std::slice::from_ref(&a), "sleeps", 4, 1).await;
    let stored = stored_documents(&store, "_starfish/t/sleeps/").await as u64;
    assert_eq!(stored, 4 + ok_a as u64);
    // (Each node's view writes back its own spending first: after both, all of it.)
    let mut last = Value::Null;
    for app in [&b, &a] {
        let (status, item) = call(
            app,
            req(
                "GET",
                "/_starfish/admin/namespaces/sleeps",
                Some(ADMIN),
                None,
            ),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        last = item;
    }
    assert_eq!(last["quota"]["documents"], json!(stored), "{last}");
}

/// A create whose answer was lost (503: it may have been made) is counted: the
/// next one does not pass the quota.
#[tokio::test]
async fn a_create_whose_answer_was_lost_still_counts() {
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    let remote = Arc::new(Remote::default());
    let store = DocStore::new(remote.clone(), caps);
    let app = node(&store);
    create_namespace(&app, "lost").await;
    assert_eq!(
        concurrent_creates(std::slice::from_ref(&app), "lost", 0, 4).await,
        4
    );
    remote
        .answer_lost
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let res = send(
        &app,
        push(
            "/lost/push/docs/c4",
            &json!({"data": {"i": 4}, "baseHash": null}),
        ),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    remote
        .answer_lost
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        stored_documents(&store, "_starfish/t/lost/").await,
        5,
        "it was made"
    );
    let ok = concurrent_creates(std::slice::from_ref(&app), "lost", 5, 3).await;
    assert_eq!(ok, 0, "the quota of 5 is full");
    assert_eq!(stored_documents(&store, "_starfish/t/lost/").await, 5);
}
