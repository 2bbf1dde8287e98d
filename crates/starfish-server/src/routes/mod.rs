//! The HTTP side of the pipeline. Every request goes the same way:
//!
//! 1. [`endpoint::Endpoint::parse`]: the path becomes a typed endpoint with its scope
//!    and resolved keys (404/400 here);
//! 2. [`authenticate`]: who is calling (401);
//! 3. [`allow`]: `access::Gate::authorize` for every key touched (403);
//! 4. [`rate_check`]: the collection's rate limit (429);
//! 5. the sync core (`sync::read`, `sync::write`) and rendering, in one file per
//!    route family; [`after_write`] once per accepted write.

mod admin;
mod batch;
mod blob;
mod body;
mod bundle;
mod config;
pub(crate) mod endpoint;
pub(crate) mod error;
mod events;
pub(crate) mod health;
pub(crate) mod limits;
mod list;
mod pull;
mod push;
pub(crate) mod query;
mod render;
mod stack;
mod tenant_webhooks;
mod webhook;

pub(crate) use crate::access::is_public;

pub use stack::{SyncService, create_sync_router, create_sync_service};

use crate::access::{Action, Denied, RateSubject, Touch};
use crate::app::state::AppState;
use crate::auth::{AuthError, AuthRequest, Caller, SignedBody, parse_ts_header};
use crate::config::Collection;
use crate::hooks::{WriteAction, WriteEvent};
use crate::routes::error::ApiError;
use crate::sync::write::{Written, media_type};
use crate::tenants::Scope;
use crate::tenants::keys::{self, ApiKeys};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use endpoint::{Doc, Endpoint};
use std::net::SocketAddr;

/// The routes with handlers of their own; every other path is the pipeline's.
fn fixed_routes() -> Vec<(&'static str, axum::routing::MethodRouter<AppState>)> {
    use axum::routing::{post, put};
    vec![
        ("/health", get(health::health)),
        ("/health/live", get(health::live)),
        ("/health/ready", get(health::ready)),
        ("/config", get(config::config)),
        ("/openapi.json", get(openapi)),
        (
            "/_starfish/admin/namespaces",
            get(admin::list).post(admin::create),
        ),
        (
            "/_starfish/admin/namespaces/{name}",
            get(admin::one).delete(admin::delete),
        ),
        (
            "/_starfish/admin/namespaces/{name}/quota",
            put(admin::set_quota),
        ),
        (
            "/_starfish/admin/namespaces/{name}/limits",
            put(admin::set_limits),
        ),
        (
            "/_starfish/admin/namespaces/{name}/{action}",
            post(admin::action).get(admin::audit_trail),
        ),
        (
            "/_starfish/admin/namespaces/{name}/reproject/{collection}",
            post(admin::reproject),
        ),
        (
            "/_starfish/admin/namespaces/{name}/webhooks",
            post(tenant_webhooks::create).get(tenant_webhooks::list),
        ),
        (
            "/_starfish/admin/namespaces/{name}/webhooks/{id}",
            axum::routing::delete(tenant_webhooks::delete),
        ),
        (
            "/_starfish/webhooks/{namespace}/{id}",
            axum::routing::any(tenant_webhooks::ingest),
        ),
        ("/_starfish/admin/keys", post(admin::create_key)),
        ("/_starfish/admin/keys/{id}", get(admin::key)),
        ("/_starfish/admin/keys/{id}/revoke", post(admin::revoke_key)),
    ]
}

/// The routes with handlers of their own, without a fallback; the admin routes
/// audited when `state` audits.
pub(crate) fn fixed_router(state: &AppState) -> Router<AppState> {
    let (admin_routes, others): (Vec<_>, Vec<_>) = fixed_routes()
        .into_iter()
        .partition(|(path, _)| path.starts_with("/_starfish/admin"));
    let mut admin_router = admin_routes
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| {
            router.route(path, methods)
        });
    if state.audit.is_some() {
        admin_router = admin_router.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::audited,
        ));
    }
    let router = others
        .into_iter()
        .fold(admin_router, |router, (path, methods)| {
            router.route(path, methods)
        });
    if state.webhooks.has_routes() {
        router.route("/webhook/{id}", axum::routing::any(webhook::ingest))
    } else {
        router
    }
}

