//! Cap-kind validators, the reference's `capValidators`: what decides whether a
//! certificate of a kind other than `device` is accepted at all.
//!
//! A certificate's shape, validity window and issuer signature are checked for every
//! kind. A `device` certificate needs nothing more (it is built in); a `member` or
//! `audience` certificate is refused (`401`) unless a validator for its kind is
//! registered, and every validator registered for its kind must accept it. The
//! sharing extension's validators (`starfish_server::sharing::validators`) are the
//! usual ones.

use starfish_protocol::capcert::{CapCert, CapKind};
use std::sync::Arc;

/// Accepts or refuses certificates of one kind, after their shape, window and
/// issuer signature verified. Validators are pure: the verdict is kept with the
/// certificate while it is cached.
pub trait CapValidator: Send + Sync + 'static {
    /// The kind this validator is for.
    fn kind(&self) -> CapKind;

    /// `Ok` accepts `cert`; `Err(reason)` refuses it (`401`; the reason is logged,
    /// never sent).
    ///
    /// # Errors
    /// Why the certificate is refused.
    fn validate(&self, cert: &CapCert) -> Result<(), String>;

    /// Roles the certificate grants besides the protocol's (`cap:<op>:<collection>`,
    /// and `delegated:<issUserId>:<collection>` for member and audience
    /// certificates). None by default.
    fn extra_roles(&self, _cert: &CapCert) -> Vec<String> {
        Vec::new()
    }
}

/// The validators an authenticator runs, by kind.
#[derive(Clone, Default)]
pub struct CapValidators(Vec<Arc<dyn CapValidator>>);

impl std::fmt::Debug for CapValidators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|v| v.kind().as_str()))
            .finish()
    }
}

impl CapValidators {
    /// No validator: `device` certificates only.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `validator` too.
    #[must_use]
    pub fn with(mut self, validator: Arc<dyn CapValidator>) -> Self {
        self.0.push(validator);
        self
    }

    /// Adds `validator`.
    pub fn add(&mut self, validator: Arc<dyn CapValidator>) {
        self.0.push(validator);
    }

    /// True when certificates of `kind` can be accepted: `device` always, another
    /// kind when a validator is registered for it.
    pub fn accepts_kind(&self, kind: CapKind) -> bool {
        kind == CapKind::Device || self.0.iter().any(|v| v.kind() == kind)
    }

    /// Runs every validator of `cert`'s kind; the extra roles they grant.
    ///
    /// # Errors
    /// The kind has no validator (and is not `device`), or one refuses.
    pub(crate) fn check(&self, cert: &CapCert) -> Result<Vec<String>, String> {
        if !self.accepts_kind(cert.kind) {
            return Err(format!(
                "cap-cert kind \"{}\" has no registered validator",
                cert.kind.as_str()
            ));
        }
        let mut roles = Vec::new();
        for validator in self.0.iter().filter(|v| v.kind() == cert.kind) {
            validator
                .validate(cert)
                .map_err(|reason| format!("cap-cert plugin reject: {reason}"))?;
            roles.extend(validator.extra_roles(cert));
        }
        Ok(roles)
    }
}
