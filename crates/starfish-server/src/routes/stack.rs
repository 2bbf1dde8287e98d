//! The router: [`create_sync_router`] and [`create_sync_service`] build it from
//! [`SyncOptions`] into the state every request reads
//! ([`AppState`](crate::app::state::AppState)) and the layers around the routes
//! ([`Stack`]).

use crate::app::state::SyncOptions;
use crate::browser::CorsSettings;
use crate::config::ConfigError;

/// Builds the sync routes for `options`: `GET /health`, and pull/push for every
/// collection at the root and under `/<namespace>/`. Mount it at the root or under a
/// prefix with [`axum::Router::nest`].
///
/// With [`SyncOptions::with_cors`] the router answers CORS preflights and adds CORS
/// headers; with compression on (the default) JSON responses are gzip- or
/// brotli-encoded when `Accept-Encoding` asks.
///
/// The fixed routes (`/health`, the admin routes, ...) are routes of their own, and
/// every other path goes to the pipeline through `/{*rest}` and the fallback, so
/// `merge`, `route_layer`, a later `fallback` and route clashes behave as for any
/// axum router. [`create_sync_service`] is the same as one service.
///
/// # Errors
/// [`ConfigError::Invalid`] when two collections map to conflicting routes;
/// [`ConfigError::Cors`] when the CORS settings cannot work (credentials with `*`).
pub fn create_sync_router(options: SyncOptions) -> Result<axum::Router, ConfigError> {
    let (stack, state) = Stack::new(options)?;
    let pipeline = stack.wrap(crate::routes::Pipeline(state.clone()), true);
    // The fixed routes' own method routers answer HEAD (outside these layers).
    let layer = tower::layer::layer_fn(move |route: axum::routing::Route| stack.wrap(route, false));
    Ok(crate::routes::fixed_router(&state)
        .with_state(state)
        .layer(layer)
        .route_service("/{*rest}", pipeline.clone())
        .fallback_service(pipeline))
}

/// The sync routes of [`create_sync_router`] as one tower service, for a server that
/// routes to it itself: `axum::Router::fallback_service` or `nest_service`, or hyper
/// directly. It skips the route table's matching and parameter capture on every
/// request (what `starfish serve` does). A HEAD on a fixed route is answered with its
/// GET's headers and no body.
///
/// # Errors
/// As [`create_sync_router`].
pub fn create_sync_service(options: SyncOptions) -> Result<impl SyncService, ConfigError> {
    let (stack, state) = Stack::new(options)?;
    Ok(stack.wrap(crate::routes::Routes::new(state), true))
}

/// What [`create_sync_service`] returns: a tower service of axum requests, to clone
/// into every connection.
pub trait SyncService:
    tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> SyncService for S where
    S: tower::Service<
            axum::extract::Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + Sync
        + 'static
{
}

/// The router's own layers: request limits, compression, CORS, security headers.
#[derive(Clone)]
struct Stack {
    headers: std::sync::Arc<[(axum::http::HeaderName, axum::http::HeaderValue)]>,
    cors: Option<tower_http::cors::CorsLayer>,
    compression: bool,
    limits: crate::routes::limits::Limits,
}

impl Stack {
    fn new(options: SyncOptions) -> Result<(Self, crate::app::state::AppState), ConfigError> {
        let stack = Self {
            headers: options.security_headers.compile().into(),
            cors: options.cors.as_ref().map(CorsSettings::layer).transpose()?,
            compression: options.compression,
            limits: crate::routes::limits::Limits::new(
                options.request_timeout,
                options.max_in_flight,
            ),
        };
        Ok((stack, crate::app::state::AppState::new(options)?))
    }

    /// `inner` within the layers, as one service (`Router::layer` would wrap every
    /// route, and each wrapped route is cloned and boxed per request). With
    /// `answer_head`, a HEAD's body is dropped here.
    fn wrap<S: SyncService>(&self, inner: S, answer_head: bool) -> impl SyncService + use<S> {
        let routed = crate::routes::limits::Limited::new(inner, self.limits.clone());
        let compressed = if self.compression {
            tower::util::Either::Left(crate::browser::compression(routed))
        } else {
            tower::util::Either::Right(routed)
        };
        let cors = match &self.cors {
            Some(cors) => tower::util::Either::Left(tower::Layer::layer(cors, compressed)),
            None => tower::util::Either::Right(compressed),
        };
        // Outermost: CORS preflights get the security headers too.
        crate::browser::headers::Finished::new(cors, self.headers.clone(), answer_head)
    }
}
