//! An embeddable [Starfish](https://github.com/Drakkar-Software/Starfish) document-sync
//! server for axum, wire-compatible with the reference servers.
//!
//! [`create_sync_router`] turns a validated [`SyncConfig`] into an [`axum::Router`]
//! serving pull and push for every collection, at the root and under each namespace.
//! Documents are stored through [`object_store`] in the reference's layout, and
//! writes are compare-and-swap on the store itself, so several server processes may
//! share one bucket.
//!
//! # Example
//!
//! ```no_run
//! use starfish_server::{SyncConfig, SyncOptions, create_sync_router, store::DocStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SyncConfig::from_yaml_str(r#"
//! version: 1
//! collections:
//!   - name: notes
//!     storagePath: "users/{identity}/notes"
//!     readRoles: [self]
//!     writeRoles: [self]
//! "#)?;
//! let sync = create_sync_router(SyncOptions::new(config, DocStore::memory()))?;
//! let app = axum::Router::new().nest("/v1", sync);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```
//!
//! # The pipeline
//!
//! Every request takes the same path, each step in one place (`docs/architecture.md`):
//! the path becomes a typed endpoint with resolved object keys (`routes/endpoint.rs`);
//! an [`auth::Authenticator`] says who is calling; one authorisation step decides for
//! each key read or written (`access`: restrictions, roles, cap scopes, then your
//! [`access::Authorize`] hook); the sync core applies the protocol's rules (`sync`);
//! the store reads and compare-and-swaps ([`store::DocStore`]); every accepted write is
//! told to your [`AfterWrite`] hook.
//!
//! # Layout
//!
//! - [`SyncConfig`]: the config file parsed once into typed values, with the
//!   reference's messages; route conflicts and overlapping templates are load errors.
//! - [`SyncOptions`]: the store, the clock, the authenticator and the hooks; CORS
//!   ([`CorsSettings`]) and response compression for browsers.
//! - [`auth`]: who is calling: the [`auth::Authenticator`] trait, the default cap-cert
//!   settings ([`auth::CapAuthOptions`]), revocation, the [`auth::Clock`].
//! - [`access`]: the [`access::RoleEnricher`] and [`access::Authorize`] hooks.
//! - [`store`]: [`store::DocStore`] over any `object_store`, with compare-and-swap.
//! - [`AfterWrite`]: one [`WriteEvent`] per accepted write, never the data.
//!
//! # Features
//!
//! - `fs` (default): [`store::DocStore::local`], a directory in the reference's layout.
//! - `aws`: `store::DocStore::s3_from_env`, an S3-compatible bucket with conditional writes.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod access;
pub mod auth;
mod browser;
mod config;
mod error;
mod events;
mod protocol;
mod routes;
mod state;
pub mod store;
mod sync;

pub use browser::CorsSettings;
pub use config::{ConfigError, SyncConfig};
pub use events::{AfterWrite, WriteAction, WriteEvent};
pub use routes::headers::SecurityHeaders;
pub use state::{
    ConfigEndpoint, DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT,
    SyncOptions,
};

/// Not part of the API: what the conformance tests check against the reference's
/// vectors (canonical JSON, hashes, certificates, signatures, scope globs). It may
/// change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::auth::capcert::{CapCert, user_id_from_pub_hex, verify_cap_cert};
    pub use crate::auth::scope::{canonical_scope_path, match_scope_path, path_glob_match};
    pub use crate::auth::signing::SignedRequest;
    pub use crate::config::names::NamespaceName;
    pub use crate::config::template::PathTemplate;
    pub use crate::protocol::append::append_hash;
    pub use crate::protocol::author::{
        APPEND_AUTHOR_DOMAIN, DOC_AUTHOR_DOMAIN, author_signing_input, verify_author,
    };
    pub use crate::protocol::canonical::{compute_hash, sha256_hex, stable_stringify};
}

/// Builds the sync routes for `options`: `GET /health`, and pull/push for every
/// collection at the root and under `/<namespace>/`. Mount it at the root or under a
/// prefix with [`axum::Router::nest`].
///
/// With [`SyncOptions::with_cors`] the router answers CORS preflights and adds CORS
/// headers; with compression on (the default) JSON responses are gzip- or
/// brotli-encoded when `Accept-Encoding` asks.
///
/// # Errors
/// [`ConfigError::Invalid`] when two collections map to conflicting routes;
/// [`ConfigError::Cors`] when the CORS settings cannot work (credentials with `*`).
pub fn create_sync_router(options: SyncOptions) -> Result<axum::Router, ConfigError> {
    let headers: std::sync::Arc<[_]> = options.security_headers.compile().into();
    let cors = options.cors.as_ref().map(CorsSettings::layer).transpose()?;
    let compression = options.compression;
    let limits = routes::limits::Limits::new(options.request_timeout, options.max_in_flight);
    let state = state::AppState::new(options)?;
    let mut router = routes::router()
        .with_state(state)
        .layer(axum::middleware::from_fn(move |request, next| {
            routes::limits::enforce(limits.clone(), request, next)
        }));
    if compression {
        router = router.layer(browser::compression());
    }
    if let Some(cors) = cors {
        router = router.layer(cors);
    }
    // Outermost: CORS preflights get the security headers too.
    Ok(
        router.layer(axum::middleware::map_response(move |response| {
            let headers = headers.clone();
            async move { routes::headers::apply(&headers, response) }
        })),
    )
}
