//! The sharing extension, as the reference's `starfish-sharing` and
//! `starfish-entitlements` packages give it to a server: the validators that let
//! `member` and `audience` certificates in ([`validators`]), and the role enrichers
//! apps gate shared resources with ([`RegistryEnricher`], [`IssuerBoundEnricher`],
//! [`EntitlementEnricher`]), composed in order with [`Enrichers`] (the embedder's
//! own `RoleEnricher` among them).
//!
//! A member certificate is issued by an owner to another user for one collection; an
//! audience certificate is a public link, redeemed by whoever signs with their own
//! key (`X-Starfish-Pub`), or only the keys its `aud` names. What they grant is the
//! protocol's roles (`cap:<op>:<collection>`, `delegated:<issUserId>:<collection>`):
//! nothing a collection admits unless it names those roles or an enricher turns
//! them into its own (docs/security.md, "Shared certificates").

mod entitlements;
mod issuer_bound;
mod registry;

pub use entitlements::EntitlementEnricher;
pub use issuer_bound::IssuerBoundEnricher;
pub use registry::RegistryEnricher;

use crate::access::{AccessRequest, HookError, RoleEnricher};
use crate::auth::{CapCert, CapKind, CapValidator, CapValidators};
use futures::future::BoxFuture;
use std::sync::Arc;

/// Accepts `member` certificates that keep the sharing rules
/// ([`starfish_protocol::sharing::check_member_cap`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberCaps;

impl CapValidator for MemberCaps {
    fn kind(&self) -> CapKind {
        CapKind::Member
    }

    fn validate(&self, cert: &CapCert) -> Result<(), String> {
        starfish_protocol::sharing::check_member_cap(cert).map_err(str::to_owned)
    }
}

/// Accepts `audience` certificates (public links) that keep the sharing rules
/// ([`starfish_protocol::sharing::check_audience_cap`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct AudienceCaps;

impl CapValidator for AudienceCaps {
    fn kind(&self) -> CapKind {
        CapKind::Audience
    }

    fn validate(&self, cert: &CapCert) -> Result<(), String> {
        starfish_protocol::sharing::check_audience_cap(cert).map_err(str::to_owned)
    }
}

/// The sharing plugin's validators (`sharingServerPlugin`): member and audience
/// certificates. Set them with `CapAuthOptions::validators`, or register
/// [`SharingPlugin`].
pub fn validators() -> CapValidators {
    CapValidators::new()
        .with(Arc::new(MemberCaps))
        .with(Arc::new(AudienceCaps))
}

/// The sharing plugin (`sharingServerPlugin`), registered as any other with
/// `SyncOptions::with_plugin`: it brings the member and audience validators.
#[derive(Debug, Clone, Copy, Default)]
pub struct SharingPlugin;

impl crate::hooks::Plugin for SharingPlugin {
    fn name(&self) -> &str {
        "sharing"
    }

    fn cap_validators(&self) -> Vec<Arc<dyn crate::auth::CapValidator>> {
        vec![Arc::new(MemberCaps), Arc::new(AudienceCaps)]
    }
}

/// Several role enrichers, asked in order; the caller holds the roles of all
/// (`composeEnrichers`). One that fails fails the access (`500`).
#[derive(Clone, Default)]
pub struct Enrichers(Vec<Arc<dyn RoleEnricher>>);

impl std::fmt::Debug for Enrichers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Enrichers").field(&self.0.len()).finish()
    }
}

impl Enrichers {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `enricher` asked after the others.
    #[must_use]
    pub fn with(mut self, enricher: Arc<dyn RoleEnricher>) -> Self {
        self.0.push(enricher);
        self
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl RoleEnricher for Enrichers {
    fn enrich<'a>(
        &'a self,
        request: &'a AccessRequest<'a>,
    ) -> BoxFuture<'a, Result<Vec<Arc<str>>, HookError>> {
        Box::pin(async move {
            let mut roles = Vec::new();
            for enricher in &self.0 {
                roles.extend(enricher.enrich(request).await?);
            }
            Ok(roles)
        })
    }
}

/// True for a resource id the enrichers accept (`^[a-zA-Z0-9_-]+$`, the whole value):
/// tighter than a path parameter, so ids cannot collide once other systems
/// sanitise them.
fn is_safe_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
