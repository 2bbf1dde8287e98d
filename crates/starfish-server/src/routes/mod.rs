//! axum handlers. One entry point matches `/[ns/]pull|push/<storage path>` against the
//! route table built at load time; the handlers for each family live in their own file.

mod batch;
mod blob;
mod body;
mod bundle;
mod config;
mod health;
mod list;
mod pull;
mod push;
mod query;

use crate::access::{Action, Decision, RateSubject, decide};
use crate::auth::{AuthRequest, Caller, SignedBody, parse_ts_header};
use crate::config::{Collection, IDENTITY_PARAM, is_param_value, is_safe_key};
use crate::error::ApiError;
use crate::state::{AppState, Scope, Target, TargetKind};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::{any, get};
use bytes::Bytes;
use percent_encoding::percent_decode_str;
use std::net::SocketAddr;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/config", get(config::config))
        .route("/{*rest}", any(dispatch))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// The `{identity}` value among resolved path parameters.
pub(crate) fn identity_of(params: &[(String, String)]) -> Option<&str> {
    params
        .iter()
        .find(|(k, _)| k == IDENTITY_PARAM)
        .map(|(_, v)| v.as_str())
}

/// The per-collection gate every push passes before its body is read: the declared
/// `Content-Length` against `maxBodyBytes` (413), then the push rate limit (429).
/// Returns the declared length.
pub(crate) fn push_gate(
    state: &AppState,
    parts: &Parts,
    route: &ResolvedRoute,
    caller: &Caller,
) -> Result<Option<u64>, ApiError> {
    let declared = body::content_length(&parts.headers)?;
    if declared.is_some_and(|n| n > route.target.collection.max_body_bytes.get()) {
        return Err(ApiError::PayloadTooLarge("Payload too large".into()));
    }
    rate_check(state, parts, route, caller, Action::Push)?;
    Ok(declared)
}

/// A request matched to a collection, with its parameters checked and key resolved.
#[derive(Debug)]
pub(crate) struct ResolvedRoute {
    pub(crate) target: Target,
    pub(crate) params: Vec<(String, String)>,
    /// The object key (storage path with parameters filled in), checked safe. For a
    /// list route, the prefix; for a bundle pull, the shared path of the members.
    pub(crate) key: String,
    /// The namespace the route was reached through.
    pub(crate) namespace: Option<String>,
}

impl ResolvedRoute {
    /// The `{identity}` parameter, when the template has one.
    pub(crate) fn identity_param(&self) -> Option<&str> {
        identity_of(&self.params)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteAction {
    Pull,
    Push,
    List,
    Batch,
}

/// Splits `/[ns/]action/rest` into a scope, an action and the remaining path.
fn split_path<'s>(state: &'s AppState, path: &'s str) -> Option<(&'s Scope, RouteAction, &'s str)> {
    let path = path.strip_prefix('/')?;
    let action = |s: &str| match s {
        "pull" => Some(RouteAction::Pull),
        "push" => Some(RouteAction::Push),
        "list" => Some(RouteAction::List),
        _ => None,
    };
    if path == "batch/pull" {
        return Some((&state.root, RouteAction::Batch, ""));
    }
    let (first, rest) = path.split_once('/')?;
    if let Some(a) = action(first) {
        return Some((&state.root, a, &path[first.len()..]));
    }
    let scope = state.namespaces.get(first)?;
    if rest == "batch/pull" {
        return Some((scope, RouteAction::Batch, ""));
    }
    let (second, _) = rest.split_once('/')?;
    let a = action(second)?;
    Some((scope, a, &rest[second.len()..]))
}

fn resolve_route(
    scope: &Scope,
    action: RouteAction,
    rest: &str,
) -> Result<ResolvedRoute, ApiError> {
    let table = match action {
        RouteAction::Pull => &scope.pull,
        RouteAction::Push => &scope.push,
        RouteAction::List | RouteAction::Batch => &scope.list,
    };
    let matched = table.at(rest).map_err(|_| ApiError::NotFound)?;
    let mut params = Vec::with_capacity(matched.params.len());
    for (name, raw) in matched.params.iter() {
        // Parameters are percent-decoded (an encoded `/` stays inside one segment and then
        // fails the character rule); malformed escapes are left raw and fail it too.
        let value = percent_decode_str(raw)
            .decode_utf8()
            .map_or_else(|_| raw.to_owned(), |v| v.into_owned());
        if !is_param_value(&value) {
            return Err(ApiError::InvalidPathParameter);
        }
        params.push((name.to_owned(), value));
    }
    let target = matched.value.clone();
    let template = &target.collection.storage_path;
    let segments = match target.kind {
        TargetKind::List => template.segments().len() - 1,
        TargetKind::Document | TargetKind::Bundle(_) => template.segments().len(),
    };
    let mut key = template
        .resolve_first(segments, |p| {
            params.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str())
        })
        .ok_or(ApiError::InvalidPathParameter)?;
    if let Some(suffix) = &target.key_suffix {
        key.push('/');
        key.push_str(suffix);
    }
    if !is_safe_key(&key) {
        return Err(ApiError::InvalidPathParameter);
    }
    Ok(ResolvedRoute {
        target,
        params,
        key,
        namespace: scope.namespace.clone(),
    })
}

