//! Who is calling. The default [`CapCertAuthenticator`] verifies the reference's
//! capability certificates and per-request signatures (§3); an embedder may replace
//! it with any [`Authenticator`] (a JWT check, say) and add roles per collection with
//! a [`crate::access::RoleEnricher`].

mod admin_key;
mod nonce;
mod replay;
mod resolver;
mod revocation;
mod validators;
mod verified;

pub(crate) use admin_key::AdminKey;
pub use nonce::NonceCacheLimits;
#[cfg(feature = "redis")]
pub use replay::RedisReplay;
#[cfg(feature = "redis")]
pub(crate) use replay::connection as redis_connection;
pub use replay::{Claim, ReplayStore};
pub use resolver::{
    AuthError, AuthRequest, Authenticator, CapAuthOptions, CapCertAuthenticator, SignedBody,
};
pub use revocation::{InMemoryRevocationStore, RevocationError, RevocationStore};
pub(crate) use starfish_protocol::capcert::CapOp;
pub use starfish_protocol::capcert::{CapCert, CapKind};
pub(crate) use starfish_protocol::scope::match_scope_path;
pub(crate) use starfish_protocol::signing::parse_ts_header;
pub use starfish_store::{Clock, ManualClock, SystemClock};
pub use validators::{CapValidator, CapValidators};

use std::sync::Arc;

/// The role of a self-signed device cap (`iss == sub`): the user's root device.
pub(crate) const ROLE_DEVICE_ROOT: &str = "device:root";

/// What a verified cap-cert allows, checked on every collection (including `self`
/// ones, where the reference forgets to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CapGrant {
    /// Operations granted.
    pub ops: Vec<CapOp>,
    /// Collections granted (`*` = all).
    pub collections: Vec<String>,
}

impl CapGrant {
    /// True when the grant covers `op` on `collection`.
    pub(crate) fn allows(&self, op: CapOp, collection: &str) -> bool {
        self.ops.contains(&op) && self.collections.iter().any(|c| c == "*" || c == collection)
    }
}

/// A caller after authentication: anonymous, or an identity with roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    identity: Option<Arc<str>>,
    roles: Arc<[Arc<str>]>,
    scope_paths: Option<Arc<[String]>>,
    presenter: Option<Arc<str>>,
    grant: Option<Arc<CapGrant>>,
    root: Option<Arc<str>>,
    api_key: bool,
    /// A member or audience certificate: a grant from another user (its issuer).
    delegated: bool,
    /// When the credentials expire, in ms since the epoch (a cap-cert's `exp`).
    expires_ms: Option<u64>,
}

impl Caller {
    /// An anonymous caller; it holds only the `public` role.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A caller verified as `identity` holding `roles` (for custom authenticators).
    pub fn verified(identity: impl Into<Arc<str>>, roles: Vec<Arc<str>>) -> Self {
        Self {
            identity: Some(identity.into()),
            roles: roles.into(),
            ..Self::default()
        }
    }

    /// A caller verified by a cap-cert: its roles are shared with the cached certificate.
    pub(crate) fn from_cap(identity: &str, roles: Arc<[Arc<str>]>) -> Self {
        Self {
            identity: Some(identity.into()),
            roles,
            ..Self::default()
        }
    }

    /// Restricts the caller to `paths` (globs, §3.9).
    #[must_use]
    pub fn with_scope_paths(mut self, paths: Vec<String>) -> Self {
        self.scope_paths = Some(paths.into());
        self
    }

    /// Records the public key that signed this request.
    #[must_use]
    pub fn with_presenter(mut self, pub_hex: impl Into<Arc<str>>) -> Self {
        self.presenter = Some(pub_hex.into());
        self
    }

    /// Records the root key (hex) the caller's certificate chain starts from.
    #[must_use]
    pub fn with_root(mut self, root_pub_hex: impl Into<Arc<str>>) -> Self {
        self.root = Some(root_pub_hex.into());
        self
    }

    /// Marks the caller as authenticated by an API key.
    #[must_use]
    pub(crate) fn with_api_key(mut self) -> Self {
        self.api_key = true;
        self
    }

    /// True for a caller authenticated by an API key.
    /// Marks a caller acting on a member or audience certificate.
    pub(crate) fn with_delegation(mut self) -> Self {
        self.delegated = true;
        self
    }

    /// True for a caller acting on a member or audience certificate: a grant from
    /// another user, bounded by what that user shared (never a collection's
    /// `_members` directory, never a write of its `_keyring`).
    pub fn is_delegated(&self) -> bool {
        self.delegated
    }

    pub(crate) fn is_api_key(&self) -> bool {
        self.api_key
    }

    /// The root key (hex) of the caller's certificate, for cap-cert callers.
    pub fn root(&self) -> Option<&str> {
        self.root.as_deref()
    }

    /// This caller with credentials that expire at `ms` (ms since the epoch).
    #[must_use]
    pub fn with_expiry(mut self, ms: u64) -> Self {
        self.expires_ms = Some(ms);
        self
    }

    /// When the caller's credentials stop being accepted (ms since the epoch; for a
    /// cap-cert, its `exp` plus the allowed clock skew), if they do: an open
    /// live-change stream ends then.
    pub fn expires_ms(&self) -> Option<u64> {
        self.expires_ms
    }

    /// Restricts the caller to a cap grant.
    #[must_use]
    pub(crate) fn with_grant(mut self, grant: CapGrant) -> Self {
        self.grant = Some(Arc::new(grant));
        self
    }

    /// The bound identity, `None` for anonymous callers.
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The roles granted regardless of the collection (`self` is decided per request).
    pub fn roles(&self) -> &[Arc<str>] {
        &self.roles
    }

    /// Path globs the caller is confined to, if any.
    pub fn scope_paths(&self) -> Option<&[String]> {
        self.scope_paths.as_deref()
    }

    /// The key that signed the request, for author-proof binding.
    pub fn presenter(&self) -> Option<&str> {
        self.presenter.as_deref()
    }

    /// The cap grant, for cap-authenticated callers.
    pub(crate) fn grant(&self) -> Option<&CapGrant> {
        self.grant.as_deref()
    }
}
