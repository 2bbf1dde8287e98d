//! The sync configuration: parsed once at load time into typed values.
//!
//! [`SyncConfig::from_json_str`] and [`SyncConfig::from_yaml_str`] read the reference's
//! `SyncConfig` format, apply its defaults and validate it with the reference's exact
//! messages (all errors are collected, not first-fail). Past this module no `String`
//! stands for a role, a template or a size.

pub(crate) mod queue;
mod raw;
mod routes;
pub(crate) mod schema;
mod tenancy;
mod validate;

// The name rules and `storagePath` templates are the protocol's (a client needs them
// too): `crate::config::names` and `crate::config::template` are theirs.
pub(crate) use starfish_protocol::{names, template};

pub(crate) use names::{CollectionName, NamespaceName, is_reserved};
pub(crate) use routes::{RouteTable, Target};
pub use starfish_store::Quota;
pub(crate) use template::{IDENTITY_PARAM, PathTemplate, Segment};
pub use tenancy::{Isolation, NamespaceLimits};
pub(crate) use tenancy::{MAX_ISOLATED_NAME_BYTES, trusted_roots};

use serde_json::Value;
use std::num::NonZeroU64;
use std::sync::Arc;

/// Default per-collection push limit when `maxBodyBytes` is not set. The reference has
/// none for public writes; we never run without one.
pub(crate) const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;

/// Why a config was refused. `Display` gives the reference's `StartupError` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON (or YAML).
    #[error("Failed to parse sync config as {format}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The document has the wrong shape (a field of the wrong type, say).
    #[error("Invalid sync config: {0}")]
    Shape(String),
    /// Validation failed; one message per problem, in the reference's order.
    #[error("Invalid sync config:\n{}", .0.join("\n"))]
    Invalid(Vec<String>),
    /// The [`crate::browser::CorsSettings`] cannot work (credentials with the `*` origin, an
    /// origin that is not one); the message starts with `CORS misconfiguration:`.
    #[error("{0}")]
    Cors(String),
}

/// A whole validated configuration: [`SyncConfig::from_json_str`] or
/// [`SyncConfig::from_yaml_str`], then [`crate::app::state::SyncOptions::new`].
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Collections mounted at the root.
    pub(crate) collections: Vec<Arc<Collection>>,
    /// Named namespaces, in file order.
    pub(crate) namespaces: Vec<Namespace>,
    /// Identity restrictions at the top level.
    pub(crate) restrictions: Vec<Restriction>,
    /// Non-fatal findings (the reference's `collectConfigWarnings`, then ours).
    pub(crate) warnings: Vec<String>,
    /// The warnings that do not depend on isolation.
    pub(crate) base_warnings: Vec<String>,
    /// The root's routes, built at load.
    pub(crate) routes: Arc<RouteTable>,
    /// The isolation of namespaces that do not choose their own.
    pub(crate) isolation: Isolation,
    /// `namespaceTemplates`: named sets of collections that namespaces created at
    /// runtime are made from.
    pub(crate) templates: Vec<Namespace>,
}

/// A namespace: its collections are mounted under `/<name>/…`.
#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    /// The validated name.
    pub name: NamespaceName,
    /// Its collections.
    pub collections: Vec<Arc<Collection>>,
    /// Identity restrictions for the namespace.
    pub restrictions: Vec<Restriction>,
    /// Its routes, built at load.
    pub(crate) routes: Arc<RouteTable>,
    /// Its own `isolation`, when it sets one.
    pub(crate) isolation: Option<Isolation>,
    /// `trustedRoots`: only certificates from these roots act here.
    pub(crate) trusted_roots: Option<Arc<[String]>>,
    /// `quota`: most bytes and documents it may hold.
    pub(crate) quota: Option<Quota>,
    /// `limits`: requests per window and in flight.
    pub(crate) limits: Option<NamespaceLimits>,
    /// `encryptAtRest`: its collections with `encryption: "none"` are sealed in the
    /// store (starfish-store's `seal.rs`).
    pub(crate) encrypt_at_rest: bool,
}

/// A role name as it appears in `readRoles`/`writeRoles`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// `public`: anyone, including anonymous callers.
    Public,
    /// `self`: the `{identity}` path parameter equals the caller's identity.
    Owner,
    /// Any other role (`cap:read:notes`, `device:root`, custom roles).
    Named(Arc<str>),
}

impl Role {
    fn parse(s: &str) -> Self {
        match s {
            "public" => Self::Public,
            "self" => Self::Owner,
            other => Self::Named(other.into()),
        }
    }