pub(crate) fn router(state: &AppState) -> Router<AppState> {
    // Every other path is the pipeline's to parse (404 when it is none of its routes).
    fixed_router(state).fallback(dispatch)
}

/// The pipeline (every path but the fixed routes) as a service.
#[derive(Clone)]
pub(crate) struct Pipeline(pub(crate) AppState);

impl tower::Service<Request<Body>> for Pipeline {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move { Ok(dispatch(State(state), request).await) })
    }
}

/// The routes as one service: the fixed routes (health, config, OpenAPI, admin)
/// through [`router`], every other path straight to the pipeline, which is that
/// router's fallback anyway, without its matching, cloning and boxing per request.
#[derive(Clone)]
pub(crate) struct Routes {
    fixed: axum::Router,
    pipeline: Pipeline,
    webhooks: bool,
}

impl Routes {
    pub(crate) fn new(state: AppState) -> Self {
        Self {
            fixed: router(&state).with_state(state.clone()),
            webhooks: state.webhooks.has_routes(),
            pipeline: Pipeline(state),
        }
    }

    fn fixed(&self, path: &str) -> bool {
        is_fixed(path, self.webhooks)
    }
}

/// Whether `path` may be one of [`router`]'s own routes (anything else is its
/// fallback's); `/webhook/<id>` is one when webhooks are configured.
fn is_fixed(path: &str, webhooks: bool) -> bool {
    matches!(
        path,
        "/health" | "/health/live" | "/health/ready" | "/config" | "/openapi.json"
    ) || path.starts_with("/_starfish/")
        || (webhooks && path.starts_with("/webhook/"))
}

impl tower::Service<Request<Body>> for Routes {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        axum::routing::future::RouteFuture<std::convert::Infallible>,
        futures::future::BoxFuture<'static, Result<Response, std::convert::Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if self.fixed(request.uri().path()) {
            // A HEAD is answered as a GET here: the outermost router drops the body
            // (and keeps the GET's headers, compression included), as it did when
            // these routes were its own.
            if request.method() == Method::HEAD {
                *request.method_mut() = Method::GET;
            }
            futures::future::Either::Left(self.fixed.call(request))
        } else {
            futures::future::Either::Right(self.pipeline.call(request))
        }
    }
}

/// `GET /openapi.json`, when enabled.
async fn openapi(State(state): State<AppState>) -> Result<Response, ApiError> {
    let document = state.openapi.clone().ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/json")], document).into_response())
}

/// What a request was routed to, for its metrics.
#[derive(Default)]
struct Routed {
    namespace: String,
    collection: String,
    action: &'static str,
}

impl Routed {
    /// What `endpoint` is, for metrics and the audit trail.
    fn of_endpoint(endpoint: &Endpoint<'_>) -> Self {
        match &endpoint {
            Endpoint::Pull(scope, doc) => Routed::of(scope, Some(&doc.collection), "pull"),
            Endpoint::Push(scope, doc) => {
                Routed::of(scope, Some(&doc.collection), push_action(&doc.collection))
            }
            Endpoint::Bundle(scope, _) => Routed::of(scope, None, "bundle"),
            Endpoint::List(scope, doc) => Routed::of(scope, Some(&doc.collection), "list"),
            Endpoint::Batch(scope) => Routed::of(scope, None, "batch"),
            Endpoint::Config(scope) => Routed::of(scope, None, "config"),
            Endpoint::Events(scope) => Routed::of(scope, None, "events"),
        }
    }

    fn of(
        scope: &Scope,
        collection: Option<&crate::config::Collection>,
        action: &'static str,
    ) -> Self {
        Self {
            namespace: scope
                .namespace
                .as_ref()
                .map(|n| n.as_str().to_owned())
                .unwrap_or_default(),
            collection: collection
                .map(|c| c.name.as_str().to_owned())
                .unwrap_or_default(),
            action,
        }
    }
}

/// The action a push is (the collection says which).
fn push_action(collection: &crate::config::Collection) -> &'static str {
    if collection.append_only.is_some() {
        "append"
    } else if matches!(collection.payload, crate::config::Payload::Binary(_)) {
        "blob"
    } else {
        "push"
    }
}

