//! An embeddable [Starfish](https://github.com/Drakkar-Software/Starfish) document-sync
//! server for axum, wire-compatible with the reference servers.
//!
//! [`create_sync_router`] turns a validated [`SyncConfig`] into an [`axum::Router`]
//! serving pull and push for every collection, at the root and under each namespace.
//! Documents are stored through [`object_store`] in the reference's layout, and
//! writes are compare-and-swap on the store itself, so several server processes may
//! share one bucket.
//!
//! # Embedding in axum
//!
//! The sync routes are an ordinary [`axum::Router`]: merge them into your app next to
//! your own routes and serve it as usual.
//!
//! ```no_run
//! use axum::{Router, routing::get};
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
//! let app = Router::new()
//!     .route("/", get(|| async { "my app" }))
//!     .merge(sync);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! // `into_make_service_with_connect_info` gives rate limits the client's address.
//! axum::serve(
//!     listener,
//!     app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
//! )
//! .await?;
//! # Ok(()) }
//! ```
//!
//! # Mounting under `/v1`
//!
//! [`axum::Router::nest`] mounts the routes under a prefix: `/v1/pull/...`,
//! `/v1/push/...`, `/v1/health`. Request signatures cover the path the client sent,
//! prefix included, so clients sign `/v1/...` paths.
//!
//! ```no_run
//! use starfish_server::{SyncConfig, SyncOptions, create_sync_router, store::DocStore};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SyncConfig::from_json_str(&std::fs::read_to_string("starfish.json")?)?;
//! let sync = create_sync_router(SyncOptions::new(config, DocStore::local("./data")?))?;
//! let app = axum::Router::new().nest("/v1", sync);
//! axum::serve(tokio::net::TcpListener::bind("127.0.0.1:8080").await?, app).await?;
//! # Ok(()) }
//! ```
//!
//! # A custom authenticator
//!
//! The default [`auth::CapCertAuthenticator`] verifies the reference's capability
//! certificates. Any [`auth::Authenticator`] may replace it: here, bearer tokens looked
//! up in a table. The [`auth::Caller`] it returns holds the identity (for `self`
//! collections) and the roles that `readRoles` and `writeRoles` are checked against.
//!
//! ```
//! use starfish_server::auth::{AuthError, AuthRequest, Authenticator, Caller};
//! use starfish_server::{SyncConfig, SyncOptions, create_sync_router, store::DocStore};
//! use std::collections::HashMap;
//! use std::future::Future;
//! use std::pin::Pin;
//! use std::sync::Arc;
//!
//! /// `Authorization: Bearer <token>`, each token naming a user and their roles.
//! struct BearerTokens(HashMap<String, (String, Vec<Arc<str>>)>);
//!
//! impl Authenticator for BearerTokens {
//!     fn authenticate<'a>(
//!         &'a self,
//!         request: AuthRequest<'a>,
//!     ) -> Pin<Box<dyn Future<Output = Result<Caller, AuthError>> + Send + 'a>> {
//!         Box::pin(async move {
//!             let header = request.headers.get("authorization");
//!             let Some(value) = header.and_then(|v| v.to_str().ok()) else {
//!                 return Ok(Caller::anonymous()); // the `public` role only
//!             };
//!             let token = value.strip_prefix("Bearer ").unwrap_or_default();
//!             match self.0.get(token) {
//!                 Some((user, roles)) => Ok(Caller::verified(user.as_str(), roles.clone())),
//!                 None => Err(AuthError::Unauthorized("unknown token".into())),
//!             }
//!         })
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tokens = HashMap::from([(
//!     "s3cr3t".to_owned(),
//!     ("alice".to_owned(), vec![Arc::from("editor")]),
//! )]);
//! let config = SyncConfig::from_yaml_str(r#"
//! version: 1
//! collections:
//!   - {name: notes, storagePath: "users/{identity}/notes", readRoles: [self], writeRoles: [self]}
//!   - {name: wiki, storagePath: "wiki/{page}", readRoles: [public], writeRoles: [editor]}
//! "#)?;
//! let options = SyncOptions::new(config, DocStore::memory())
//!     .with_authenticator(Arc::new(BearerTokens(tokens)));
//! let sync = create_sync_router(options)?;
//! # let _ = sync;
//! # Ok(()) }
//! ```
//!
//! # A custom store
//!
//! [`store::DocStore::new`] wraps any [`object_store::ObjectStore`]; its
//! [`store::Capabilities`] say whether the store can do conditional updates
//! (`PutMode::Update`: then several processes may share it) and keep attributes.
//! Here, one tenant's prefix inside a shared in-memory store; a wrapper of your own
//! (metrics, encryption at rest, ...) works the same way.
//!
//! ```
//! use object_store::{ObjectStore, memory::InMemory, prefix::PrefixStore};
//! use starfish_server::store::{Capabilities, DocStore};
//! use starfish_server::{SyncConfig, SyncOptions, create_sync_router};
//! use std::sync::Arc;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shared = Arc::new(InMemory::new());
//! let tenant: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(shared, "tenants/acme"));
//! let store = DocStore::new(
//!     tenant,
//!     Capabilities {
//!         conditional_update: true, // InMemory honours PutMode::Update
//!         attributes: true,
//!     },
//! );
//! let config = SyncConfig::from_json_str(
//!     r#"{"version":1,"collections":[{"name":"board","storagePath":"board/{topic}",
//!         "readRoles":["public"],"writeRoles":["public"]}]}"#,
//! )?;
//! let sync = create_sync_router(SyncOptions::new(config, store))?;
//! # let _ = sync;
//! # Ok(()) }
//! ```
//!
//! With the `aws` feature, `store::DocStore::s3` opens an S3-compatible bucket from
//! `store::S3Settings` (the `AWS_*` environment, then your overrides).
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
//! - [`store`]: [`store::DocStore`] over any `object_store`, with compare-and-swap
//!   (the `starfish-store` crate, re-exported).
//! - [`AfterWrite`]: one [`WriteEvent`] per accepted write, never the data.
//! - [`webhooks`]: webhook ingress, HMAC-verified inbound `POST`s made into pushes.
//! - [`hooks`]: server plugins ([`hooks::Plugin`]), the reference's `ServerPlugin`:
//!   certificate validators and hooks at named places of the pipeline.
//!
//! # Features
//!
//! - `fs` (default): `store::DocStore::local`, a directory in the reference's layout
//!   (object_store's `LocalFileSystem`).
//! - `aws`: `store::DocStore::s3` and `store::DocStore::s3_from_env`, an
//!   S3-compatible bucket with conditional writes, and `store::S3Settings`. It brings
//!   an HTTP client and TLS (object_store's `aws` feature); the `starfish` binary
//!   enables it.
//!
//! - `redis`: [`auth::RedisReplay`] and [`access::RedisLimits`], the replay cache and
//!   the rate limits shared by several nodes through Redis.
//! - `nats`: [`live::NatsFeed`], live changes carried between nodes by NATS.
//!
//! Without `fs` or `aws`, [`store::DocStore::memory`] and [`store::DocStore::new`] over any
//! `ObjectStore` remain.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod access;
mod app;
pub mod audit;
pub mod auth;
mod browser;
mod config;
pub mod hooks;
pub mod live;
mod metrics;
pub mod migrate;
mod openapi;
pub mod projections;
pub mod queue;
pub mod rotate;
mod routes;
pub mod sharing;
pub mod store;
mod sync;
mod tenants;
mod util;
pub mod webhooks;

pub use app::state::{
    ConfigEndpoint, DEFAULT_AUTH_TIMEOUT, DEFAULT_MAX_APPEND_PULL_ELEMENTS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_SINGLE_LOG_BYTES, DEFAULT_REQUEST_TIMEOUT, SyncOptions,
};
pub use browser::CorsSettings;
pub use browser::headers::SecurityHeaders;
pub use config::{ConfigError, Isolation, NamespaceLimits, Quota, SyncConfig};
pub use hooks::{AfterWrite, ReadinessCheck, WriteAction, WriteEvent};
pub use metrics::Metrics;
pub use openapi::openapi_document;
pub use routes::{SyncService, create_sync_router, create_sync_service};

pub use tenants::TenantOptions;

/// Not part of the API: what the conformance tests and fuzzing check of the config's
/// path templates (the wire format itself is `starfish_protocol`). It may change in
/// any release.
#[doc(hidden)]
pub mod internals {
    pub use starfish_protocol::names::NamespaceName;
    pub use starfish_protocol::template::{PathTemplate, Segment};

    /// The object key a request with path parameters `params` (name, value) resolves
    /// to: the first `segments` segments of `template`, then `suffix` (a bundle
    /// member). `Err` holds the text the client would get.
    ///
    /// # Errors
    /// A parameter or the key breaks the rules (`400 Invalid path parameter`), or
    /// a parameter is missing.
    pub fn resolve_key(
        template: &PathTemplate,
        segments: usize,
        params: &[(&str, &str)],
        suffix: Option<&str>,
    ) -> Result<String, String> {
        let params = crate::store::PathParams::checked(
            params
                .iter()
                .map(|(name, value)| (*name, (*value).to_owned())),
        )
        .map_err(|e| e.to_string())?;
        crate::store::ObjectKey::resolve(template, segments, &params, suffix)
            .map(|key| key.as_str().to_owned())
            .map_err(|e| e.to_string())
    }
}

/// The crate README's example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
