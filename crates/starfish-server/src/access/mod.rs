//! Authorisation, in one place: for every key a request reads or writes (each bundle
//! member and batch entry included), `Gate::authorize` decides on the identity
//! restrictions (server, namespace, collection), `rootOnly`, the cap grant
//! (`scope.ops` x `scope.collections`), the identity binding of a cap, the
//! collection's roles (with an enricher's extra roles), the cap's `scope.paths` on the
//! resolved key, and last the embedder's [`Authorize`] hook.

mod budget;
mod rate;
mod restrictions;
mod shared;

pub(crate) use crate::auth::ROLE_DEVICE_ROOT;
pub(crate) use budget::Budget;
pub(crate) use rate::DEFAULT_MAX_BUCKETS;
pub(crate) use rate::{RateLimiter, RateSubject};
#[cfg(feature = "redis")]
pub use shared::RedisLimits;
pub use shared::SharedLimits;

/// True when `action` on `collection` needs no credentials (the reference does not
/// even run its resolver then).
pub(crate) fn is_public(collection: &crate::config::Collection, action: Action) -> bool {
    let required = match action {
        Action::Push => &collection.write_roles,
        Action::Pull | Action::List => &collection.read_roles,
    };
    required.is_public() && !collection.root_only
}

/// A request refused by a namespace's budget or a rate limit (`429`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every place for requests in flight is taken.
    TooManyConcurrent,
    /// Over a rate limit; `Retry-After` says when the window ends.
    RateLimited {
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

use crate::auth::{Caller, CapOp, match_scope_path};
use crate::config::{Collection, PathTemplate, Restriction, Role, RoleSet};
use crate::store::{NsStore, ObjectKey, PathParams};
use futures::future::BoxFuture;
use std::sync::Arc;

/// A hook failed; the client gets `500 {"error":"Authorization error"}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("authorization hook failed: {0}")]
pub struct HookError(pub String);

/// Adds roles per request after authentication, like the reference's `roleEnricher`
/// (team membership from a database, say). Set it with
/// [`crate::app::state::SyncOptions::with_role_enricher`].
pub trait RoleEnricher: Send + Sync + 'static {
    /// Extra roles the caller holds for this access.
    fn enrich<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, HookError>>;
}

/// The embedder's last word on an access the built-in rules allowed, like the
/// reference's plugin `authorize`. Set it with [`crate::app::state::SyncOptions::with_authorize`].
pub trait Authorize: Send + Sync + 'static {
    /// `Ok(true)` lets the access through, `Ok(false)` answers 403.
    fn authorize<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<bool, HookError>>;
}

/// One access to one object, as hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    store: &'a NsStore,
    caller: &'a Caller,
    namespace: Option<&'a str>,
    collection: &'a Collection,
    action: Action,
    key: &'a ObjectKey,
    params: &'a PathParams,
}

impl<'a> AccessRequest<'a> {
    /// Who is calling.
    pub fn caller(&self) -> &'a Caller {
        self.caller
    }

    /// The namespace, `None` at the root.
    pub fn namespace(&self) -> Option<&'a str> {
        self.namespace
    }

    /// The collection's name.
    pub fn collection(&self) -> &'a str {
        self.collection.name.as_str()
    }

    /// What the caller wants to do.
    pub fn action(&self) -> Action {
        self.action
    }

    /// The object key read or written.
    pub fn key(&self) -> &'a str {
        self.key.as_str()
    }

    /// A path parameter's value.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params.get(name)
    }

    /// The `data` of the document at `template` (a storage path template, its
    /// parameters filled from `params`) in the part of the store this request reads:
    /// for enrichers that keep access records in documents (a registry, a user's
    /// entitlements). `None` when there is no such document.
    ///
    /// # Errors
    /// A parameter that breaks the path rules, or a store failure: an enricher
    /// fails closed on either.
    pub(crate) async fn read_data(
        &self,
        template: &PathTemplate,
        params: &[(&str, &str)],
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, HookError> {
        let params = PathParams::checked(params.iter().map(|(n, v)| (*n, (*v).to_owned())))
            .map_err(|e| HookError(format!("registry parameter: {e}")))?;
        let key = ObjectKey::resolve(template, template.segments().len(), &params, None)
            .map_err(|e| HookError(format!("registry key: {e}")))?;
        let bytes = self
            .store
            .get(&key)
            .await
            .map_err(|e| HookError(format!("store: {e}")))?;
        Ok(bytes
            .as_deref()
            .and_then(starfish_protocol::StoredDoc::parse)
            .map(|doc| doc.data))
    }
}