async fn dispatch(State(state): State<AppState>, request: Request<Body>) -> Response {
    if state.metrics.is_none() && state.audit.is_none() {
        return route(&state, request, &mut Routed::default())
            .await
            .into_response();
    }
    let _in_flight = state.metrics.as_ref().map(|m| m.in_flight());
    let mut routed = Routed {
        action: "other",
        ..Routed::default()
    };
    let result = match &state.audit {
        None => route(&state, request, &mut routed).await,
        // The request's steps note who asked and why it was refused; `route` reads
        // it for the record it writes once the answer is known.
        Some(_) => {
            let cell = std::cell::RefCell::new(crate::audit::Trail::default());
            let routing = route(&state, request, &mut routed);
            crate::audit::TRAIL.scope(cell, routing).await
        }
    };
    if let Some(metrics) = &state.metrics {
        let status = match &result {
            Ok(response) => response.status(),
            Err(e) => e.status(),
        };
        if let Err(e) = &result {
            count_auth_failure(metrics, e);
        }
        metrics.request(
            &routed.namespace,
            &routed.collection,
            routed.action,
            status.as_u16(),
        );
    }
    result.into_response()
}

/// Counts an authentication failure by its reason.
fn count_auth_failure(metrics: &crate::metrics::Metrics, e: &ApiError) {
    match e {
        ApiError::Auth(AuthError::Unauthorized(reason)) => {
            metrics.auth_failure(crate::metrics::auth_reason(reason));
        }
        ApiError::Auth(AuthError::Forbidden(_)) => metrics.auth_failure("forbidden"),
        ApiError::AuthTimeout => metrics.auth_failure("timeout"),
        _ => {}
    }
}

/// One audit record for a routed request (reads, writes and lists; a path that
/// routes nowhere, or `GET /config`, is not a decision on data), built from the
/// endpoint, what the request's steps noted, and the answer.
fn audit_request(
    state: &AppState,
    auditor: &crate::audit::Auditor,
    headers: &HeaderMap,
    endpoint: &Endpoint<'_>,
    result: &Result<Response, ApiError>,
) {
    let (action, doc) = match endpoint {
        Endpoint::Pull(_, doc) => ("pull", Some(doc)),
        Endpoint::Push(_, doc) => ("push", Some(doc)),
        Endpoint::List(_, doc) => ("list", Some(doc)),
        Endpoint::Bundle(..) | Endpoint::Batch(_) | Endpoint::Events(_) => ("pull", None),
        Endpoint::Config(_) => return,
    };
    let status = match result {
        Ok(response) => response.status(),
        Err(e) => e.status(),
    };
    let success = status.is_success() || status == axum::http::StatusCode::NOT_MODIFIED;
    if !auditor.keeps(action, success) {
        return;
    }
    let trail = crate::audit::TRAIL
        .try_with(|t| t.take())
        .unwrap_or_default();
    let reason = (!success)
        .then(|| {
            trail.reason.or_else(|| match result {
                Err(e) => Some(e.to_string()),
                Ok(_) => None,
            })
        })
        .flatten();
    let scope = endpoint.scope();
    // Borrowed from the request: nothing is copied for a record written at once.
    let params = doc.map(|d| {
        let mut sorted: smallvec::SmallVec<[(&str, &str); 4]> = d.params.iter().collect();
        sorted.sort_unstable_by_key(|(name, _)| *name);
        sorted
    });
    let record = crate::audit::AuditEntry {
        timestamp: state.clock.now_ms(),
        action,
        collection: doc.map_or("", |d| d.collection.name.as_str()),
        identity: trail.identity.as_deref(),
        document_key: doc.map_or("", |d| d.key.as_str()),
        success,
        status_code: status.as_u16(),
        params: params.as_deref(),
        namespace: scope.namespace.as_ref().map(|n| n.as_str()),
        // A client's id is kept only when it is short and plain.
        request_id: request_id(headers)
            .and_then(|v| v.to_str().ok())
            .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic())),
        api_key_id: trail.api_key_id.as_deref(),
        reason: reason.as_deref(),
        ..crate::audit::AuditEntry::default()
    };
    // A namespace's record goes to its own trail too (sealed as its data is).
    let tenant = match &scope.namespace {
        Some(name) if auditor.keeps_tenant_trails() => {
            let store = scope.sealed.as_ref().unwrap_or(&scope.store).clone();
            Some((name.clone(), store))
        }
        _ => None,
    };
    auditor.record_entry(record, tenant.as_slice());
}

