//! Validated names: namespaces, collections and path-parameter values.

use std::fmt;
use std::sync::Arc;

/// Names a namespace may not take: they are the router's own first path segments.
pub const RESERVED_NAMESPACES: [&str; 5] = ["pull", "push", "list", "health", "batch"];

/// More names a namespace created at runtime may not take (a config's namespaces
/// keep the reference's rules, so a reference config means the same here): the
/// server's own fixed routes (`/config`, `/events`, `/openapi.json`, `/webhook`), names a
/// deployment puts beside the server or mounts it under (`metrics`, `admin`,
/// `status`, `api`), and routes to come (`auth`, `changes`, `ws`). Also refused:
/// `v` followed by digits (`v1`, a version mount point) and any name starting with
/// `_` (the server's, as `_starfish` is).
pub const RESERVED_RUNTIME_NAMES: [&str; 11] = [
    "config", "events", "openapi", "metrics", "admin", "status", "api", "auth", "changes", "ws",
    "webhook",
];

/// True when a namespace created at runtime may not take `name` (see
/// [`RESERVED_RUNTIME_NAMES`]; the reference's [`RESERVED_NAMESPACES`] too).
pub fn is_reserved_runtime_name(name: &str) -> bool {
    let version = name
        .strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    version
        || name.starts_with('_')
        || RESERVED_NAMESPACES.contains(&name)
        || RESERVED_RUNTIME_NAMES.contains(&name)
}

/// Why a namespace name was refused (the reference's exact wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceNameError {
    /// A character other than letters, digits, `-`, `_`, or an empty name.
    Charset,
    /// One of [`RESERVED_NAMESPACES`].
    Reserved,
}

impl NamespaceNameError {
    /// The reference's message for this error about namespace `name`.
    pub fn message(self, name: &str) -> String {
        match self {
            Self::Charset => format!(
                "Namespace \"{name}\": name must only contain letters, digits, hyphens, and underscores"
            ),
            Self::Reserved => {
                format!("Namespace \"{name}\": name is reserved and cannot be used as a namespace")
            }
        }
    }
}

/// A namespace name: `^[a-zA-Z0-9_-]+$` and not reserved.
///
/// ```
/// use starfish_protocol::names::NamespaceName;
/// assert!(NamespaceName::parse("acme-1_b").is_ok());
/// assert!(NamespaceName::parse("pull").is_err());
/// assert!(NamespaceName::parse("a.b").is_err());
/// assert!(NamespaceName::parse("").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamespaceName(Arc<str>);

impl NamespaceName {
    /// Checks `name`; a name can fail both rules, so every failure is returned.
    ///
    /// # Errors
    /// The rules `name` breaks.
    pub fn parse(name: &str) -> Result<Self, Vec<NamespaceNameError>> {
        let mut errors = Vec::new();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            errors.push(NamespaceNameError::Charset);
        }
        if RESERVED_NAMESPACES.contains(&name) {
            errors.push(NamespaceNameError::Reserved);
        }
        if errors.is_empty() {
            Ok(Self(name.into()))
        } else {
            Err(errors)
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NamespaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A collection name, unique within its scope (root or one namespace).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionName(Arc<str>);

impl CollectionName {
    /// The collection name `name` (the config checks it).
    pub fn new(name: &str) -> Self {
        Self(name.into())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CollectionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `value` may stand for a path parameter: `^[a-zA-Z0-9._:@-]+$`
/// (the reference's rule; `.` and `..` pass it and are caught by the key check).
pub fn is_param_value(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'@' | b'-'))
}

/// Suffixes of the store's own objects: a blob's metadata sidecar, a log's chunk
/// folder, a staging file. No parameter value or template segment may end with one.
pub const RESERVED_SUFFIXES: [&str; 3] = [".__meta__", "__seg", ".tmp"];
/// Sibling documents the protocol gives a meaning to (`withKeyring`, shared
/// members): only a literal template segment may name them.
const RESERVED_NAMES: [&str; 2] = ["_keyring", "_members"];
/// The server's own part of the store (isolated namespaces, the tenant registry, API
/// keys): no parameter value and no template segment may name it, so no client key
/// can reach into it.
pub const SYSTEM_ROOT: &str = "_starfish";

/// True when a parameter value names (or would form the key of) a bookkeeping object.
pub fn is_reserved(value: &str) -> bool {
    // Case-insensitive: on a case-insensitive filesystem `_Starfish` is `_starfish`.
    value.eq_ignore_ascii_case(SYSTEM_ROOT)
        || RESERVED_NAMES.contains(&value)
        || RESERVED_SUFFIXES.iter().any(|s| value.ends_with(s))
}