    /// The role as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Public => "public",
            Self::Owner => "self",
            Self::Named(n) => n,
        }
    }
}

/// The roles one action requires (any one of them suffices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoleSet(Vec<Role>);

impl RoleSet {
    fn parse(roles: &[String]) -> Self {
        Self(roles.iter().map(|r| Role::parse(r)).collect())
    }

    /// True when the set contains `public`.
    pub fn is_public(&self) -> bool {
        self.0.contains(&Role::Public)
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The roles in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Role> {
        self.0.iter()
    }
}

/// `encryption`: informational for the server, which never decrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Plain JSON.
    None,
    /// Client-side encrypted payloads, stored verbatim.
    Delegated,
}

/// What kind of payload a collection holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// JSON documents (`allowedMimeTypes` contains `application/json`).
    Json,
    /// Raw bytes whose media type matches one of the patterns.
    Binary(Vec<MimePattern>),
}

/// A media type pattern such as `image/*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimePattern(String);

impl MimePattern {
    /// The pattern as configured.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `appendOnly` settings with the reference's defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendOnly {
    /// Field of `data` that holds the elements (default `items`).
    pub field: String,
    /// False: nothing is stored, pushes are only acknowledged.
    pub persist: bool,
    /// Largest number of elements the log may hold.
    pub max_items: Option<NonZeroU64>,
    /// Elements per sealed chunk in the segmented layout.
    pub chunk_size: Option<NonZeroU64>,
    /// Appends must carry a verified author signature (default true).
    pub require_author_signature: bool,
    /// `?full=true` pulls are allowed (default true).
    pub allow_full: bool,
    /// Upper bound on `last`/`limit`.
    pub max_pull_limit: Option<NonZeroU64>,
    /// Oldest checkpoint a pull may ask for, relative to now.
    pub max_checkpoint_age_ms: Option<NonZeroU64>,
}

/// A rate-limit window: at most `max_requests` per `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateWindow {
    /// Window length in ms.
    pub window_ms: NonZeroU64,
    /// Requests allowed per window.
    pub max_requests: NonZeroU64,
}

/// What a rate-limit counter is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// The caller's identity (the IP for anonymous callers).
    Identity,
    /// The client IP.
    Ip,
    /// Identity and IP together.
    IdentityIp,
}

/// A resolved per-action rate-limit rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateRule {
    /// One counter.
    Single {
        /// The window.
        window: RateWindow,
        /// The bucket key.
        bucket: Bucket,
    },
    /// Two independent counters; the request is refused if either is over.
    Split {
        /// Per-identity window.
        identity: Option<RateWindow>,
        /// Per-IP window.
        ip: Option<RateWindow>,
    },
}

/// Rate-limit rules per action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimits {
    /// Rule for pushes.
    pub push: Option<RateRule>,
    /// Rule for pulls.
    pub pull: Option<RateRule>,
    /// Rule for listing.
    pub list: Option<RateRule>,
}

/// Per-field read/write roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPermission {
    /// Roles that may read the field (empty: everyone who may read the document).
    pub read: RoleSet,
    /// Roles that may write the field (empty: everyone who may write the document).
    pub write: RoleSet,
}

/// An action an identity restriction applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictedAction {
    /// Pulls.
    Pull,
    /// Pushes.
    Push,
    /// Listing.
    List,
}

/// A static allow or deny list of identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// True for `allow`, false for `deny`.
    pub allow: bool,
    /// The identities listed.
    pub identities: Vec<String>,
    /// The actions it applies to (empty: all).
    pub actions: Vec<RestrictedAction>,
}

