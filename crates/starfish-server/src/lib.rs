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
//! # Layout
//!
//! - [`config`]: the config file parsed once into typed values, with the reference's messages.
//! - [`protocol`]: canonical JSON, hashes, push envelopes and stored documents; no I/O.
//! - [`auth`]: the caller's identity and roles, and the [`auth::Clock`].
//! - [`access`]: readRoles/writeRoles decisions; pure functions.
//! - [`store`]: the `object_store` adapter and compare-and-swap.
//! - `routes`: axum handlers; `error`: `ApiError`, the only place a status is chosen.
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
pub mod config;
mod error;
mod events;
pub mod protocol;
mod routes;
mod state;
pub mod store;
mod sync;

pub use config::{ConfigError, SyncConfig};
pub use events::{AfterWrite, WriteAction, WriteEvent};
pub use state::{ConfigEndpoint, DEFAULT_AUTH_TIMEOUT, SyncOptions};

/// Builds the sync routes for `options`: `GET /health`, and pull/push for every
/// collection at the root and under `/<namespace>/`. Mount it at the root or under a
/// prefix with [`axum::Router::nest`].
///
/// # Errors
/// [`ConfigError::Invalid`] when two collections map to conflicting routes.
pub fn create_sync_router(options: SyncOptions) -> Result<axum::Router, ConfigError> {
    let state = state::AppState::new(options)?;
    Ok(routes::router().with_state(state))
}
