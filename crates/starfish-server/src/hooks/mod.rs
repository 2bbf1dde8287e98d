//! The `after_write` hook: told once about every accepted write. Metrics, live
//! change feeds, queues and cache invalidation hang on it. It carries the write's
//! path parameters, and its data only to a hook that asks for it
//! ([`AfterWrite::wants_body`]), as the reference's `WriteEvent` does. And
//! [`plugin`]: the reference's server plugins, hooks at named places of the
//! pipeline.

pub mod plugin;

pub use plugin::{
    HookContext, HookFuture, Plugin, Plugins, PullAnswer, PullDecision, PushContext, PushDecision,
};

use serde_json::{Map, Value};
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

/// One accepted write. It carries the document's data only to hooks that ask for
/// it, so end-to-end encryption holds for the others.
#[derive(Debug, Clone, PartialEq)]
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
    /// The route's path parameters (name, value), in template order.
    pub params: Arc<[(Arc<str>, Arc<str>)]>,
    /// The pushed `data` as the client sent it (before sanitising), for a JSON
    /// push or append, when a hook asked for bodies; `None` otherwise.
    pub body: Option<Arc<Map<String, Value>>>,
    /// False for a write that was accepted but not stored: an append to a
    /// queue-only collection (`appendOnly.persist: false`), whose only effect is
    /// what the hooks do with it.
    pub stored: bool,
}

impl WriteEvent {
    /// A path parameter's value.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| &**v)
    }
}

/// Called once per accepted write, after it is stored (or, for a queue-only
/// collection, accepted), never for a refused one. It runs on the request's task,
/// so it should only hand the event on (a channel, a counter); set it with
/// [`crate::app::state::SyncOptions::with_after_write`].
pub trait AfterWrite: Send + Sync + 'static {
    /// One write was accepted.
    fn after_write(&self, event: &WriteEvent);

    /// True when events should carry the pushed data ([`WriteEvent::body`]): it
    /// costs a copy of every pushed document. Off by default.
    fn wants_body(&self) -> bool {
        false
    }
}

/// A dependency the router needs besides its store (Redis, NATS): `GET
/// /health/ready` answers 503 while its check fails.
#[async_trait::async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    /// `Ok` when the dependency answers; the error is logged, not shown.
    async fn check(&self) -> Result<(), String>;
}
