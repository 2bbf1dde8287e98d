//! The store wrapper that times every call to the backend, for the server's metrics,
//! with a tracing span around it.

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Where a metered store ([`super::DocStore::metered`]) reports its calls (the
/// server's metrics keep them as a histogram).
pub trait StoreCalls: Send + Sync + std::fmt::Debug {
    /// One call to the backend ended: its operation (`get`, `head`, `revalidate`,
    /// `put`, `put_multipart`, `list_with_delimiter`, `copy`, `rename`), its outcome
    /// (`ok`, `not_modified`, `error`) and how long it took.
    fn store_call(&self, op: &'static str, outcome: &'static str, elapsed: Duration);
}

/// An `ObjectStore` that times every call into a [`StoreCalls`] and wraps it in a
/// `store` tracing span (op and key), so store latency shows in metrics and traces.
#[derive(Debug)]
pub(super) struct Metered {
    inner: Arc<dyn ObjectStore>,
    calls: Arc<dyn StoreCalls>,
}

impl Metered {
    pub(super) fn new(inner: Arc<dyn ObjectStore>, calls: Arc<dyn StoreCalls>) -> Self {
        Self { inner, calls }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        location: &Path,
        call: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = Instant::now();
        let span = tracing::debug_span!("store", op, key = %location);
        let out = call.instrument(span).await;
        // "Not found" and a lost compare-and-swap are answers, not failures; "not
        // modified" (a revalidated cache entry still current) is told apart.
        let outcome = match &out {
            Ok(_) => "ok",
            Err(object_store::Error::NotModified { .. }) => "not_modified",
            Err(
                object_store::Error::NotFound { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => "ok",
            Err(_) => "error",
        };
        self.calls.store_call(op, outcome, started.elapsed());
        out
    }
}

impl std::fmt::Display for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Metered {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.timed(
            "put",
            location,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.timed(
            "put_multipart",
            location,
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = match (options.head, &options.if_none_match) {
            (true, _) => "head",
            // A cached document confirmed with the store.
            (false, Some(_)) => "revalidate",
            (false, None) => "get",
        };
        self.timed(op, location, self.inner.get_opts(location, options))
            .await
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

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let location = prefix.cloned().unwrap_or_default();
        self.timed(
            "list_with_delimiter",
            &location,
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.timed("copy", to, self.inner.copy_opts(from, to, options))
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.timed("rename", to, self.inner.rename_opts(from, to, options))
            .await
    }
}