/// The request's `x-request-id`. A request's few headers are looked through
/// rather than hashed: fewer steps for what a client sends (a handful).
fn request_id(headers: &HeaderMap) -> Option<&axum::http::HeaderValue> {
    if headers.len() > 8 {
        return headers.get(X_REQUEST_ID);
    }
    headers
        .iter()
        .find_map(|(name, value)| (*name == X_REQUEST_ID).then_some(value))
}

/// The request id header, as `starfish serve` and proxies set it.
const X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// How long the answer to a request refused by its namespace's count is held.
const REFUSAL_PACE: std::time::Duration = std::time::Duration::from_millis(50);

async fn route(
    state: &AppState,
    request: Request<Body>,
    routed: &mut Routed,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    // A namespace created at runtime is looked up (in memory if fresh) before routing.
    // A config namespace being migrated may be served frozen or from its new keys.
    let (tenant, migrated) = match endpoint::namespace_segment(parts.uri.path()) {
        Some(name) if !state.namespaces.contains_key(name.as_ref()) => {
            (state.tenants.lookup(&name).await?, None)
        }
        Some(name) => (None, state.migrations.scope(&name).await?),
        None => (None, None),
    };
    let named =
        |scope: &&Scope, name: &str| scope.namespace.as_ref().is_some_and(|n| n.as_str() == name);
    let namespace = |name: &str| {
        migrated
            .filter(|m| named(m, name))
            .or_else(|| state.namespaces.get(name))
            .or_else(|| tenant.as_deref().filter(|t| named(t, name)))
    };
    let endpoint = Endpoint::parse(&state.root, namespace, &parts.method, parts.uri.path())?;
    if state.metrics.is_some() {
        *routed = Routed::of_endpoint(&endpoint);
    }
    let result = serve(state, &parts, body, &endpoint).await;
    if let Some(auditor) = &state.audit {
        audit_request(state, auditor, &parts.headers, &endpoint, &result);
    }
    result
}

/// Serves a routed request: its namespace's budget, then its route.
async fn serve(
    state: &AppState,
    parts: &Parts,
    body: Body,
    endpoint: &Endpoint<'_>,
) -> Result<Response, ApiError> {
    // A place among the namespace's requests in flight, before anything else is done.
    // Then the namespace's count for the window: over it, refused before the
    // signature is verified.
    let _permit = match endpoint.scope().budget.as_deref() {
        Some(budget) => {
            let permit = budget.permit()?;
            let scope = endpoint.scope();
            let key = || {
                format!(
                    "ns:{}/{}",
                    scope.namespace.as_ref().map_or("", |n| n.as_str()),
                    scope.generation.as_deref().unwrap_or("")
                )
            };
            let charged = budget
                .charge_namespace(&state.rate, key, state.clock.now_ms())
                .await;
            if let Err(refused) = charged {
                // Held a moment (without its place): a flood's connections each get
                // a few refusals a second, not as many as they can send.
                drop(permit);
                tokio::time::sleep(REFUSAL_PACE).await;
                return Err(refused.into());
            }
            Some(permit)
        }
        None => None,
    };
    // A pull is awaited in place; the other routes' futures are boxed, so that this
    // future (moved into a box of its own for every request) is sized by a pull's
    // alone, not by the largest route's.
    match *endpoint {
        Endpoint::Pull(scope, ref doc) => pull::pull(state, parts, scope, doc).await,
        Endpoint::Push(scope, ref doc) => {
            Box::pin(push::push(state, parts, body, scope, doc)).await
        }
        Endpoint::Bundle(scope, ref members) => {
            Box::pin(bundle::pull(state, parts, scope, members)).await
        }
        Endpoint::List(scope, ref doc) => Box::pin(list::list(state, parts, scope, doc)).await,
        Endpoint::Batch(scope) => Box::pin(batch::pull(state, parts, scope)).await,
        Endpoint::Config(scope) => {
            Box::pin(config::namespace(state, parts.clone(), body, scope)).await
        }
        Endpoint::Events(scope) => Box::pin(events::events(state, parts, scope)).await,
    }
}

