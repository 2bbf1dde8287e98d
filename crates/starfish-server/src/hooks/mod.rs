//! The `after_write` hook: told once about every accepted write, never its data.
//! Metrics, live change feeds and cache invalidation hang on it.

use std::sync::Arc;

/// What kind of write was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WriteAction {
    /// A JSON document replaced or created.
    Push,
    /// An element appended to a log.
    Append,
    /// A blob uploaded.
    Blob,
}

/// One accepted write. It carries no document data, so end-to-end encryption holds
/// for whatever consumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteEvent {
    /// The namespace, `None` at the root.
    pub namespace: Option<Arc<str>>,
    /// The collection's name.
    pub collection: Arc<str>,
    /// The object key written.
    pub key: Arc<str>,
    /// The new hash (document, log or blob).
    pub hash: String,
    /// The write's timestamp in ms.
    pub timestamp: u64,
    /// What was written.
    pub action: WriteAction,
    /// Who wrote it, `None` for anonymous writes.
    pub identity: Option<Arc<str>>,
}

/// Called once per accepted write, after it is stored, never for a refused one. It
/// runs on the request's task, so it should only hand the event on (a channel, a
/// counter); set it with [`crate::app::state::SyncOptions::with_after_write`].
pub trait AfterWrite: Send + Sync + 'static {
    /// One write was accepted.
    fn after_write(&self, event: &WriteEvent);
}

/// A dependency the router needs besides its store (Redis, NATS): `GET
/// /health/ready` answers 503 while its check fails.
#[async_trait::async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// `Ok` when the dependency answers; the error is logged, not shown.
    async fn check(&self) -> Result<(), String>;
}