/// One collection, validated.
#[derive(Debug, Clone)]
pub struct Collection {
    /// Unique within its scope.
    pub name: CollectionName,
    /// Where documents are stored; also the route below `/pull/` and `/push/`.
    pub storage_path: PathTemplate,
    /// Roles that may pull (and list).
    pub read_roles: RoleSet,
    /// Roles that may push.
    pub write_roles: RoleSet,
    /// Informational encryption mode.
    pub encryption: Encryption,
    /// Largest accepted push body. `maxBodyBytes`, or [`DEFAULT_MAX_BODY_BYTES`].
    pub max_body_bytes: NonZeroU64,
    /// True when `maxBodyBytes` was set in the config (echoed by `/config`).
    pub max_body_bytes_configured: bool,
    /// JSON or binary, with the allowed media types.
    pub payload: Payload,
    /// The configured `allowedMimeTypes`, as written.
    pub allowed_mime_types: Vec<String>,
    /// Rate-limit rules per action.
    pub rate_limits: RateLimits,
    /// `Cache-Control` max-age for pulls.
    pub cache_duration_ms: Option<u64>,
    /// JSON Schema for `data` on push, compiled.
    pub object_schema: Option<crate::config::schema::ObjectSchema>,
    /// Push routes are not mounted.
    pub pull_only: bool,
    /// Pull routes are not mounted.
    pub push_only: bool,
    /// Client hint, echoed by `/config`.
    pub force_full_fetch: bool,
    /// Bundle name; members share one storage path.
    pub bundle: Option<String>,
    /// Append-only log settings.
    pub append_only: Option<AppendOnly>,
    /// Documents older than this read as empty.
    pub ttl_ms: Option<NonZeroU64>,
    /// Per-field permissions, by top-level field.
    pub field_permissions: Vec<(String, FieldPermission)>,
    /// Client convention only; not used by the server.
    pub keyring_path: Option<String>,
    /// The `/list/…` route is mounted.
    pub listable: bool,
    /// Only a self-signed root device cap may access it.
    pub root_only: bool,
    /// Identity restrictions for this collection.
    pub restrictions: Vec<Restriction>,
    /// Publish each accepted write (our `queue` extension field; `config/queue.rs`).
    pub queue: Option<Arc<queue::QueueSettings>>,
    /// What `GET /config` tells clients about this collection (the reference's
    /// `toCollectionClientInfo`, built once at load).
    pub client_info: Value,
}

impl Collection {
    /// True for binary (non-JSON) collections.
    pub fn is_binary(&self) -> bool {
        matches!(self.payload, Payload::Binary(_))
    }
}

impl SyncConfig {
    /// Parses and validates a JSON config, as the reference's `parseConfigJson`.
    ///
    /// # Errors
    /// [`ConfigError`], whose text is the reference's `StartupError` message.
    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            format: "JSON",
            message: e.to_string(),
        })?;
        Self::from_value(value)
    }

    /// Parses and validates a YAML config (same fields as JSON). This is the only
    /// caller of the YAML parser.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_yaml_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            format: "YAML",
            message: e.to_string(),
        })?;
        Self::from_value(value)
    }

    /// Validates an already-parsed config document.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn from_value(value: Value) -> Result<Self, ConfigError> {
        validate::load_value(value)
    }

    /// Non-fatal findings, one sentence each (the reference's warnings, and pairs of
    /// collections in different scopes that share storage keys).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Sets the isolation of every namespace that does not choose its own (the
    /// config's top-level `isolation`, `shared` unless set).
    #[must_use]
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = isolation;
        self.warnings = self.base_warnings.clone();
        self.warnings
            .extend(validate::shared_storage_warnings(&self));
        self
    }

    /// The isolation of namespaces that do not choose their own.
    pub fn isolation(&self) -> Isolation {
        self.isolation
    }

    /// The isolation namespace `ns` gets.
    pub(crate) fn isolation_of(&self, ns: &Namespace) -> Isolation {
        ns.isolation.unwrap_or(self.isolation)
    }

    /// Collections at the root.
    pub fn root_collections(&self) -> usize {
        self.collections.len()
    }

    /// Namespace names with their number of collections, in file order.
    pub fn namespaces(&self) -> impl Iterator<Item = (&str, usize)> {
        self.namespaces
            .iter()
            .map(|ns| (ns.name.as_str(), ns.collections.len()))
    }

    /// The storage path templates of the root's collections, in file order.
    pub fn root_storage_paths(&self) -> impl Iterator<Item = &str> {
        self.collections.iter().map(|c| c.storage_path.as_str())
    }

    /// The collections of the namespace templates runtime namespaces are made from.
    pub fn template_collections(&self) -> impl Iterator<Item = &Arc<Collection>> {
        self.templates.iter().flat_map(|t| t.collections.iter())
    }

    /// Every collection with the namespace it belongs to (`None` for root).
    pub fn all_collections(
        &self,
    ) -> impl Iterator<Item = (Option<&NamespaceName>, &Arc<Collection>)> {
        self.collections.iter().map(|c| (None, c)).chain(
            self.namespaces
                .iter()
                .flat_map(|ns| ns.collections.iter().map(move |c| (Some(&ns.name), c))),
        )
    }
}
