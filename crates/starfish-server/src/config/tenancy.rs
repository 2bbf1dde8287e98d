//! Extension fields for namespaces as tenants (the reference ignores them):
//! `isolation` at the top level and per namespace, and a namespace's `trustedRoots`.

use serde_json::Value;
use starfish_store::Quota;

/// Where a namespace's documents live in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Keys exactly as the storagePath says, as in the reference: two namespaces with
    /// the same storagePath share documents.
    #[default]
    Shared,
    /// Every key under the namespace's own prefix (`_starfish/ns/<name>/…`).
    Prefixed,
    /// The namespace has an `object_store` of its own (see
    /// [`crate::store::NamespaceStores`]).
    Store,
}

impl Isolation {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Prefixed => "prefixed",
            Self::Store => "store",
        }
    }

    /// Parses the config spelling.
    ///
    /// # Errors
    /// The accepted spellings, when `s` is none of them.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "shared" => Ok(Self::Shared),
            "prefixed" => Ok(Self::Prefixed),
            "store" => Ok(Self::Store),
            other => Err(format!(
                "isolation must be \"shared\", \"prefixed\" or \"store\", got \"{other}\""
            )),
        }
    }
}

/// A namespace's request limits (`limits: {...}`, an extension), on top of its
/// collections' rate limits: requests per window for the whole namespace and per
/// caller identity (the IP for anonymous callers, `key:<id>` for an API key), and
/// requests in flight at once. Counted on each node (docs/namespaces.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceLimits {
    /// The window of both request counts, in ms.
    #[serde(default = "default_limit_window")]
    pub window_ms: u64,
    /// Requests per window for the whole namespace, counted before authentication
    /// and spread over the window (one every `window_ms / max_requests`, in bursts
    /// of at most a tenth of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
    /// Requests per window for one caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_identity: Option<u64>,
    /// Requests of the namespace in flight at once; past it, 429 at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Live-change subscriptions of the namespace open at once on one node (its
    /// share of the node's; by default half of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_subscriptions: Option<u32>,
}

fn default_limit_window() -> u64 {
    60_000
}

impl NamespaceLimits {
    /// Why these limits cannot be used, if they cannot.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.window_ms == 0
            || self.max_requests == Some(0)
            || self.max_requests_per_identity == Some(0)
            || self.max_concurrent == Some(0)
            || self.max_subscriptions == Some(0)
        {
            Some("limits must be positive whole numbers")
        } else if self.max_requests.is_none()
            && self.max_requests_per_identity.is_none()
            && self.max_concurrent.is_none()
            && self.max_subscriptions.is_none()
        {
            Some(
                "limits must set maxRequests, maxRequestsPerIdentity, maxConcurrent or maxSubscriptions",
            )
        } else {
            None
        }
    }
}

/// Reads a `limits` field (`label` prefixes the message).
pub(crate) fn limits(
    v: Option<&Value>,
    label: &str,
    errors: &mut Vec<String>,
) -> Option<NamespaceLimits> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value::<NamespaceLimits>(v.clone()) {
            Ok(l) => match l.problem() {
                Some(p) => {
                    errors.push(format!("{label}{p}"));
                    None
                }
                None => Some(l),
            },
            Err(e) => {
                errors.push(format!(
                    "{label}limits must be {{\"windowMs\", \"maxRequests\", \"maxRequestsPerIdentity\", \"maxConcurrent\"}} with whole numbers: {e}"
                ));
                None
            }
        },
    }
}

/// Reads a `quota` field (`label` prefixes the message).
pub(crate) fn quota(v: Option<&Value>, label: &str, errors: &mut Vec<String>) -> Option<Quota> {
    match v {
        None | Some(Value::Null) => None,
        Some(v) => match serde_json::from_value::<Quota>(v.clone()) {
            Ok(q) if q.max_bytes.is_none() && q.max_documents.is_none() => {
                errors.push(format!("{label}quota must set maxBytes or maxDocuments"));
                None
            }
            Ok(q) => Some(q),
            Err(e) => {
                errors.push(format!(
                    "{label}quota must be {{\"maxBytes\": N, \"maxDocuments\": N}} with whole numbers: {e}"
                ));
                None
            }
        },
    }
}

/// Longest namespace name that can be isolated: its prefix must leave room for the
/// longest key under S3's 1,024-byte bound.
pub(crate) const MAX_ISOLATED_NAME_BYTES: usize = 63;
/// Most roots one namespace may trust.
pub(crate) const MAX_TRUSTED_ROOTS: usize = 256;

/// Reads an `isolation` field (`label` prefixes the message).
pub(crate) fn isolation(
    v: Option<&Value>,
    label: &str,
    errors: &mut Vec<String>,
) -> Option<Isolation> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Isolation::parse(s)
            .map_err(|e| errors.push(format!("{label}{e}")))
            .ok(),
        Some(other) => {
            errors.push(format!("{label}isolation must be a string, got {other}"));
            None
        }
    }
}

/// Reads `trustedRoots`: issuer public keys (64 hex digits) or userIds.
pub(crate) fn trusted_roots(
    v: Option<&Value>,
    label: &str,
    errors: &mut Vec<String>,
) -> Option<Vec<String>> {
    let items = match v {
        None | Some(Value::Null) => return None,
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(format!("{label}trustedRoots must be an array of strings"));
            return None;
        }
    };
    if items.len() > MAX_TRUSTED_ROOTS {
        errors.push(format!(
            "{label}trustedRoots has {} entries, at most {MAX_TRUSTED_ROOTS}",
            items.len()
        ));
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item.as_str() {
            Some(s) if !s.is_empty() && s.len() <= 128 => out.push(trusted_form(s)),
            _ => {
                errors.push(format!(
                    "{label}trustedRoots entries must be non-empty strings of at most 128 bytes"
                ));
                return None;
            }
        }
    }
    Some(out)
}

/// A public key is compared in lower case; a userId as written.
fn trusted_form(s: &str) -> String {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        s.to_ascii_lowercase()
    } else {
        s.to_owned()
    }
}
