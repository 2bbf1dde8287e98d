//! Namespace-scoped API keys: `Authorization: Bearer sfk_<id>_<secret>`, for
//! services that hold no Ed25519 identity. An authenticator beside cap-certs, never
//! instead of them.
//!
//! A key names its namespaces and its rights in each (`read`, `write`, `list`); in a
//! namespace it is not granted it gets 403 on every route, whatever the collection
//! says. In a namespace it is granted it acts like a device cap scoped to
//! `{ops: <its rights>, collections: ["*"]}`: it holds `cap:<op>:<collection>` for
//! each collection there, and its identity is `key:<id>` (so a `self` collection admits
//! it only under `{identity}` = `key:<id>`).
//!
//! Records live at `_starfish/keys/<id>` and change only by compare-and-swap. The
//! secret is never stored: only its SHA-256, compared in constant time (the secret is
//! 32 random bytes, so a fast hash is enough). A node keeps what it read about a key
//! for the tenant refresh bound, so a revocation reaches every node within it; uses
//! are counted in memory and added to the record when the key is read again.

use super::TenantError;
use crate::auth::{Caller, CapGrant, CapOp, Clock};
use crate::store::{DocStore, NsStore, ObjectKey};
use crate::tenants::Scope;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use subtle::ConstantTimeEq;

/// The registry's area of the store: `_starfish/keys/<id>`.
const KEYS_AREA: &str = "keys";
/// Every key starts with this.
pub(crate) const PREFIX: &str = "sfk_";
/// Most namespaces one key may name.
pub(crate) const MAX_GRANTS: usize = 256;

/// A right a key holds in a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Right {
    Read,
    Write,
    List,
}

impl Right {
    fn op(self) -> CapOp {
        match self {
            Self::Read => CapOp::Read,
            Self::Write => CapOp::Write,
            Self::List => CapOp::List,
        }
    }
}

/// A key's record; `hash` is the SHA-256 of its secret, hex.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyRecord {
    pub(crate) id: String,
    pub(crate) hash: String,
    /// Namespace (or `*`: every namespace) → rights.
    pub(crate) grants: BTreeMap<String, Vec<Right>>,
    /// May manage the namespaces it names (all with `*`) and their keys.
    #[serde(default)]
    pub(crate) admin: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expires_at: Option<u64>,
    #[serde(default)]
    pub(crate) revoked: bool,
    pub(crate) created_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) label: Option<String>,
    #[serde(default)]
    pub(crate) uses: u64,
    /// For each granted namespace created at runtime, the generation it had when the
    /// key was made: the key is void in a later namespace of the same name.
    #[serde(default)]
    pub(crate) generations: BTreeMap<String, String>,
    /// The admin key that made this one, if an API key did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_by: Option<String>,
}

impl KeyRecord {
    /// The rights granted in `namespace`, whose generation is `generation` (`None`
    /// for the config's namespaces). A grant by name holds only for the generation
    /// the key was made for; `*` holds everywhere.
    pub(crate) fn rights_in(&self, namespace: &str, generation: Option<&str>) -> Option<&[Right]> {
        let by_name = self
            .grants
            .get(namespace)
            .filter(|_| self.generations.get(namespace).map(String::as_str) == generation);
        by_name.or_else(|| self.grants.get("*")).map(Vec::as_slice)
    }

    /// True when this key is an admin key whose grants name `namespace` (or `*`),
    /// whatever its generation: what it may ask about without learning whether a
    /// namespace exists.
    pub(crate) fn names(&self, namespace: &str) -> bool {
        self.admin && (self.grants.contains_key(namespace) || self.grants.contains_key("*"))
    }

    /// True when this key may administer `namespace` (of `generation`).
    pub(crate) fn administers(&self, namespace: &str, generation: Option<&str>) -> bool {
        self.admin && self.rights_in(namespace, generation).is_some()
    }

    /// True when this key may administer every namespace.
    pub(crate) fn administers_all(&self) -> bool {
        self.admin && self.grants.contains_key("*")
    }

    fn usable(&self, now_ms: u64) -> bool {
        !self.revoked && self.expires_at.is_none_or(|e| now_ms < e)
    }
}

