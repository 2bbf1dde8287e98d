//! `starfish serve`'s sharing settings: the `server: sharing:` section (and
//! `--sharing` / `STARFISH_SHARING` for the validators alone). It turns on what the
//! reference's sharing plugin and role enrichers give a server:
//!
//! ```yaml
//! server:
//!   sharing:
//!     validators: true            # member caps and public links (audience caps)
//!     issuerBound:                # roles from who issued a share (no store read)
//!       - {ownerParam: ownerId, ownerRole: "share:owner", readerRole: "share:reader",
//!          writerRole: "share:writer", collections: [pubspace], guardParam: docId,
//!          guardValue: _rooms}
//!     registry:                   # roles from an owner-written record
//!       - {idParam: productId, registryPath: "products/{id}/_registry",
//!          ownerRole: "product:owner", memberRole: "product:member", allowTofu: true}
//!     entitlements:               # entitlement:<slug> from users/{identity}/entitlements
//!       {path: "users/{identity}/entitlements", field: features,
//!        rolePrefix: entitlement, cacheTtlMs: 60000}
//! ```
//!
//! The enrichers are asked in the order issuerBound, registry, entitlements; a
//! caller holds the roles of all.

use serde::{Deserialize, Serialize};
use starfish_server::SyncOptions;
use starfish_server::auth::Clock;
use starfish_server::sharing::{
    Enrichers, EntitlementEnricher, IssuerBoundEnricher, RegistryEnricher, SharingPlugin,
};
use std::sync::Arc;

/// The `server: sharing:` section.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct SharingSection {
    /// Accept member and audience certificates (the sharing plugin's validators).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) validators: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    issuer_bound: Vec<IssuerBoundSection>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    registry: Vec<RegistrySection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    entitlements: Option<EntitlementsSection>,
}

/// One issuer-bound enricher.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct IssuerBoundSection {
    owner_param: String,
    owner_role: String,
    reader_role: String,
    writer_role: String,
    collections: Vec<String>,
    guard_param: String,
    guard_value: String,
}

/// One registry enricher.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RegistrySection {
    id_param: String,
    registry_path: String,
    owner_role: String,
    member_role: String,
    #[serde(default = "yes")]
    allow_tofu: bool,
}

fn yes() -> bool {
    true
}

/// The entitlements enricher.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct EntitlementsSection {
    path: String,
    field: String,
    role_prefix: String,
    cache_ttl_ms: u64,
}

impl Default for EntitlementsSection {
    fn default() -> Self {
        Self {
            path: "users/{identity}/entitlements".into(),
            field: "features".into(),
            role_prefix: "entitlement".into(),
            cache_ttl_ms: 60_000,
        }
    }
}

impl SharingSection {
    /// `--sharing` (or its variable) over the section's `validators`.
    pub(crate) fn with_flag(mut self, flag: Option<bool>) -> Self {
        if flag.is_some() {
            self.validators = flag;
        }
        self
    }

    /// `options` with the sharing plugin when the validators are on, and the
    /// enrichers the section names (none: unchanged).
    ///
    /// # Errors
    /// A registry or entitlements path that is not a storage path template with its
    /// parameter.
    pub(crate) fn apply(
        &self,
        mut options: SyncOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<SyncOptions, String> {
        if self.validators == Some(true) {
            options = options.with_plugin(Arc::new(SharingPlugin));
        }
        let mut enrichers = Enrichers::new();
        for e in &self.issuer_bound {
            enrichers = enrichers.with(Arc::new(IssuerBoundEnricher {
                owner_param: e.owner_param.clone(),
                owner_role: e.owner_role.clone(),
                reader_role: e.reader_role.clone(),
                writer_role: e.writer_role.clone(),
                collections: e.collections.clone(),
                guard_param: e.guard_param.clone(),
                guard_value: e.guard_value.clone(),
            }));
        }
        for r in &self.registry {
            let enricher = RegistryEnricher::new(
                &r.id_param,
                &r.registry_path,
                &r.owner_role,
                &r.member_role,
                r.allow_tofu,
            )
            .map_err(|e| format!("server.sharing.registry: {e}"))?;
            enrichers = enrichers.with(Arc::new(enricher));
        }
        if let Some(e) = &self.entitlements {
            let enricher =
                EntitlementEnricher::new(&e.path, &e.field, &e.role_prefix, e.cache_ttl_ms, clock)
                    .map_err(|e| format!("server.sharing.entitlements: {e}"))?;
            enrichers = enrichers.with(Arc::new(enricher));
        }
        if enrichers.is_empty() {
            return Ok(options);
        }
        Ok(options.with_role_enricher(Arc::new(enrichers)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_reads_as_documented() {
        let yaml = r#"
validators: true
issuerBound:
  - {ownerParam: ownerId, ownerRole: "share:owner", readerRole: "share:reader",
     writerRole: "share:writer", collections: [pubspace], guardParam: docId, guardValue: _rooms}
registry:
  - {idParam: productId, registryPath: "products/{id}/_registry", ownerRole: "p:o", memberRole: "p:m"}
entitlements: {cacheTtlMs: 1000}
"#;
        let section: SharingSection = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(section.validators, Some(true));
        assert!(
            section.registry[0].allow_tofu,
            "trust on first use by default"
        );
        let e = section.entitlements.clone().unwrap();
        assert_eq!(
            (e.path.as_str(), e.cache_ttl_ms),
            ("users/{identity}/entitlements", 1000)
        );
        assert_eq!(section.with_flag(Some(false)).validators, Some(false));
        assert!(serde_yaml::from_str::<SharingSection>("validatorz: true").is_err());
    }
}
