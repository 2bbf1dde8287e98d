//! The issuer-bound enricher (the reference's `makeIssuerBoundRoleEnricher`): roles
//! for a public share keyed by its owner (`pubspaces/{ownerId}/{spaceId}/{docId}`),
//! decided from the caller's certificate alone, no store read.
//!
//! - `owner_role` and `reader_role`: the owner's own device certificate
//!   (its identity is the path's owner);
//! - `reader_role`: a member or audience certificate **issued by the path's owner**
//!   for one of `collections` (its `delegated:<owner>:<collection>` role);
//! - `writer_role` too when that certificate also grants `write` on the collection,
//!   except on the guard document (`guard_param == guard_value`: the room list
//!   only its owner manages).
//!
//! A certificate some stranger issued names the stranger as issuer: it reaches
//! nothing the stranger does not own.

use crate::access::{AccessRequest, HookError, RoleEnricher};
use futures::future::BoxFuture;
use std::sync::Arc;

/// The issuer-bound enricher's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerBoundEnricher {
    /// The path parameter naming the owner's user id (`ownerId`).
    pub owner_param: String,
    /// Granted to the owner's own certificate.
    pub owner_role: String,
    /// Granted to the owner and to certificates the owner issued.
    pub reader_role: String,
    /// Granted to certificates the owner issued with `write`, off the guard document.
    pub writer_role: String,
    /// The collections whose delegations count.
    pub collections: Vec<String>,
    /// The path parameter checked against `guard_value` (`docId`).
    pub guard_param: String,
    /// The value of `guard_param` that withholds `writer_role` (`_rooms`).
    pub guard_value: String,
}

impl IssuerBoundEnricher {
    /// The roles `identity` (holding `roles`) gets where the path's owner is
    /// `owner` and `guard` is the guard parameter's value.
    fn roles(
        &self,
        identity: &str,
        roles: &[Arc<str>],
        owner: &str,
        guard: Option<&str>,
    ) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        if identity == owner {
            out.push(self.owner_role.as_str().into());
            out.push(self.reader_role.as_str().into());
        }
        let holds = |role: String| roles.iter().any(|r| **r == *role);
        let delegated = self
            .collections
            .iter()
            .any(|c| holds(format!("delegated:{owner}:{c}")));
        if delegated {
            out.push(self.reader_role.as_str().into());
            let writes = self
                .collections
                .iter()
                .any(|c| holds(format!("cap:write:{c}")));
            if writes && guard != Some(self.guard_value.as_str()) {
                out.push(self.writer_role.as_str().into());
            }
        }
        out
    }
}

impl RoleEnricher for IssuerBoundEnricher {
    fn enrich<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, HookError>> {
        Box::pin(async move {
            let caller = request.caller();
            let (Some(owner), Some(identity)) =
                (request.param(&self.owner_param), caller.identity())
            else {
                return Ok(Vec::new());
            };
            Ok(self.roles(
                identity,
                caller.roles(),
                owner,
                request.param(&self.guard_param),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enricher() -> IssuerBoundEnricher {
        IssuerBoundEnricher {
            owner_param: "ownerId".into(),
            owner_role: "share:owner".into(),
            reader_role: "share:reader".into(),
            writer_role: "share:writer".into(),
            collections: vec!["pubspace".into()],
            guard_param: "docId".into(),
            guard_value: "_rooms".into(),
        }
    }

    fn roles(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|r| Arc::from(*r)).collect()
    }

    fn names(out: Vec<Arc<str>>) -> Vec<String> {
        out.iter().map(|r| r.to_string()).collect()
    }

    #[test]
    fn the_owner_reads_and_owns_a_delegate_of_the_owner_reads_and_writes_off_the_guard() {
        let e = enricher();
        assert_eq!(
            names(e.roles("alice", &roles(&["cap:write:*"]), "alice", None)),
            ["share:owner", "share:reader"]
        );
        let writer = roles(&[
            "cap:read:pubspace",
            "cap:write:pubspace",
            "delegated:alice:pubspace",
        ]);
        assert_eq!(
            names(e.roles("bob", &writer, "alice", Some("doc1"))),
            ["share:reader", "share:writer"]
        );
        assert_eq!(
            names(e.roles("bob", &writer, "alice", Some("_rooms"))),
            ["share:reader"]
        );
        let reader = roles(&["cap:read:pubspace", "delegated:alice:pubspace"]);
        assert_eq!(
            names(e.roles("bob", &reader, "alice", None)),
            ["share:reader"]
        );
    }

    #[test]
    fn a_certificate_from_anyone_but_the_paths_owner_gets_nothing() {
        let e = enricher();
        let mallory = roles(&["cap:write:pubspace", "delegated:mallory:pubspace"]);
        assert!(e.roles("bob", &mallory, "alice", None).is_empty());
        let other_collection = roles(&["cap:write:notes", "delegated:alice:notes"]);
        assert!(e.roles("bob", &other_collection, "alice", None).is_empty());
    }
}