/// Refuses a caller from a root the namespace does not trust, before any key is
/// looked at (a bundle or batch would otherwise answer with nothing readable).
///
/// # Errors
/// `403`.
pub(crate) fn admit(scope: &Scope, caller: &Caller) -> Result<(), ApiError> {
    if scope.trusts(caller) {
        Ok(())
    } else {
        tracing::debug!("caller's root is not trusted in this namespace");
        Err(ApiError::Forbidden)
    }
}

/// Authorises `caller` for `action` on `doc`, reached through `scope`.
///
/// # Errors
/// `403`, or `500 Authorization error` when a hook fails.
pub(crate) async fn allow(
    state: &AppState,
    caller: &Caller,
    scope: &Scope,
    doc: &Doc,
    action: Action,
) -> Result<(), ApiError> {
    admit(scope, caller)?;
    let touch = Touch {
        store: scope.store_for(&doc.collection),
        namespace: scope.access(),
        collection: &doc.collection,
        action,
        key: &doc.key,
        params: &doc.params,
    };
    state.gate.authorize(caller, touch).await.map_err(|denied| {
        tracing::debug!(reason = %denied, key = %doc.key, "access refused");
        crate::audit::note(|t| t.reason = Some(denied.to_string()));
        match denied {
            Denied::Forbidden(_) => ApiError::Forbidden,
            Denied::Hook(e) => {
                tracing::warn!(error = %e, "authorization hook failed");
                ApiError::AuthorizationError
            }
        }
    })
}

/// Tells the `after_write` hook about an accepted write.
pub(crate) fn after_write(
    state: &AppState,
    scope: &Scope,
    doc: &Doc,
    caller: &Caller,
    action: WriteAction,
    written: Written,
) {
    // Live subscribers pull what changed: a write that stored nothing is no change.
    if written.stored {
        publish_change(state, scope, doc, &written);
    }
    let queue = state.queue.as_ref().zip(doc.collection.queue.as_deref());
    if state.after_write.is_none() && queue.is_none() && state.plugins.is_empty() {
        return;
    }
    let event = WriteEvent {
        namespace: scope.namespace.as_ref().map(|n| n.as_str().into()),
        collection: doc.collection.name.as_str().into(),
        key: doc.key.as_str().into(),
        hash: written.hash,
        timestamp: written.timestamp,
        action,
        identity: caller.identity().map(Into::into),
        params: doc
            .params
            .iter()
            .map(|(n, v)| (n.into(), v.into()))
            .collect(),
        body: written.body.map(std::sync::Arc::new),
        stored: written.stored,
    };
    if let Some((sink, settings)) = queue {
        let (subject, payload) = crate::queue::message(settings, &event);
        let sent = sink.publish(subject, payload);
        if let Some(metrics) = &state.metrics {
            metrics.queued(if sent { "sent" } else { "dropped" });
        }
    }
    if let Some(hook) = &state.after_write {
        hook.after_write(&event);
    }
    state.plugins.after_write(&event);
}

/// What the plugins' pull and push hooks are told of a request.
fn hook_context<'a>(
    scope: &'a Scope,
    doc: &'a Doc,
    caller: &'a Caller,
) -> crate::hooks::HookContext<'a> {
    crate::hooks::HookContext {
        namespace: scope.namespace.as_ref().map(|n| n.as_str()),
        collection: doc.collection.name.as_str(),
        params: &doc.params,
        key: doc.key.as_str(),
        identity: caller.identity(),
    }
}

/// Tells this node's live subscribers and the other nodes that `doc` changed.
fn publish_change(state: &AppState, scope: &Scope, doc: &Doc, written: &Written) {
    let change = crate::live::Change::new(
        scope.namespace.as_ref().map(|n| n.as_str()),
        scope.generation.as_deref().unwrap_or(""),
        doc.collection.name.as_str(),
        doc.key.as_str(),
        &written.hash,
        written.timestamp,
    );
    state.live.publish_change(&change);
    if let Some(feed) = &state.change_feed {
        let sent = feed.publish(&change);
        if let Some(metrics) = &state.metrics {
            metrics.change(if sent { "sent" } else { "dropped" });
        }
    }
}

