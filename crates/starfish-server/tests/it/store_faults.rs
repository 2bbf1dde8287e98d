//! Store faults: the client gets `503 {"error":"Storage unavailable"}`, nothing
//! partial is ever visible, and the server serves again by itself once the store does.

use crate::common;

use async_trait::async_trait;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::*;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use serde_json::{Value, json};
use starfish_server::auth::ManualClock;
use starfish_server::store::{Capabilities, DocStore};
use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// An in-memory store whose reads, writes or multipart parts can be made to fail.
#[derive(Debug, Default)]
struct Faulty {
    inner: InMemory,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
    fail_parts: Arc<AtomicBool>,
    /// A conditional write takes effect and its answer is lost (a connection cut
    /// once the request was out): the caller gets an error.
    answer_lost: AtomicBool,
}

impl std::fmt::Display for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Faulty")
    }
}

fn fault(what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "Faulty",
        source: format!("injected {what} fault").into(),
    }
}

#[async_trait]
impl ObjectStore for Faulty {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(fault("write"));
        }
        if self.answer_lost.load(Ordering::SeqCst) && opts.mode != object_store::PutMode::Overwrite
        {
            self.inner.put_opts(location, payload, opts).await?;
            return Err(fault("answer"));
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(fault("write"));
        }
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            upload,
            fail: self.fail_parts.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(fault("read"));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(fault("list")) }).boxed();
        }
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

/// A multipart upload whose parts fail while `fail` is set.
#[derive(Debug)]
struct FaultyUpload {
    upload: Box<dyn MultipartUpload>,
    fail: Arc<AtomicBool>,
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        if self.fail.load(Ordering::SeqCst) {
            return Box::pin(async { Err(fault("part")) });
        }
        self.upload.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.upload.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.upload.abort().await
    }
}

const CONFIG: &str = r#"{"version": 1, "collections": [
  {"name": "docs", "storagePath": "docs/{id}", "readRoles": ["public"], "writeRoles": ["public"]},
  {"name": "log", "storagePath": "log/{id}", "readRoles": ["public"], "writeRoles": ["public"],
   "appendOnly": {"type": "by_timestamp", "requireAuthorSignature": false}},
  {"name": "files", "storagePath": "files/{id}", "readRoles": ["public"], "writeRoles": ["public"],
   "allowedMimeTypes": ["*/*"], "maxBodyBytes": 20000000}
]}"#;

fn setup() -> (Arc<Faulty>, axum::Router) {
    let faulty = Arc::new(Faulty::default());
    let caps = Capabilities {
        conditional_update: true,
        attributes: true,
    };
    let store = DocStore::new(faulty.clone(), caps);
    let options = SyncOptions::new(SyncConfig::from_json_str(CONFIG).unwrap(), store)
        .with_clock(Arc::new(ManualClock::new(T0)));
    (faulty, create_sync_router(options).unwrap())
}

async fn all_objects(store: &Faulty) -> Vec<String> {
    let metas: Vec<ObjectMeta> = store.inner.list(None).try_collect().await.unwrap();
    let mut keys: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
    keys.sort();
    keys
}

fn upload(uri: &str, bytes: Vec<u8>) -> Request<axum::body::Body> {
    Request::post(uri)
        .header("content-type", "application/octet-stream")
        .header("content-length", bytes.len())
        .body(axum::body::Body::from(Bytes::from(bytes)))
        .unwrap()
}

#[tokio::test]
async fn failed_writes_and_reads_answer_503_and_leave_nothing_partial() {
    let (store, app) = setup();
    let (status, first) = push_doc(&app, "/push/docs/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::OK);
    let base = first["hash"].as_str().unwrap().to_owned();
    let before = all_objects(&store).await;

    store.fail_writes.store(true, Ordering::SeqCst);
    let (status, body) = push_doc(&app, "/push/docs/a", json!({"v": 2}), Some(&base)).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "Storage unavailable"})
        )
    );
    let res = send(&app, push("/push/log/l", &json!({"data": {"m": 1}}))).await;
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable").await;
    assert_eq!(all_objects(&store).await, before, "nothing written");
    // Reads still work while writes fail, and show the last acknowledged write.
    let pulled = json_body(send(&app, get("/pull/docs/a")).await).await;
    assert_eq!(pulled["data"], json!({"v": 1}));

    store.fail_reads.store(true, Ordering::SeqCst);
    let res = send(&app, get("/pull/docs/a")).await;
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable").await;

    // The store comes back: so does the service, with no restart.
    store.fail_reads.store(false, Ordering::SeqCst);
    store.fail_writes.store(false, Ordering::SeqCst);
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"v": 2}), Some(&base)).await;
    assert_eq!(status, StatusCode::OK);
    let pulled = json_body(send(&app, get("/pull/docs/a")).await).await;
    assert_eq!(pulled["data"], json!({"v": 2}));
}

#[tokio::test]
async fn a_failed_multipart_upload_leaves_the_previous_blob_intact() {
    let (store, app) = setup();
    let old = vec![7u8; 1000];
    assert_eq!(
        send(&app, upload("/push/files/f", old.clone()))
            .await
            .status(),
        StatusCode::OK
    );
    let before = all_objects(&store).await;
    // 12 MiB: a multipart upload whose parts fail.
    store.fail_parts.store(true, Ordering::SeqCst);
    let res = send(&app, upload("/push/files/f", vec![9u8; 12 << 20])).await;
    assert_error(res, StatusCode::SERVICE_UNAVAILABLE, "Storage unavailable").await;
    assert_eq!(all_objects(&store).await, before, "no partial object");
    let res = send(&app, get("/pull/files/f")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body_bytes(res).await, old);
    store.fail_parts.store(false, Ordering::SeqCst);
    let res = send(&app, upload("/push/files/f", vec![9u8; 12 << 20])).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_is_unknown_never_refused_nor_made_twice() {
    let (store, app) = setup();
    // A write that took effect but whose answer was lost: 503 (the outcome is not
    // known), never 409; the client pulls and finds it.
    store.answer_lost.store(true, Ordering::SeqCst);
    let (status, body) = push_doc(&app, "/push/docs/a", json!({"v": 1}), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    store.answer_lost.store(false, Ordering::SeqCst);
    let pulled = json_body(send(&app, get("/pull/docs/a")).await).await;
    assert_eq!(pulled["data"], json!({"v": 1}));
    let base = pulled["hash"].as_str().unwrap().to_owned();
    store.answer_lost.store(true, Ordering::SeqCst);
    let (status, _) = push_doc(&app, "/push/docs/a", json!({"v": 2}), Some(&base)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // Appends whose answers were lost: each element at most once, in order.
    for i in 0..5 {
        let res = send(&app, push("/push/log/l", &json!({"data": {"i": i}}))).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "append {i}");
    }
    store.answer_lost.store(false, Ordering::SeqCst);
    let pulled = json_body(send(&app, get("/pull/docs/a")).await).await;
    assert_eq!(pulled["data"], json!({"v": 2}));
    let log = json_body(send(&app, get("/pull/log/l?checkpoint=0")).await).await;
    let items: Vec<Value> = log["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"]["i"].clone())
        .collect();
    let mut seen = items.clone();
    seen.dedup();
    assert_eq!(seen, items, "no element twice");
    let ordered: Vec<Value> = (0..5)
        .map(|i| json!(i))
        .filter(|i| items.contains(i))
        .collect();
    assert_eq!(items, ordered, "in order");
}
