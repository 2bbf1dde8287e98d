//! A certificate whose issuer signature verified, with the roles the server gives
//! it: computed once, so a cached certificate costs no allocation per request.

use super::CapValidators;
use starfish_protocol::author::parse_public_key;
use starfish_protocol::capcert::{CapCert, CapCertError};
use std::sync::Arc;

/// A verified certificate and what the server derives from it.
#[derive(Debug)]
pub(crate) struct VerifiedCert {
    pub(crate) cert: CapCert,
    /// The reference's synthesised roles, plus `device:root` for a self-signed
    /// device cap.
    pub(crate) roles: Arc<[Arc<str>]>,
    /// The subject's key, decompressed once (about a tenth of a signed request's
    /// verification when done per request); `None` when `sub` is absent or no key.
    pub(crate) subject_key: Option<ed25519_dalek::VerifyingKey>,
    /// Bytes it holds, for the cache's byte bound (computed once).
    pub(crate) weight: u64,
}

impl VerifiedCert {
    /// Checks the issuer signature, then the validators of its kind; only then are
    /// roles built from the certificate.
    ///
    /// # Errors
    /// The reason it is refused: a bad signature, a kind without a validator, or a
    /// validator's refusal.
    pub(crate) fn new(mut cert: CapCert, validators: &CapValidators) -> Result<Self, String> {
        let issuer_key = cert
            .verified_issuer_key()
            .map_err(|e: CapCertError| e.to_string())?;
        let extra = validators.check(&cert)?;
        let mut roles = cert.roles();
        roles.extend(extra);
        roles.sort();
        roles.dedup();
        if cert.is_root_device() {
            roles.push(super::ROLE_DEVICE_ROOT.to_owned());
            roles.sort();
        }
        let roles: Arc<[Arc<str>]> = roles.into_iter().map(Arc::from).collect();
        // Verified: its signing input, most of what it holds, is not needed again.
        cert.forget_signing_input();
        let role_bytes: usize = roles.iter().map(|r| r.len() + 32).sum();
        let weight = (cert.held_bytes()
            + role_bytes
            + std::mem::size_of::<ed25519_dalek::VerifyingKey>()) as u64;
        // A self-signed certificate's subject key is its issuer's, decoded already.
        let subject_key = match cert.sub.as_deref() {
            Some(sub) if sub == cert.iss => Some(issuer_key),
            sub => sub.and_then(parse_public_key),
        };
        Ok(Self {
            cert,
            roles,
            subject_key,
            weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verified certificate, as cached, keeps no signing input, and its weight
    /// counts what it holds without it.
    #[test]
    fn a_verified_certificate_is_cached_without_its_signing_input() {
        const NOW: u64 = 1_767_225_600;
        let id = starfish_protocol::identity::Identity::generate(NOW).unwrap();
        let cert = CapCert::parse(id.cert()).unwrap();
        let parsed = cert.held_bytes() as u64;
        let verified = VerifiedCert::new(cert, &CapValidators::new()).unwrap();
        assert!(verified.cert.signing_input().is_none());
        assert!(verified.weight < parsed, "{} of {parsed}", verified.weight);
        assert!(verified.subject_key.is_some());
    }
}