/// What the caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Read a document (also bundle and batch reads).
    Pull,
    /// Write a document, append to a log or upload a blob.
    Push,
    /// List keys.
    List,
}

impl Action {
    /// The cap operation this action needs.
    pub(crate) fn cap_op(self) -> CapOp {
        match self {
            Self::Pull => CapOp::Read,
            Self::Push => CapOp::Write,
            Self::List => CapOp::List,
        }
    }

    /// The word used in rate-limit scopes and restrictions.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::List => "list",
        }
    }
}

/// Why an access was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Denied {
    /// `403 {"error":"Forbidden"}`; the reason is logged at debug level.
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// A hook failed: `500 {"error":"Authorization error"}`.
    #[error(transparent)]
    Hook(#[from] HookError),
}

/// One key touched by a request, with where it was reached from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Touch<'a> {
    /// The part of the store the request reads and writes (for enrichers that keep
    /// access records in documents).
    pub(crate) store: &'a NsStore,
    pub(crate) namespace: Option<(&'a str, &'a [Restriction])>,
    pub(crate) collection: &'a Collection,
    pub(crate) action: Action,
    pub(crate) key: &'a ObjectKey,
    pub(crate) params: &'a PathParams,
}

/// Everything authorisation needs beyond the request, built once per router.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) restrictions: Vec<Restriction>,
    pub(crate) enricher: Option<Arc<dyn RoleEnricher>>,
    pub(crate) hook: Option<Arc<dyn Authorize>>,
}

impl Gate {
    /// Decides whether `caller` may perform `touch`.
    ///
    /// # Errors
    /// [`Denied`].
    pub(crate) async fn authorize(&self, caller: &Caller, touch: Touch<'_>) -> Result<(), Denied> {
        let c = touch.collection;
        let restricted = restrictions::allow(
            [
                self.restrictions.as_slice(),
                touch.namespace.map_or(&[][..], |(_, r)| r),
                c.restrictions.as_slice(),
            ],
            caller.identity(),
            touch.action,
        );
        if !restricted {
            return Err(Denied::Forbidden("identity restriction"));
        }
        let request = AccessRequest {
            store: touch.store,
            caller,
            namespace: touch.namespace.map(|(n, _)| n),
            collection: c,
            action: touch.action,
            key: touch.key,
            params: touch.params,
        };
        let extra = match &self.enricher {
            Some(enricher) => enricher.enrich(&request).await?,
            None => Vec::new(),
        };
        decide(caller, &extra, c, touch.action, touch.params)?;
        if !is_public(c, touch.action) {
            owner_only(caller, touch.key, touch.action)?;
        }
        if !in_scope(caller, touch.key) {
            return Err(Denied::Forbidden("key outside the cap's scope.paths"));
        }
        match &self.hook {
            Some(hook) if !hook.authorize(&request).await? => {
                Err(Denied::Forbidden("refused by the authorize hook"))
            }
            _ => Ok(()),
        }
    }
}

/// A cap is bound to its identity: a request whose `{identity}` parameter names
/// someone else is refused whole (a bundle too, not member by member).
///
/// # Errors
/// [`Denied::Forbidden`].
pub(crate) fn check_binding(caller: &Caller, params: &PathParams) -> Result<(), Denied> {
    let bound = caller.grant().is_some();
    if bound
        && params
            .identity()
            .is_some_and(|p| Some(p) != caller.identity())
    {
        return Err(Denied::Forbidden(
            "identity parameter differs from the cap-bound identity",
        ));
    }
    Ok(())
}