/// A key as presented: its id and secret.
pub(crate) struct Presented<'a> {
    id: &'a str,
    secret: &'a str,
}

impl<'a> Presented<'a> {
    /// Parses `sfk_<id>_<secret>`; `None` for anything else.
    pub(crate) fn parse(token: &'a str) -> Option<Self> {
        let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
        let hex16 = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex16(id, 16) && hex16(secret, 64)).then_some(Self { id, secret })
    }
}

fn digest_hex(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[derive(Clone)]
struct Known {
    record: Option<Arc<KeyRecord>>,
    at_ms: u64,
    pending_uses: Arc<AtomicU64>,
}

/// The keys of one router.
pub(crate) struct ApiKeys {
    registry: NsStore,
    known: quick_cache::sync::Cache<Box<str>, Known>,
    refresh_ms: u64,
    clock: Arc<dyn Clock>,
    /// Reads for key ids not known to exist.
    unknown: super::ReadBudget,
}

/// Why a key was not accepted (the client only ever sees 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRefused {
    Unknown,
    Revoked,
    Expired,
    Wrong,
}

impl ApiKeys {
    pub(crate) fn new(
        root: DocStore,
        entries: usize,
        refresh_ms: u64,
        unknown_per_second: u32,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            registry: NsStore::system(root, KEYS_AREA),
            known: quick_cache::sync::Cache::new(entries.max(1)),
            refresh_ms,
            clock,
            unknown: super::ReadBudget::new(unknown_per_second),
        }
    }

    fn key_of(id: &str) -> Option<ObjectKey> {
        crate::config::NamespaceName::parse(id)
            .ok()
            .map(|n| ObjectKey::named(&n))
    }

    /// The record of key `id`, from memory if fresh; stale entries are read again
    /// and the uses counted meanwhile added to the record.
    async fn record(&self, id: &str) -> Result<Option<Arc<KeyRecord>>, TenantError> {
        let now = self.clock.now_ms();
        let cached = self.known.get(id);
        if let Some(k) = &cached {
            if now.saturating_sub(k.at_ms) < self.refresh_ms {
                return Ok(k.record.clone());
            }
        }
        let Some(key) = Self::key_of(id) else {
            return Ok(None);
        };
        let exists = cached.as_ref().is_some_and(|k| k.record.is_some());
        if !exists && !self.unknown.take(now) {
            tracing::debug!("over the budget for unknown key ids; not looked up");
            return Ok(None);
        }
        let pending = cached
            .as_ref()
            .map_or(0, |k| k.pending_uses.swap(0, Ordering::Relaxed));
        let record = if pending == 0 {
            match self.registry.get(&key).await? {
                Some(bytes) => serde_json::from_slice(&bytes)
                    .map_err(|_| crate::store::CasError::Rejected(TenantError::Missing)),
                None => Err(crate::store::CasError::Rejected(TenantError::Missing)),
            }
        } else {
            self.registry
                .compare_and_swap(&key, |current| {
                    let Some(bytes) = current else {
                        return Err(TenantError::Missing);
                    };
                    let mut record: KeyRecord =
                        serde_json::from_slice(bytes).map_err(|_| TenantError::Missing)?;
                    record.uses = record.uses.saturating_add(pending);
                    let out = serde_json::to_vec(&record).map_err(|_| TenantError::Missing)?;
                    Ok((out, record))
                })
                .await
        };
        let record = match record {
            Ok(r) => Some(Arc::new(r)),
            Err(crate::store::CasError::Rejected(_)) => None,
            Err(e) => return Err(e.into()),
        };
        self.known.insert(
            id.into(),
            Known {
                record: record.clone(),
                at_ms: now,
                pending_uses: Arc::new(AtomicU64::new(0)),
            },
        );
        Ok(record)
    }

    /// The record of the key `token` presents, if it is known, usable and the secret
    /// matches.
    ///
    /// # Errors
    /// Why it was refused, or the store's failure.
    pub(crate) async fn check(
        &self,
        token: &str,
    ) -> Result<Result<Arc<KeyRecord>, KeyRefused>, TenantError> {
        let Some(presented) = Presented::parse(token) else {
            return Ok(Err(KeyRefused::Unknown));
        };
        let Some(record) = self.record(presented.id).await? else {
            return Ok(Err(KeyRefused::Unknown));
        };
        let given = digest_hex(presented.secret);
        if !bool::from(given.as_bytes().ct_eq(record.hash.as_bytes())) {
            return Ok(Err(KeyRefused::Wrong));
        }
        if record.revoked {
            return Ok(Err(KeyRefused::Revoked));
        }
        if !record.usable(self.clock.now_ms()) {
            return Ok(Err(KeyRefused::Expired));
        }
        if let Some(k) = self.known.get(presented.id) {
            k.pending_uses.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok(record))
    }

    /// Creates a key; returns its record and the token, shown only this once.
    pub(crate) async fn create(
        &self,
        grants: BTreeMap<String, Vec<Right>>,
        generations: BTreeMap<String, String>,
        admin: bool,
        expires_at: Option<u64>,
        label: Option<String>,
        created_by: Option<String>,
    ) -> Result<(KeyRecord, String), TenantError> {
        let mut random = [0u8; 40];
        getrandom::fill(&mut random).map_err(|_| TenantError::Contended)?;
        let id = hex::encode(&random[..8]);
        let secret = hex::encode(&random[8..]);
        let record = KeyRecord {
            id: id.clone(),
            hash: digest_hex(&secret),
            grants,
            admin,
            expires_at,
            revoked: false,
            created_at: self.clock.now_ms(),
            label,
            uses: 0,
            generations,
            created_by,
        };
        let bytes = serde_json::to_vec(&record).map_err(|_| TenantError::Missing)?;
        let key = Self::key_of(&id).ok_or(TenantError::InvalidName)?;
        self.registry
            .compare_and_swap(&key, |current| {
                if current.is_some() {
                    Err(TenantError::Exists)
                } else {
                    Ok((bytes.clone(), ()))
                }
            })
            .await?;
        Ok((record, format!("{PREFIX}{id}_{secret}")))
    }

    /// The stored record of `id` (no use counted).
    pub(crate) async fn get(&self, id: &str) -> Result<KeyRecord, TenantError> {
        let key = Self::key_of(id).ok_or(TenantError::Missing)?;
        let bytes = self.registry.get(&key).await?.ok_or(TenantError::Missing)?;
        serde_json::from_slice(&bytes).map_err(|_| TenantError::Missing)
    }

    /// Revokes key `id` (by compare-and-swap); every node refuses it within the
    /// refresh bound, this one at once.
    pub(crate) async fn revoke(&self, id: &str) -> Result<KeyRecord, TenantError> {
        let key = Self::key_of(id).ok_or(TenantError::Missing)?;
        let record = self
            .registry
            .compare_and_swap(&key, |current| {
                let mut record: KeyRecord = current
                    .and_then(|b| serde_json::from_slice(b).ok())
                    .ok_or(TenantError::Missing)?;
                record.revoked = true;
                let out = serde_json::to_vec(&record).map_err(|_| TenantError::Missing)?;
                Ok::<_, TenantError>((out, record))
            })
            .await?;
        self.known.remove(id);
        Ok(record)
    }
}

/// The caller a key is in `scope`: 403 material (`None`) when the key names no
/// rights there.
pub(crate) fn caller_in(record: &KeyRecord, scope: &Scope) -> Option<Caller> {
    let namespace = scope.namespace.as_ref()?;
    let rights = record.rights_in(namespace.as_str(), scope.generation.as_deref())?;
    let mut roles: Vec<Arc<str>> = Vec::new();
    for right in rights {
        for c in &scope.routes.ordered {
            roles.push(format!("cap:{}:{}", right.op().as_str(), c.name).into());
        }
    }
    Some(
        Caller::verified(format!("key:{}", record.id), roles)
            .with_grant(CapGrant {
                ops: rights.iter().map(|r| r.op()).collect(),
                collections: vec!["*".into()],
            })
            .with_api_key(),
    )
}
