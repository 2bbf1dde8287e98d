//! Revocation (§3.11): issuers publish signed lists of revoked caps (by subject and
//! cap nonce) and of revoked subjects.

use serde_json::Value;
use starfish_protocol::author::{parse_public_key, parse_signature, verify};
use starfish_protocol::capcert::user_id_from_pub_hex;
use starfish_protocol::stable_stringify;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// Domain tag of a revocation list's signing input.
pub(super) const REVOCATION_DOMAIN: &str = "starfish-revlist-v1\n";
/// Issuers the in-memory store keeps lists for.
pub(super) const MAX_ISSUERS: usize = 10_000;

/// Answers "is this cap revoked?" for every authenticated request.
pub trait RevocationStore: Send + Sync + std::fmt::Debug + 'static {
    /// True when the cap of issuer `iss`, subject `sub` (empty for audience caps) and
    /// cap nonce `cap_nonce` is revoked, or its subject is.
    fn is_revoked(&self, iss: &str, sub: &str, cap_nonce: &str) -> bool;
}

/// Why a revocation list was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// Not a list of the expected shape.
    #[error("malformed revocation list")]
    Malformed,
    /// The issuer's signature does not verify.
    #[error("bad-signature")]
    BadSignature,
    /// The generation is not newer than the one held.
    #[error("stale-generation")]
    StaleGeneration,
    /// Too many issuers already.
    #[error("too-many-issuers")]
    TooManyIssuers,
}

#[derive(Debug, Default)]
struct IssuerList {
    generation: f64,
    revoked: HashSet<(String, String)>,
    subjects: HashSet<String>,
}

/// An in-memory [`RevocationStore`] fed with signed lists.
#[derive(Debug, Default)]
pub struct InMemoryRevocationStore {
    lists: RwLock<HashMap<String, IssuerList>>,
}

impl InMemoryRevocationStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies and installs an issuer's list, replacing an older generation.
    ///
    /// # Errors
    /// [`RevocationError`] when the list is malformed, unsigned, stale, or the store is full.
    pub fn accept_list(&self, list: &Value) -> Result<(), RevocationError> {
        let obj = list.as_object().ok_or(RevocationError::Malformed)?;
        let iss = obj
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(RevocationError::Malformed)?;
        let generation = obj
            .get("generation")
            .and_then(Value::as_f64)
            .ok_or(RevocationError::Malformed)?;
        if let Some(uid) = obj.get("issUserId").and_then(Value::as_str) {
            if user_id_from_pub_hex(iss).as_deref() != Some(uid) {
                return Err(RevocationError::Malformed);
            }
        }
        let mut unsigned = obj.clone();
        let sig = unsigned
            .remove("sig")
            .and_then(|s| s.as_str().map(str::to_owned))
            .ok_or(RevocationError::BadSignature)?;
        let input = format!(
            "{REVOCATION_DOMAIN}{}",
            stable_stringify(&Value::Object(unsigned))
        );
        let verified = match (parse_public_key(iss), parse_signature(&sig)) {
            (Some(key), Some(sig)) => verify(&key, input.as_bytes(), &sig),
            _ => false,
        };
        if !verified {
            return Err(RevocationError::BadSignature);
        }
        let entries =
            |field: &str| -> Result<Vec<&serde_json::Map<String, Value>>, RevocationError> {
                match obj.get(field) {
                    None | Some(Value::Null) => Ok(Vec::new()),
                    Some(Value::Array(items)) => items
                        .iter()
                        .map(|e| e.as_object().ok_or(RevocationError::Malformed))
                        .collect(),
                    Some(_) => Err(RevocationError::Malformed),
                }
            };
        let field = |e: &serde_json::Map<String, Value>, k: &str| {
            e.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or(RevocationError::Malformed)
        };
        let mut next = IssuerList {
            generation,
            ..IssuerList::default()
        };
        for e in entries("revoked")? {
            next.revoked.insert((field(e, "sub")?, field(e, "nonce")?));
        }
        for e in entries("revokedSubjects")? {
            next.subjects.insert(field(e, "sub")?);
        }
        let mut lists = self.lists.write().map_err(|_| RevocationError::Malformed)?;
        match lists.get(iss) {
            Some(current) if generation <= current.generation => {
                return Err(RevocationError::StaleGeneration);
            }
            None if lists.len() >= MAX_ISSUERS => return Err(RevocationError::TooManyIssuers),
            _ => {}
        }
        lists.insert(iss.to_owned(), next);
        Ok(())
    }
}

impl RevocationStore for InMemoryRevocationStore {
    fn is_revoked(&self, iss: &str, sub: &str, cap_nonce: &str) -> bool {
        let Ok(lists) = self.lists.read() else {
            return true; // poisoned: fail closed
        };
        let Some(list) = lists.get(iss) else {
            return false;
        };
        (!sub.is_empty() && list.subjects.contains(sub))
            || list
                .revoked
                .contains(&(sub.to_owned(), cap_nonce.to_owned()))
    }
}