/// A collection's member directory (`…/_members`) is its owner's alone, and so is
/// writing its keyring (`…/_keyring`): a caller on a member or audience certificate
/// reaches neither, whatever the certificate's paths say (unless the collection is
/// public for that action: a roster published read-open is read by anyone). The sharing validators
/// refuse certificates whose paths reach them under the reference's naming
/// (`<collection>/_members`); this holds for every key, however it is named.
///
/// # Errors
/// [`Denied::Forbidden`].
fn owner_only(caller: &Caller, key: &ObjectKey, action: Action) -> Result<(), Denied> {
    if !caller.is_delegated() {
        return Ok(());
    }
    let last = key.as_str().rsplit('/').next().unwrap_or("");
    if last == "_members" || (last == "_keyring" && action == Action::Push) {
        return Err(Denied::Forbidden(
            "a shared certificate never reaches the owner's _members or writes _keyring",
        ));
    }
    Ok(())
}

/// True when the caller's `scope.paths` cover `key` (a keyring sibling, say).
pub(crate) fn in_scope(caller: &Caller, key: &ObjectKey) -> bool {
    match_scope_path(key.as_str(), caller.scope_paths())
}

/// True when `caller` (with `extra` roles) holds `role` for a key with these
/// parameters. `self` holds when the `{identity}` parameter is the caller's identity.
fn holds(caller: &Caller, extra: &[Arc<str>], role: &Role, params: &PathParams) -> bool {
    match role {
        Role::Public => true,
        Role::Owner => matches!(
            (caller.identity(), params.identity()),
            (Some(me), Some(param)) if me == param
        ),
        Role::Named(name) => caller.roles().iter().chain(extra).any(|r| **r == **name),
    }
}

/// True when `caller` holds any role in `required` (`fieldPermissions` too).
pub(crate) fn holds_any(
    caller: &Caller,
    extra: &[Arc<str>],
    required: &RoleSet,
    params: &PathParams,
) -> bool {
    required.iter().any(|r| holds(caller, extra, r, params))
}

/// The collection rules: `rootOnly`, the cap grant on every collection (the
/// reference lets `self` admit a read-only cap to write), the identity a cap is bound
/// to, then readRoles/writeRoles.
fn decide(
    caller: &Caller,
    extra: &[Arc<str>],
    collection: &Collection,
    action: Action,
    params: &PathParams,
) -> Result<(), Denied> {
    if collection.root_only && !caller.roles().iter().any(|r| &**r == ROLE_DEVICE_ROOT) {
        return Err(Denied::Forbidden("rootOnly collection"));
    }
    if let Some(grant) = caller.grant() {
        if !grant.allows(action.cap_op(), collection.name.as_str()) {
            return Err(Denied::Forbidden("cap grant lacks the operation"));
        }
    }
    check_binding(caller, params)?;
    let required = match action {
        Action::Pull | Action::List => &collection.read_roles,
        Action::Push => &collection.write_roles,
    };
    if holds_any(caller, extra, required, params) {
        Ok(())
    } else {
        Err(Denied::Forbidden("missing role"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SyncConfig;

    fn collection(json: &str) -> Arc<Collection> {
        let cfg = SyncConfig::from_json_str(&format!(r#"{{"version":1,"collections":[{json}]}}"#))
            .unwrap();
        cfg.collections[0].clone()
    }

    fn identity(id: &str) -> PathParams {
        PathParams::checked([("identity", id.to_owned())]).unwrap()
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
        let none = PathParams::default();
        let ok = |r: Result<(), Denied>| r.is_ok();
        assert!(ok(decide(&anon, &[], &public, Action::Pull, &none)));
        assert!(!ok(decide(&anon, &[], &public, Action::Push, &none)));
        assert!(ok(decide(&alice, &[], &public, Action::Push, &none)));
        assert!(!ok(decide(
            &anon,
            &[],
            &own,
            Action::Pull,
            &identity("alice")
        )));
        assert!(ok(decide(
            &alice,
            &[],
            &own,
            Action::Pull,
            &identity("alice")
        )));
        assert!(!ok(decide(
            &alice,
            &[],
            &own,
            Action::Push,
            &identity("bob")
        )));
        assert!(!ok(decide(
            &alice,
            &[],
            &root,
            Action::Pull,
            &identity("alice")
        )));
        assert!(ok(decide(
            &alice_root,
            &[],
            &root,
            Action::Pull,
            &identity("alice")
        )));
    }
}
