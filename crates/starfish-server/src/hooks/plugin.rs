//! Server plugins, as the reference's `ServerPlugin`: one value that brings
//! certificate validators and hooks, each optional, each run at one named place of
//! the pipeline (docs/architecture.md, "A request's path"):
//!
//! | hook | where | what it may do | a failure |
//! |---|---|---|---|
//! | [`Plugin::cap_validators`] | at startup, into the authenticator | accept certificate kinds | - |
//! | [`Plugin::authorize`] | after the role rules allowed an access (pulls, pushes, lists, batch and bundle members) | refuse (`403`) | answered `500` |
//! | [`Plugin::before_pull`] | a pull, after authorisation and rate limits, before the store is read | refuse with a status | answered `500` |
//! | [`Plugin::intercept_pull`] | a JSON collection's pull, after `before_pull` | answer it (any bytes, any type) | answered `500` |
//! | [`Plugin::intercept_push`] | a push, after authorisation, limits and the body's size check, before it is parsed | transform the body, refuse, or answer | answered `500` |
//! | [`Plugin::after_write`] | after a write is stored (or accepted, queue-only) | see it | logged, never answered |
//! | [`Plugin::shutdown`] | [`Plugins::shutdown`], when the server stops | release what it holds | - |
//!
//! Plugins run in the order they were registered; for each hook the first that
//! does not proceed decides, and the later ones are not asked. A hook a plugin does
//! not have returns `None` (the default): it costs nothing per request.

use super::WriteEvent;
use crate::access::{AccessRequest, Authorize, HookError};
use crate::auth::CapValidator;
use crate::store::PathParams;
use axum::http::StatusCode;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::sync::Arc;

/// What a pull or push hook is told.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HookContext<'a> {
    /// The namespace, `None` at the root.
    pub namespace: Option<&'a str>,
    /// The collection's name.
    pub collection: &'a str,
    /// The route's path parameters.
    pub params: &'a PathParams,
    /// The object key read or written.
    pub key: &'a str,
    /// The verified caller, `None` when anonymous.
    pub identity: Option<&'a str>,
}

/// What a push hook is told: the request, and its body as received (empty for a
/// blob, which is streamed to the store, as the reference's `rawBody` is).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PushContext<'a> {
    /// Which document, and who asks.
    pub request: HookContext<'a>,
    /// The body as the client sent it.
    pub raw_body: &'a [u8],
}

/// A `before_pull` hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullDecision {
    /// Go on with the pull.
    Proceed,
    /// Refuse it: `status` (4xx or 5xx) with `{"error": error}`.
    Reject {
        /// The status answered.
        status: StatusCode,
        /// The error answered.
        error: String,
    },
}

/// An `intercept_pull` hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullAnswer {
    /// Go on with the pull.
    Proceed,
    /// Answer it with these bytes (a Parquet file, a rendered page): with an
    /// `ETag` of their SHA-256, `304` to a matching `If-None-Match`, and the
    /// collection's `Cache-Control`, as a blob's pull.
    Respond {
        /// The status answered.
        status: StatusCode,
        /// The body answered.
        body: Bytes,
        /// Its `Content-Type`.
        content_type: String,
    },
}

/// An `intercept_push` hook's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum PushDecision {
    /// Go on with the push as sent.
    Proceed,
    /// Go on with this body instead (a JSON push: checked, signed-body rules
    /// aside, as if the client had sent it; the next plugins see it).
    Transform(Bytes),
    /// Refuse it: `status` (4xx or 5xx) with `{"error": error}`; nothing is stored.
    Reject {
        /// The status answered.
        status: StatusCode,
        /// The error answered.
        error: String,
    },
    /// Answer on the route's behalf (a push proxied to a primary); nothing is
    /// stored here and no write event is emitted.
    Respond {
        /// The status answered.
        status: StatusCode,
        /// The JSON body answered.
        body: serde_json::Value,
    },
}

/// A hook's future.
pub type HookFuture<'a, T> = BoxFuture<'a, Result<T, HookError>>;

/// A server extension. Every hook is optional; see the module's table for where
/// each runs.
pub trait Plugin: Send + Sync + 'static {
    /// The plugin's name, in logs.
    fn name(&self) -> &str;

    /// Certificate validators this plugin brings (the reference's
    /// `capValidators`), added to the authenticator's when the router is built.
    fn cap_validators(&self) -> Vec<Arc<dyn CapValidator>> {
        Vec::new()
    }

    /// The last word on an access the role rules allowed: `Ok(false)` answers
    /// `403`.
    fn authorize<'a>(&'a self, _request: &'a AccessRequest<'a>) -> Option<HookFuture<'a, bool>> {
        None
    }

    /// Before a pull is served.
    fn before_pull<'a>(
        &'a self,
        _ctx: &'a HookContext<'a>,
    ) -> Option<HookFuture<'a, PullDecision>> {
        None
    }

    /// Before a JSON collection's pull reads the store: may answer it.
    fn intercept_pull<'a>(
        &'a self,
        _ctx: &'a HookContext<'a>,
    ) -> Option<HookFuture<'a, PullAnswer>> {
        None
    }

    /// Before a push is parsed and stored: may transform, refuse or answer it.
    fn intercept_push<'a>(
        &'a self,
        _ctx: &'a PushContext<'a>,
    ) -> Option<HookFuture<'a, PushDecision>> {
        None
    }

    /// After a write was accepted. Runs on the request's task: hand the event on.
    /// An error is logged with the plugin's name, never answered.
    fn after_write(&self, _event: &WriteEvent) -> Result<(), HookError> {
        Ok(())
    }

    /// True when write events should carry the pushed data.
    fn wants_body(&self) -> bool {
        false
    }

    /// When the server stops.
    fn shutdown(&self) -> Option<BoxFuture<'_, ()>> {
        None
    }
}

