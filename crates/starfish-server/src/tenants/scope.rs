//! A scope: the root or one namespace, with everything a request there is served
//! with (its routes, restrictions, store handles, trusted roots, limits).

use crate::auth::Caller;
use crate::config::{NamespaceName, Restriction, RouteTable};
use crate::store::NsStore;
use std::sync::Arc;

/// The routes of one scope: the root, or one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    /// `None` at the root.
    pub(crate) namespace: Option<NamespaceName>,
    pub(crate) routes: Arc<RouteTable>,
    /// The namespace's identity restrictions.
    pub(crate) restrictions: Vec<Restriction>,
    /// The namespace's part of the store: the only store handle a request gets.
    pub(crate) store: NsStore,
    /// Only callers from these roots act here (`None`: any root).
    pub(crate) trusted_roots: Option<Arc<[String]>>,
    /// A suspended tenant: every route answers 403.
    pub(crate) suspended: bool,
    /// A namespace created at runtime: its generation (API keys are bound to it).
    pub(crate) generation: Option<Arc<str>>,
    /// The namespace's request limits, when it has any.
    pub(crate) budget: Option<Arc<crate::access::Budget>>,
    /// The same part of the store, sealing at rest: for the collections with
    /// `encryption: "none"` of a namespace with `encryptAtRest`.
    pub(crate) sealed: Option<NsStore>,
}

impl Scope {
    /// The root scope: the config's top-level collections over the whole store.
    pub(crate) fn root(routes: Arc<RouteTable>, store: NsStore) -> Self {
        Self {
            namespace: None,
            routes,
            restrictions: Vec::new(),
            store,
            trusted_roots: None,
            suspended: false,
            generation: None,
            budget: None,
            sealed: None,
        }
    }

    /// The store handle for `collection`'s documents: sealed at rest when the
    /// namespace seals and the collection is not already encrypted by its clients.
    pub(crate) fn store_for(&self, collection: &crate::config::Collection) -> &NsStore {
        match (&self.sealed, collection.encryption) {
            (Some(sealed), crate::config::Encryption::None) => sealed,
            _ => &self.store,
        }
    }

    /// False when the namespace names its trusted roots and `caller` holds a
    /// credential from none of them (its root key and its identity are both checked).
    /// An anonymous caller holds no credential: public roles decide for it.
    pub(crate) fn trusts(&self, caller: &Caller) -> bool {
        if self.suspended {
            return false;
        }
        let Some(roots) = &self.trusted_roots else {
            return true;
        };
        // An API key was granted this namespace by an admin: its grant is the check.
        if caller.is_api_key() {
            return true;
        }
        let Some(identity) = caller.identity() else {
            return true;
        };
        roots
            .iter()
            .any(|r| r == identity || caller.root().is_some_and(|root| r == root))
    }

    /// The namespace name and its restrictions, for authorisation.
    pub(crate) fn access(&self) -> Option<(&str, &[Restriction])> {
        self.namespace
            .as_ref()
            .map(|n| (n.as_str(), self.restrictions.as_slice()))
    }
}
