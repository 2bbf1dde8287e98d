//! The access decision: which roles a caller holds for one collection and whether
//! they satisfy readRoles/writeRoles. Pure functions.

mod rate;

pub use rate::{DEFAULT_MAX_BUCKETS, RateLimiter, RateSubject};

use crate::auth::{Caller, CapOp};
use crate::config::{Collection, Role, RoleSet};
use futures::future::BoxFuture;
use std::sync::Arc;

/// A role enricher failed; the client gets `500 {"error":"Authorization error"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("role enricher failed: {0}")]
pub struct EnrichError(pub String);

/// Adds roles per collection after authentication, like the reference's
/// `roleEnricher` (team membership from a database, say). Set it with
/// [`crate::SyncOptions::with_role_enricher`].
pub trait RoleEnricher: Send + Sync + 'static {
    /// Extra roles `caller` holds for `collection` with these path parameters.
    fn enrich<'a>(
        &'a self,
        caller: &'a Caller,
        collection: &'a Collection,
        params: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, EnrichError>>;
}

/// The root-device role, required by `rootOnly` collections.
pub const ROLE_DEVICE_ROOT: &str = "device:root";

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read a document (also bundle and batch reads).
    Pull,
    /// Write a document.
    Push,
    /// List keys.
    List,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// `403 Forbidden`.
    Deny,
}

impl Action {
    /// The cap operation this action needs.
    pub fn cap_op(self) -> CapOp {
        match self {
            Self::Pull => CapOp::Read,
            Self::Push => CapOp::Write,
            Self::List => CapOp::List,
        }
    }
}

/// True when `caller` (with `extra` roles) holds `role` for this request. `self` holds
/// when the request's `{identity}` parameter equals the caller's identity.
fn holds(caller: &Caller, extra: &[Arc<str>], role: &Role, identity_param: Option<&str>) -> bool {
    match role {
        Role::Public => true,
        Role::Owner => matches!(
            (caller.identity(), identity_param),
            (Some(me), Some(param)) if me == param
        ),
        Role::Named(name) => caller.roles().iter().chain(extra).any(|r| **r == **name),
    }
}

/// True when `caller` holds any role in `required`.
pub fn holds_any(
    caller: &Caller,
    extra: &[Arc<str>],
    required: &RoleSet,
    identity_param: Option<&str>,
) -> bool {
    required
        .iter()
        .any(|r| holds(caller, extra, r, identity_param))
}

/// Decides whether `caller` (holding `extra` roles from an enricher) may perform
/// `action` on `collection`. `identity_param` is the request's `{identity}` path
/// parameter, if the template has one.
///
/// A cap-authenticated caller must also hold the cap operation for the action on this
/// collection (`scope.ops` x `scope.collections`), whatever role admits it: the
/// reference lets `self` admit a read-only cap to write.
pub fn decide(
    caller: &Caller,
    extra: &[Arc<str>],
    collection: &Collection,
    action: Action,
    identity_param: Option<&str>,
) -> Decision {
    if collection.root_only && !caller.roles().iter().any(|r| &**r == ROLE_DEVICE_ROOT) {
        return Decision::Deny;
    }
    if let Some(grant) = caller.grant() {
        if !grant.allows(action.cap_op(), collection.name.as_str()) {
            return Decision::Deny;
        }
    }
    let required = match action {
        Action::Pull | Action::List => &collection.read_roles,
        Action::Push => &collection.write_roles,
    };
    if holds_any(caller, extra, required, identity_param) {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncConfig;
    use std::sync::Arc;

    fn collection(json: &str) -> Arc<Collection> {
        let cfg = SyncConfig::from_json_str(&format!(r#"{{"version":1,"collections":[{json}]}}"#))
            .unwrap();
        cfg.collections[0].clone()
    }

    #[test]
    fn public_self_named_and_root_only() {
        let public = collection(
            r#"{"name":"f","storagePath":"f","readRoles":["public"],"writeRoles":["cap:write:f"]}"#,
        );
        let own = collection(
            r#"{"name":"n","storagePath":"u/{identity}/n","readRoles":["self"],"writeRoles":["self"]}"#,
        );
        let root = collection(
            r#"{"name":"v","storagePath":"v/{identity}","readRoles":["self"],"writeRoles":["self"],"rootOnly":true}"#,
        );
        let anon = Caller::anonymous();
        let alice = Caller::verified("alice", vec!["cap:write:f".into()]);
        let alice_root = Caller::verified("alice", vec![ROLE_DEVICE_ROOT.into()]);
        assert_eq!(
            decide(&anon, &[], &public, Action::Pull, None),
            Decision::Allow
        );
        assert_eq!(
            decide(&anon, &[], &public, Action::Push, None),
            Decision::Deny
        );
        assert_eq!(
            decide(&alice, &[], &public, Action::Push, None),
            Decision::Allow
        );
        assert_eq!(
            decide(&anon, &[], &own, Action::Pull, Some("alice")),
            Decision::Deny
        );
        assert_eq!(
            decide(&alice, &[], &own, Action::Pull, Some("alice")),
            Decision::Allow
        );
        assert_eq!(
            decide(&alice, &[], &own, Action::Push, Some("bob")),
            Decision::Deny
        );
        assert_eq!(
            decide(&alice, &[], &root, Action::Pull, Some("alice")),
            Decision::Deny
        );
        assert_eq!(
            decide(&alice_root, &[], &root, Action::Pull, Some("alice")),
            Decision::Allow
        );
    }
}
