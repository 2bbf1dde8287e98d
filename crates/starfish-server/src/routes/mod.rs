//! axum handlers. One entry point matches `/[ns/]pull|push/<storage path>` against the
//! route table built at load time; the handlers for each family live in their own file.

mod body;
mod health;
mod pull;
mod push;

use crate::access::{Action, Decision, decide};
use crate::auth::{AuthRequest, Caller, SignedBody, parse_ts_header};
use crate::config::{IDENTITY_PARAM, is_param_value, is_safe_key};
use crate::error::ApiError;
use crate::state::{AppState, Scope, Target};
use axum::Router;
use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use axum::routing::{any, get};
use bytes::Bytes;
use percent_encoding::percent_decode_str;

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/{*rest}", any(dispatch))
        .fallback(not_found)
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// A request matched to a collection, with its parameters checked and key resolved.
#[derive(Debug)]
pub(crate) struct ResolvedRoute {
    pub(crate) target: Target,
    pub(crate) params: Vec<(String, String)>,
    /// The object key (storage path with parameters filled in), checked safe.
    pub(crate) key: String,
}

impl ResolvedRoute {
    /// The `{identity}` parameter, when the template has one.
    pub(crate) fn identity_param(&self) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == IDENTITY_PARAM)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteAction {
    Pull,
    Push,
}

/// Splits `/[ns/]action/rest` into a scope, an action and the remaining path.
fn split_path<'s>(state: &'s AppState, path: &'s str) -> Option<(&'s Scope, RouteAction, &'s str)> {
    let path = path.strip_prefix('/')?;
    let (first, rest) = path.split_once('/')?;
    let action = |s: &str| match s {
        "pull" => Some(RouteAction::Pull),
        "push" => Some(RouteAction::Push),
        _ => None,
    };
    if let Some(a) = action(first) {
        return Some((&state.root, a, &path[first.len()..]));
    }
    let scope = state.namespaces.get(first)?;
    let (second, _) = rest.split_once('/')?;
    let a = action(second)?;
    Some((scope, a, &rest[second.len()..]))
}

fn resolve(
    state: &AppState,
    path: &str,
    method: &Method,
) -> Result<(RouteAction, ResolvedRoute), ApiError> {
    let (scope, action, rest) = split_path(state, path).ok_or(ApiError::NotFound)?;
    let (table, expected) = match action {
        RouteAction::Pull => (&scope.pull, Method::GET),
        RouteAction::Push => (&scope.push, Method::POST),
    };
    if *method != expected {
        return Err(ApiError::NotFound);
    }
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
    let mut key = target
        .collection
        .storage_path
        .resolve(|p| params.iter().find(|(k, _)| k == p).map(|(_, v)| v.as_str()))
        .ok_or(ApiError::InvalidPathParameter)?;
    if let Some(suffix) = &target.key_suffix {
        key.push('/');
        key.push_str(suffix);
    }
    if !is_safe_key(&key) {
        return Err(ApiError::InvalidPathParameter);
    }
    Ok((
        action,
        ResolvedRoute {
            target,
            params,
            key,
        },
    ))
}

/// Authorises `caller` for `action` on the route, with roles from the enricher.
pub(crate) async fn authorize(
    state: &AppState,
    caller: &Caller,
    route: &ResolvedRoute,
    action: Action,
) -> Result<(), ApiError> {
    let collection = &route.target.collection;
    let extra = match &state.enricher {
        Some(enricher) => enricher
            .enrich(caller, collection, &route.params)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "role enricher failed");
                ApiError::AuthorizationError
            })?,
        None => Vec::new(),
    };
    match decide(caller, &extra, collection, action, route.identity_param()) {
        Decision::Allow => Ok(()),
        Decision::Deny => Err(ApiError::Forbidden),
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
async fn authenticate(
    state: &AppState,
    parts: &Parts,
    body: Body,
    route: &ResolvedRoute,
    action: Action,
) -> Result<(Caller, RequestBody), ApiError> {
    let collection = &route.target.collection;
    let required = match action {
        Action::Push => &collection.write_roles,
        Action::Pull | Action::List => &collection.read_roles,
    };
    let has_credentials = parts.headers.contains_key(header::AUTHORIZATION);
    if required.is_public() && !collection.root_only && !has_credentials {
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
        identity_param: route.identity_param(),
        batch: false,
    };
    let caller = tokio::time::timeout(state.auth_timeout, state.auth.authenticate(request))
        .await
        .map_err(|_| ApiError::AuthTimeout)??;
    Ok((caller, request_body))
}

async fn dispatch(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let (route_action, route) = resolve(&state, request.uri().path(), request.method())?;
    let action = match route_action {
        RouteAction::Pull => Action::Pull,
        RouteAction::Push => Action::Push,
    };
    let (parts, body) = request.into_parts();
    let (caller, body) = authenticate(&state, &parts, body, &route, action).await?;
    authorize(&state, &caller, &route, action).await?;
    match route_action {
        RouteAction::Pull => {
            pull::pull(&state, &route, &caller, parts.uri.query(), &parts.headers).await
        }
        RouteAction::Push => push::push(&state, &route, &caller, &parts.headers, body).await,
    }
}
