//! axum handlers. One entry point matches `/[ns/]pull|push/<storage path>` against the
//! route table built at load time; the handlers for each family live in their own file.

mod body;
mod health;
mod pull;
mod push;

use crate::access::{Action, Decision, decide};
use crate::auth::Caller;
use crate::config::{IDENTITY_PARAM, is_param_value, is_safe_key};
use crate::error::ApiError;
use crate::state::{AppState, Scope, Target};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use axum::routing::{any, get};
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

/// Authorises `caller` for `action` on the route.
pub(crate) fn authorize(
    caller: &Caller,
    route: &ResolvedRoute,
    action: Action,
) -> Result<(), ApiError> {
    match decide(
        caller,
        &route.target.collection,
        action,
        route.identity_param(),
    ) {
        Decision::Allow => Ok(()),
        Decision::Deny => Err(ApiError::Forbidden),
    }
}

async fn dispatch(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<Response, ApiError> {
    let (action, route) = resolve(&state, request.uri().path(), request.method())?;
    let caller = Caller::anonymous();
    match action {
        RouteAction::Pull => pull::pull(&state, &route, &caller, request.headers()).await,
        RouteAction::Push => push::push(&state, &route, &caller, request).await,
    }
}