/// A request body: buffered when a signature had to cover it, otherwise still streaming.
pub(crate) enum RequestBody {
    Buffered(Bytes),
    Streaming(Body),
}

/// The host a client signed: the `Host` header (or the URI authority), lower-cased.
fn request_host(parts: &Parts) -> String {
    parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// The request's media type (see [`media_type`]); `""` when absent.
pub(crate) fn request_media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type)
        .unwrap_or_default()
}

/// A write body is signed when it is JSON: no media type, or exactly
/// `application/json`. Anything else (a blob upload) is signed over the empty body,
/// and a JSON collection refuses it, so an unsigned body is never taken as JSON.
fn body_is_signed(headers: &HeaderMap) -> bool {
    matches!(
        request_media_type(headers).as_str(),
        "" | "application/json"
    )
}

/// The pre-auth gate for a signed write: `Content-Length` present, an integer, within `limit`.
fn signed_body_gate(headers: &HeaderMap, limit: u64) -> Result<u64, &'static str> {
    let value = headers
        .get(header::CONTENT_LENGTH)
        .ok_or("missing Content-Length on write")?;
    let n = value
        .to_str()
        .ok()
        .and_then(parse_ts_header)
        .filter(|n| *n >= 0)
        .ok_or("invalid Content-Length")?;
    let n = n as u64;
    if n > limit {
        return Err("request body too large");
    }
    Ok(n)
}

/// Authenticates the request (unless `public` holds for this action and no
/// credentials were sent) and returns the caller and the body.
///
/// # Errors
/// `401`/`413` from the authenticator, `503` when it times out.
pub(crate) async fn authenticate(
    state: &AppState,
    parts: &Parts,
    body: Body,
    public: bool,
    scope: Option<&Scope>,
) -> Result<(Caller, RequestBody), ApiError> {
    let has_credentials = parts.headers.contains_key(header::AUTHORIZATION);
    if public && !has_credentials {
        return Ok((Caller::anonymous(), RequestBody::Streaming(body)));
    }
    if let Some(keys) = &state.keys {
        // Only our keys' tokens: any other Bearer token is the authenticator's.
        if let Some(token) = bearer(&parts.headers).filter(|t| t.starts_with(keys::PREFIX)) {
            // Boxed: the key check's future is several KiB, and inline it would size
            // every request's future (and the copy of it) by that.
            let caller = Box::pin(key_caller(keys, token, scope)).await?;
            return Ok((caller, RequestBody::Streaming(body)));
        }
    }
    let is_write = matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let signed_limit = if is_write && body_is_signed(&parts.headers) {
        state.auth.signed_body_limit(&parts.headers)
    } else {
        None
    };
    let (request_body, rejected) = match signed_limit {
        None => (RequestBody::Streaming(body), None),
        Some(limit) => match signed_body_gate(&parts.headers, limit) {
            Ok(declared) => (
                RequestBody::Buffered(body::read_limited(body, Some(declared), limit).await?),
                None,
            ),
            Err(message) => (RequestBody::Streaming(body), Some(message)),
        },
    };
    let signed = match (&request_body, rejected) {
        (_, Some(message)) => SignedBody::Rejected(message),
        (RequestBody::Buffered(bytes), None) => SignedBody::Bytes(bytes),
        (RequestBody::Streaming(_), None) => SignedBody::Empty,
    };
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let path_and_query = original
        .path_and_query()
        .map_or_else(|| original.path(), |pq| pq.as_str());
    let host = request_host(parts);
    let request = AuthRequest {
        method: &parts.method,
        path_and_query,
        host: &host,
        headers: &parts.headers,
        body: signed,
    };
    let caller = tokio::time::timeout(state.auth_timeout, state.auth.authenticate(request))
        .await
        .map_err(|_| ApiError::AuthTimeout)??;
    crate::audit::note(|t| t.identity = caller.identity().map(str::to_owned));
    Ok((caller, request_body))
}

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The caller an API key is in `scope`: 401 for an unknown, wrong, revoked or
/// expired key; 403 where it names no rights (the root, another namespace).
async fn key_caller(
    keys: &ApiKeys,
    token: &str,
    scope: Option<&Scope>,
) -> Result<Caller, ApiError> {
    let record = match keys.check(token).await {
        Ok(Ok(record)) => {
            crate::audit::note(|t| t.api_key_id = Some(record.id.clone()));
            record
        }
        Ok(Err(refused)) => {
            tracing::debug!(?refused, "API key refused");
            return Err(AuthError::Unauthorized("API key refused".into()).into());
        }
        Err(e) => {
            tracing::warn!(error = %e, "API key lookup failed");
            return Err(match e {
                crate::tenants::TenantError::Store(e) => ApiError::Store(e),
                _ => ApiError::Busy,
            });
        }
    };
    scope
        .and_then(|s| keys::caller_in(&record, s))
        .ok_or(ApiError::Forbidden)
}