/// True when `caller` may perform `action` on `collection` at these path parameters,
/// with roles from the enricher.
pub(crate) async fn permits(
    state: &AppState,
    caller: &Caller,
    collection: &Collection,
    params: &[(String, String)],
    action: Action,
) -> Result<bool, ApiError> {
    let extra = match &state.enricher {
        Some(enricher) => enricher
            .enrich(caller, collection, params)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "role enricher failed");
                ApiError::AuthorizationError
            })?,
        None => Vec::new(),
    };
    Ok(decide(caller, &extra, collection, action, identity_of(params)) == Decision::Allow)
}

/// Authorises `caller` for `action` on the route: 403 otherwise.
pub(crate) async fn authorize(
    state: &AppState,
    caller: &Caller,
    route: &ResolvedRoute,
    action: Action,
) -> Result<(), ApiError> {
    if permits(
        state,
        caller,
        &route.target.collection,
        &route.params,
        action,
    )
    .await?
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
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

/// Blob uploads (a non-empty media type other than JSON) are signed over an empty body.
fn is_blob_media(headers: &HeaderMap) -> bool {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    !media.is_empty() && media != "application/json"
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

/// Authenticates the request (unless the collection is public for this action and no
/// credentials were sent) and returns the caller and the body.
pub(crate) async fn authenticate(
    state: &AppState,
    parts: &Parts,
    body: Body,
    route: Option<&ResolvedRoute>,
    public: bool,
) -> Result<(Caller, RequestBody), ApiError> {
    let has_credentials = parts.headers.contains_key(header::AUTHORIZATION);
    if public && !has_credentials {
        return Ok((Caller::anonymous(), RequestBody::Streaming(body)));
    }
    let is_write = matches!(
        parts.method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let signed_limit = if is_write && !is_blob_media(&parts.headers) {
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
        identity_param: route.and_then(ResolvedRoute::identity_param),
        batch: route.is_none(),
    };
    let caller = tokio::time::timeout(state.auth_timeout, state.auth.authenticate(request))
        .await
        .map_err(|_| ApiError::AuthTimeout)??;
    Ok((caller, request_body))
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

/// Applies the collection's rate limit for `action`: 429 when over.
pub(crate) fn rate_check(
    state: &AppState,
    parts: &Parts,
    route: &ResolvedRoute,
    caller: &Caller,
    action: Action,
) -> Result<(), ApiError> {
    let limits = &route.target.collection.rate_limits;
    let rule = match action {
        Action::Push => limits.push.as_ref(),
        Action::Pull => limits.pull.as_ref(),
        Action::List => limits.list.as_ref(),
    };
    let Some(rule) = rule else {
        return Ok(());
    };
    let collection = &route.target.collection;
    let name = match &collection.bundle {
        Some(bundle) => format!("{bundle}/{}", collection.name),
        None => collection.name.to_string(),
    };
    let verb = match action {
        Action::Push => "push",
        Action::Pull => "pull",
        Action::List => "list",
    };
    let scope = format!(
        "{}/{name}:{verb}:",
        route.namespace.as_deref().unwrap_or("")
    );
    let ip = client_ip(state, parts);
    let subject = RateSubject {
        identity: caller.identity(),
        ip: &ip,
    };
    state
        .rate
        .check(&scope, rule, subject, state.clock.now_ms())
        .map_err(|retry_after| ApiError::RateLimited { retry_after })
}

/// True when `action` on `collection` needs no credentials (the reference does not
/// even run its resolver then).
fn is_public(collection: &Collection, action: Action) -> bool {
    let required = match action {
        Action::Push => &collection.write_roles,
        Action::Pull | Action::List => &collection.read_roles,
    };
    required.is_public() && !collection.root_only
}

async fn dispatch(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let path = request.uri().path().to_owned();
    let (scope, route_action, rest) = split_path(&state, &path).ok_or(ApiError::NotFound)?;
    let expected = match route_action {
        RouteAction::Push => Method::POST,
        RouteAction::Pull | RouteAction::List | RouteAction::Batch => Method::GET,
    };
    if *request.method() != expected {
        return Err(ApiError::NotFound);
    }
    let (parts, body) = request.into_parts();
    if route_action == RouteAction::Batch {
        return batch::batch_pull(&state, scope, &parts).await;
    }
    let route = resolve_route(scope, route_action, rest)?;
    let action = match route_action {
        RouteAction::Push => Action::Push,
        RouteAction::List => Action::List,
        RouteAction::Pull | RouteAction::Batch => Action::Pull,
    };
    if let TargetKind::Bundle(members) = &route.target.kind {
        let public = members.iter().all(|m| is_public(m, Action::Pull));
        let (caller, _) = authenticate(&state, &parts, body, Some(&route), public).await?;
        return bundle::bundle_pull(&state, &route, members, &caller).await;
    }
    let public = is_public(&route.target.collection, action);
    let (caller, body) = authenticate(&state, &parts, body, Some(&route), public).await?;
    authorize(&state, &caller, &route, action).await?;
    if action != Action::Push {
        rate_check(&state, &parts, &route, &caller, action)?;
    }
    if route.target.collection.is_binary() {
        return match action {
            Action::Push => blob::push_blob(&state, &route, &caller, &parts, body).await,
            Action::Pull => blob::pull_blob(&state, &route, &parts.headers).await,
            Action::List => list::list(&state, &route, parts.uri.query()).await,
        };
    }
    match route_action {
        RouteAction::Pull | RouteAction::Batch => {
            pull::pull(&state, &route, &caller, parts.uri.query(), &parts.headers).await
        }
        RouteAction::Push => push::push(&state, &route, &caller, &parts, body).await,
        RouteAction::List => list::list(&state, &route, parts.uri.query()).await,
    }
}
