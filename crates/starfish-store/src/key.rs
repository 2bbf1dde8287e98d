//! [`ObjectKey`]: the only kind of key the store accepts, built once from a
//! collection's template and checked path parameters.
//!
//! A client's parameters reach the store only through [`ObjectKey::resolve`], which
//! checks every value against the parameter rule and the whole key against the
//! length and safety bounds. Bookkeeping objects (a blob's metadata sidecar, a log's
//! chunks, a document's keyring sibling) are derived from a resolved key by the store's
//! own methods; no parameter can name them.

use starfish_protocol::names::{NamespaceName, is_param_value, is_reserved};
use starfish_protocol::template::{IDENTITY_PARAM, PathTemplate, is_safe_key};
use std::fmt;
use std::sync::Arc;

/// Longest accepted path parameter, in bytes (under every filesystem's `NAME_MAX`,
/// with room for the store's own suffixes).
pub const MAX_PARAM_BYTES: usize = 200;
/// Longest accepted object key, in bytes (under S3's 1,024-byte key limit, with
/// room for a namespace prefix and the store's own suffixes).
pub(crate) const MAX_KEY_BYTES: usize = 768;

/// Why a key could not be built: the client gets `400 Invalid path parameter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A parameter is missing.
    #[error("missing required path parameter")]
    Missing,
    /// A value breaks the character, length or safety rules.
    #[error("invalid path parameter")]
    Invalid,
}

/// Path parameters whose values passed the parameter rule, in template order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(Arc<str>, String)>);

impl PathParams {
    /// Checks `pairs` (name, value): every value must pass the parameter rule and
    /// the length bound.
    pub fn checked(
        pairs: impl IntoIterator<Item = (impl Into<Arc<str>>, String)>,
    ) -> Result<Self, KeyError> {
        let mut out = Vec::new();
        for (name, value) in pairs {
            if value.len() > MAX_PARAM_BYTES || !is_param_value(&value) || is_reserved(&value) {
                return Err(KeyError::Invalid);
            }
            out.push((name.into(), value));
        }
        Ok(Self(out))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| &**k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `{identity}` value, when the template has one.
    pub fn identity(&self) -> Option<&str> {
        self.get(IDENTITY_PARAM)
    }

    /// Every (name, value), in template order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, v.as_str()))
    }
}

/// A resolved object key such as `users/abc/notes`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(Box<str>);

impl ObjectKey {
    /// Fills the first `segments` segments of `template` from `params`, then appends
    /// `suffix` (a bundle member's name, from the config). The one constructor that
    /// takes client input.
    pub fn resolve(
        template: &PathTemplate,
        segments: usize,
        params: &PathParams,
        suffix: Option<&str>,
    ) -> Result<Self, KeyError> {
        let key = template
            .resolve_first(segments, |p| params.get(p), suffix)
            .ok_or(KeyError::Missing)?;
        if key.is_empty()
            || key.len() > MAX_KEY_BYTES
            || !is_safe_key(&key)
            || has_dot_segment(&key)
        {
            return Err(KeyError::Invalid);
        }
        Ok(Self(key))
    }

    /// The key of a server-owned object named after a namespace (its registry
    /// record): a valid namespace name is a safe, single segment.
    pub fn named(name: &NamespaceName) -> Self {
        Self(name.as_str().into())
    }

    /// The key of a server-owned object with a fixed name (a record of its own).
    pub fn fixed(name: &'static str) -> Self {
        Self(name.into())
    }

    /// A batch of a namespace's audit trail, `_starfish/audit/<namespace>/<batch>`
    /// in its part of the store: under the server's own root, which no client key
    /// can name. `batch` is the server's (`<ms>-<node>-<n>`).
    pub fn audit_batch(namespace: &NamespaceName, batch: &str) -> Self {
        Self(format!("{}/{namespace}/{batch}", Self::AUDIT_ROOT).into())
    }

    /// The folder of a namespace's audit trail (see [`Self::audit_batch`]).
    pub fn audit_folder(namespace: &NamespaceName) -> Self {
        Self(format!("{}/{namespace}", Self::AUDIT_ROOT).into())
    }

    /// Where audit trails are kept in a namespace's part of the store.
    const AUDIT_ROOT: &'static str = "_starfish/audit";

    /// A namespace's webhook route `id` (created through the admin API), under the
    /// server's own root in its part of the store; `None` for an id that is not a
    /// lower-case name of at most 64 letters, digits and `-`.
    pub fn webhook(id: &str) -> Option<Self> {
        let plain = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        plain.then(|| Self(format!("{}/{id}", Self::WEBHOOK_ROOT).into()))
    }

    /// The folder of a namespace's webhook routes (see [`Self::webhook`]).
    pub fn webhook_folder() -> Self {
        Self(Self::WEBHOOK_ROOT.into())
    }

    /// Where a namespace's webhook routes are kept in its part of the store.
    const WEBHOOK_ROOT: &'static str = "_starfish/webhooks";

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keyring document beside this one (`<key>/_keyring`).
    pub fn keyring(&self) -> Self {
        self.derived("/_keyring")
    }

    /// A bookkeeping object beside this key (`<key>/<name>` or `<key><suffix>`): only
    /// the store builds these, from names it owns.
    pub(super) fn derived(&self, joined: impl fmt::Display) -> Self {
        Self(format!("{}{joined}", self.0).into())
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `.` and `..` segments pass the character rule; they never name a document.
fn has_dot_segment(key: &str) -> bool {
    super::text::split_ascii(key, b'/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<PathParams, KeyError> {
        PathParams::checked(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())))
    }

    #[test]
    fn keys_come_only_from_checked_parameters() {
        let t = PathTemplate::parse("users/{identity}/{doc}").unwrap();
        let p = params(&[("identity", "abc"), ("doc", "notes")]).unwrap();
        let key = ObjectKey::resolve(&t, 3, &p, None).unwrap();
        assert_eq!(key.as_str(), "users/abc/notes");
        let member = ObjectKey::resolve(&t, 3, &p, Some("profile")).unwrap();
        assert_eq!(member.as_str(), "users/abc/notes/profile");
        assert_eq!(
            ObjectKey::resolve(&t, 2, &p, None).unwrap().as_str(),
            "users/abc"
        );
        for bad in [
            "a/b",
            "",
            "a b",
            "a%2Fb",
            "ü",
            "x.__meta__",
            "x__seg",
            "_keyring",
        ] {
            assert_eq!(params(&[("doc", bad)]), Err(KeyError::Invalid), "{bad:?}");
        }
        assert_eq!(
            params(&[("doc", &"x".repeat(MAX_PARAM_BYTES + 1))]),
            Err(KeyError::Invalid)
        );
        for dots in [".", "..", "a..b"] {
            let p = params(&[("identity", "abc"), ("doc", dots)]).unwrap();
            assert_eq!(
                ObjectKey::resolve(&t, 3, &p, None),
                Err(KeyError::Invalid),
                "{dots}"
            );
        }
        let missing = params(&[("identity", "abc")]).unwrap();
        assert_eq!(
            ObjectKey::resolve(&t, 3, &missing, None),
            Err(KeyError::Missing)
        );
    }
}