/// The client IP for rate limiting: the socket address, or with `trusted_proxy_hops`
/// = N > 0 the N-th `X-Forwarded-For` entry from the right.
fn client_ip(state: &AppState, parts: &Parts) -> String {
    if state.trusted_proxy_hops > 0 {
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let hops: Vec<&str> = forwarded
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if let Some(ip) = hops
            .len()
            .checked_sub(state.trusted_proxy_hops)
            .and_then(|i| hops.get(i))
        {
            return (*ip).to_owned();
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "anonymous".to_owned(), |c| c.0.ip().to_string())
}

/// Applies `collection`'s rate limit for `action`.
///
/// # Errors
/// `429` with `Retry-After` when over.
pub(crate) async fn rate_check(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    collection: &Collection,
    caller: &Caller,
    action: Action,
) -> Result<(), ApiError> {
    let limits = &collection.rate_limits;
    let rule = match action {
        Action::Push => limits.push.as_ref(),
        Action::Pull => limits.pull.as_ref(),
        Action::List => limits.list.as_ref(),
    };
    let Some(rule) = rule else {
        return Ok(());
    };
    let name = match &collection.bundle {
        Some(bundle) => format!("{bundle}/{}", collection.name),
        None => collection.name.to_string(),
    };
    let namespace = scope.namespace.as_ref().map_or("", |n| n.as_str());
    // The generation too: a namespace deleted and created again starts afresh.
    let generation = scope.generation.as_deref().unwrap_or("");
    let bucket = format!("{namespace}/{generation}/{name}:{}:", action.as_str());
    let ip = client_ip(state, parts);
    let subject = RateSubject {
        identity: caller.identity(),
        ip: &ip,
    };
    state
        .rate
        .check(&bucket, rule, subject, state.clock.now_ms())
        .await
        .map_err(|retry_after| ApiError::RateLimited { retry_after })
}

/// Counts one request of `caller` against the namespace's request limits, once the
/// caller is known (every route calls it once, after authentication).
///
/// # Errors
/// `429` with `Retry-After` when the namespace or the caller is over its count.
pub(crate) async fn charge(
    state: &AppState,
    parts: &Parts,
    scope: &Scope,
    caller: &Caller,
) -> Result<(), ApiError> {
    let Some(budget) = &scope.budget else {
        return Ok(());
    };
    let namespace = scope.namespace.as_ref().map_or("", |n| n.as_str());
    let generation = scope.generation.as_deref().unwrap_or("");
    let bucket = format!("{namespace}/{generation}|budget:");
    let ip = client_ip(state, parts);
    let subject = RateSubject {
        identity: caller.identity(),
        ip: &ip,
    };
    budget
        .charge(&state.rate, &bucket, subject, state.clock.now_ms())
        .await
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route with a handler of its own is one `Routes` sends to axum's router
    /// (a route added to `fixed_routes` but not to `Routes::fixed` would be
    /// unreachable through `create_sync_service`).
    #[test]
    fn every_fixed_route_is_routed_as_fixed() {
        for (path, _) in fixed_routes() {
            let concrete: Vec<&str> = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        "x"
                    } else {
                        segment
                    }
                })
                .collect();
            let concrete = concrete.join("/");
            assert!(is_fixed(&concrete, false), "{path}");
        }
        assert!(!is_fixed("/pull/docs/a", false) && !is_fixed("/health/x", false));
        assert!(is_fixed("/webhook/x", true) && !is_fixed("/webhook/x", false));
    }
}