/// The plugins of a router, in order. Keep a clone to call [`Self::shutdown`] when
/// your server stops (the binary does).
#[derive(Clone, Default)]
pub struct Plugins(Arc<[Arc<dyn Plugin>]>);

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|p| p.name()))
            .finish()
    }
}

impl Plugins {
    /// These plugins, in this order.
    pub fn new(plugins: Vec<Arc<dyn Plugin>>) -> Self {
        Self(plugins.into())
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each plugin.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Plugin>> {
        self.0.iter()
    }

    /// Runs every plugin's `shutdown`, in order.
    pub async fn shutdown(&self) {
        for plugin in self.iter() {
            if let Some(done) = plugin.shutdown() {
                done.await;
            }
        }
    }

    /// The first `before_pull` that does not proceed.
    pub(crate) async fn before_pull(&self, ctx: &HookContext<'_>) -> Result<PullDecision, Refusal> {
        for plugin in self.iter() {
            if let Some(hook) = plugin.before_pull(ctx) {
                match hook.await.map_err(|e| Refusal::failed(plugin, e))? {
                    PullDecision::Proceed => {}
                    other => return Ok(other),
                }
            }
        }
        Ok(PullDecision::Proceed)
    }

    /// The first `intercept_pull` that answers.
    pub(crate) async fn intercept_pull(
        &self,
        ctx: &HookContext<'_>,
    ) -> Result<PullAnswer, Refusal> {
        for plugin in self.iter() {
            if let Some(hook) = plugin.intercept_pull(ctx) {
                match hook.await.map_err(|e| Refusal::failed(plugin, e))? {
                    PullAnswer::Proceed => {}
                    other => return Ok(other),
                }
            }
        }
        Ok(PullAnswer::Proceed)
    }

    /// Every `intercept_push` in order: a transform is what the next plugins see;
    /// the first refusal or answer ends it. `Ok(Some(body))`: go on with `body`
    /// when it was transformed.
    pub(crate) async fn intercept_push(
        &self,
        request: HookContext<'_>,
        raw_body: Bytes,
    ) -> Result<PushOutcome, Refusal> {
        let mut body = raw_body;
        let mut transformed = false;
        for plugin in self.iter() {
            let ctx = PushContext {
                request,
                raw_body: &body,
            };
            let Some(hook) = plugin.intercept_push(&ctx) else {
                continue;
            };
            match hook.await.map_err(|e| Refusal::failed(plugin, e))? {
                PushDecision::Proceed => {}
                PushDecision::Transform(new) => {
                    body = new;
                    transformed = true;
                }
                PushDecision::Reject { status, error } => {
                    return Ok(PushOutcome::Reject { status, error });
                }
                PushDecision::Respond { status, body } => {
                    return Ok(PushOutcome::Respond { status, body });
                }
            }
        }
        Ok(PushOutcome::Proceed { body, transformed })
    }

    /// Every `authorize` in order; `false` at the first that refuses.
    pub(crate) async fn authorize(&self, request: &AccessRequest<'_>) -> Result<bool, HookError> {
        for plugin in self.iter() {
            if let Some(hook) = plugin.authorize(request) {
                if !hook.await? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Every `after_write` in order; failures logged.
    pub(crate) fn after_write(&self, event: &WriteEvent) {
        for plugin in self.iter() {
            if let Err(e) = plugin.after_write(event) {
                tracing::warn!(plugin = plugin.name(), error = %e.0, "after_write hook failed");
            }
        }
    }
}

/// What the push hooks decided.
#[derive(Debug)]
pub(crate) enum PushOutcome {
    /// Go on with this body (`transformed`: not the client's).
    Proceed { body: Bytes, transformed: bool },
    /// Refused.
    Reject { status: StatusCode, error: String },
    /// Answered.
    Respond {
        status: StatusCode,
        body: serde_json::Value,
    },
}

/// A hook that failed: answered `500`, logged with the plugin's name.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) plugin: String,
    pub(crate) error: HookError,
}

impl Refusal {
    fn failed(plugin: &Arc<dyn Plugin>, error: HookError) -> Self {
        Self {
            plugin: plugin.name().to_owned(),
            error,
        }
    }
}

/// The embedder's authorize hook, then every plugin's, as the one hook the access
/// gate asks.
pub(crate) struct ChainedAuthorize {
    pub(crate) first: Option<Arc<dyn Authorize>>,
    pub(crate) plugins: Plugins,
}

impl Authorize for ChainedAuthorize {
    fn authorize<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<bool, HookError>> {
        Box::pin(async move {
            if let Some(first) = &self.first {
                if !first.authorize(request).await? {
                    return Ok(false);
                }
            }
            self.plugins.authorize(request).await
        })
    }
}
