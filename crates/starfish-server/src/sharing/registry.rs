//! The registry enricher (the reference's `makeRegistryRoleEnricher`): a resource
//! keyed by a free id (`products/{productId}/…`) whose access record is a document
//! its owner writes, `{"owner": <userId>, "members": [<userId>, …]}` at
//! `registry_path` (`products/{id}/_registry`).
//!
//! - `owner_role` and `member_role` to the owner, `member_role` to each member;
//! - no record yet: with `allow_tofu`, the first writer is the owner (trust on first
//!   use, which bootstraps a new resource); without, nobody;
//! - a record without an owner, or one that cannot be read as JSON: nobody (never
//!   re-opened to the next writer);
//! - a store failure fails the access (`500`), never grants: an attacker who can
//!   cause outages must not take over established resources.

use super::is_safe_id;
use crate::access::{AccessRequest, HookError, RoleEnricher};
use crate::config::PathTemplate;
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use std::sync::Arc;

/// The registry enricher's settings.
#[derive(Debug, Clone)]
pub struct RegistryEnricher {
    /// The path parameter holding the resource id (`productId`).
    pub id_param: String,
    /// Where the record is: a storage path template with an `{id}` parameter.
    registry_path: PathTemplate,
    /// Granted to the record's owner.
    pub owner_role: String,
    /// Granted to the owner and the record's members.
    pub member_role: String,
    /// A resource without a record belongs to its first writer.
    pub allow_tofu: bool,
}

impl RegistryEnricher {
    /// An enricher reading records at `registry_path` (with an `{id}` parameter).
    ///
    /// # Errors
    /// The path is not a storage path template, or has no `{id}`.
    pub fn new(
        id_param: impl Into<String>,
        registry_path: &str,
        owner_role: impl Into<String>,
        member_role: impl Into<String>,
        allow_tofu: bool,
    ) -> Result<Self, String> {
        let template = PathTemplate::parse(registry_path)
            .map_err(|e| format!("registryPath {registry_path:?}: {e}"))?;
        if !template.params().any(|p| p == "id") {
            return Err(format!("registryPath {registry_path:?} has no {{id}}"));
        }
        Ok(Self {
            id_param: id_param.into(),
            registry_path: template,
            owner_role: owner_role.into(),
            member_role: member_role.into(),
            allow_tofu,
        })
    }

    /// The roles `identity` gets from `record` (`None`: there is none).
    fn roles(&self, identity: &str, record: Option<&Map<String, Value>>) -> Vec<Arc<str>> {
        let owner_and_member = || {
            vec![
                Arc::from(self.owner_role.as_str()),
                Arc::from(self.member_role.as_str()),
            ]
        };
        let Some(record) = record else {
            return if self.allow_tofu {
                owner_and_member()
            } else {
                Vec::new()
            };
        };
        match record.get("owner").and_then(Value::as_str) {
            None => Vec::new(),
            Some(owner) if owner == identity => owner_and_member(),
            Some(_) => {
                let member = record
                    .get("members")
                    .and_then(Value::as_array)
                    .is_some_and(|m| m.iter().any(|m| m.as_str() == Some(identity)));
                if member {
                    vec![Arc::from(self.member_role.as_str())]
                } else {
                    Vec::new()
                }
            }
        }
    }
}

impl RoleEnricher for RegistryEnricher {
    fn enrich<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, HookError>> {
        Box::pin(async move {
            let (Some(id), Some(identity)) =
                (request.param(&self.id_param), request.caller().identity())
            else {
                return Ok(Vec::new());
            };
            if !is_safe_id(id) {
                return Ok(Vec::new());
            }
            let record = request
                .read_data(&self.registry_path, &[("id", id)])
                .await?;
            Ok(self.roles(identity, record.as_ref()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enricher(tofu: bool) -> RegistryEnricher {
        RegistryEnricher::new(
            "productId",
            "products/{id}/_registry",
            "p:owner",
            "p:member",
            tofu,
        )
        .unwrap()
    }

    fn names(out: Vec<Arc<str>>) -> Vec<String> {
        out.iter().map(|r| r.to_string()).collect()
    }

    fn record(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_owner_and_the_members_of_a_record_and_nobody_else() {
        let e = enricher(true);
        let r = record(json!({"owner": "alice", "members": ["bob", 7]}));
        assert_eq!(names(e.roles("alice", Some(&r))), ["p:owner", "p:member"]);
        assert_eq!(names(e.roles("bob", Some(&r))), ["p:member"]);
        assert!(e.roles("mallory", Some(&r)).is_empty());
    }

    #[test]
    fn no_record_is_trust_on_first_use_only_when_enabled_and_an_ownerless_one_fails_closed() {
        assert_eq!(
            names(enricher(true).roles("alice", None)),
            ["p:owner", "p:member"]
        );
        assert!(enricher(false).roles("alice", None).is_empty());
        let ownerless = record(json!({"members": ["alice"]}));
        assert!(enricher(true).roles("alice", Some(&ownerless)).is_empty());
        let odd = record(json!({"owner": 5}));
        assert!(enricher(true).roles("alice", Some(&odd)).is_empty());
    }

    #[test]
    fn a_registry_path_names_its_id() {
        assert!(RegistryEnricher::new("x", "products/{pid}/_registry", "o", "m", true).is_err());
        assert!(RegistryEnricher::new("x", "products/../{id}", "o", "m", true).is_err());
        assert!(!is_safe_id("a.b") && !is_safe_id("a\n") && is_safe_id("a_b-9"));
    }
}
