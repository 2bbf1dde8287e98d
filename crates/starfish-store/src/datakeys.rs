//! Data keys for encryption at rest: one keyring per namespace, kept in the store
//! (`_starfish/datakeys/ns/<name>`) as data keys wrapped by a [`KeyWrap`] (the
//! master key, or a KMS), never in the clear.
//!
//! ```json
//! {"current": 2, "keys": {"1": {"wrapped": "<base64>", "by": "master:3f2a…"}, "2": {…}}}
//! ```
//!
//! The keyring is created on a namespace's first sealed write (a create-only write:
//! two nodes racing agree on one key) and changed only by compare-and-swap. Old
//! versions stay in it, so objects sealed under them keep opening; after
//! `rotate-keys` no object uses them.

use super::{CasError, NsStore, ObjectKey};
use crate::clock::Clock;
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use async_trait::async_trait;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The system area of keyrings.
const AREA: &str = "datakeys";
/// How long a node trusts its copy of a keyring's current version, in ms: after a
/// rotation, nodes seal with the new version within this long.
pub(crate) const REFRESH_MS: u64 = 5_000;

/// A 256-bit data key, wiped from memory when dropped.
pub(crate) struct DataKey(zeroize::Zeroizing<[u8; 32]>);

impl DataKey {
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }
}

/// Where [`super::seal::Sealed`] finds its data keys.
#[async_trait]
pub(crate) trait KeySource: Send + Sync + std::fmt::Debug {
    /// The version new objects are sealed with, and its key.
    async fn current(&self) -> Result<(u32, Arc<DataKey>), String>;
    /// The key of `version`.
    async fn version(&self, version: u32) -> Result<Arc<DataKey>, KeyFailure>;
}

/// Why the key of a version is not at hand.
#[derive(Debug)]
pub(crate) enum KeyFailure {
    /// The keyring has no such version: the object naming it was not sealed here.
    Unknown,
    /// The keyring could not be read or unwrapped.
    Unavailable(String),
}

/// Wraps and unwraps data keys: [`MasterKey`], or a KMS an embedder plugs in. The
/// `context` (namespace and version) must be bound to the wrapping, so a wrapped key
/// cannot be moved to another namespace's keyring.
#[async_trait]
pub trait KeyWrap: Send + Sync + 'static {
    /// A name of the wrapping key, stored beside each wrapped key (not secret).
    fn id(&self) -> String;
    /// `key` wrapped for `context`.
    ///
    /// # Errors
    /// When the wrapping key cannot be used.
    async fn wrap(&self, context: &str, key: &[u8; 32]) -> Result<Vec<u8>, String>;
    /// The key `wrapped` for `context`.
    ///
    /// # Errors
    /// When `wrapped` was not wrapped by this key for `context`, or was altered.
    async fn unwrap(&self, context: &str, wrapped: &[u8]) -> Result<[u8; 32], String>;
}

/// The master key: AES-256-GCM key wrapping with a random nonce per wrapped key and
/// the context as associated data. Given as 64 hex digits or the base64 of 32 bytes,
/// in a file or an environment variable; kept outside the store.
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

impl MasterKey {
    /// The master key `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = zeroize::Zeroizing::new(bytes);
        let mut h = Sha256::new();
        h.update(b"starfish-master-key-id\n");
        h.update(bytes.as_ref());
        let id = format!("master:{}", &hex::encode(h.finalize())[..16]);
        let cipher = Aes256Gcm::new_from_slice(bytes.as_ref()).unwrap_or_else(|_| unreachable!());
        Self { cipher, id }
    }

    /// A master key written as 64 hex digits or as the base64 of 32 bytes
    /// (surrounding whitespace ignored).
    ///
    /// # Errors
    /// When `text` is neither (the message never repeats it).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = hex::decode(text)
            .ok()
            .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or("the master key must be 64 hex digits or the base64 of 32 bytes")?;
        let bytes = zeroize::Zeroizing::new(bytes);
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| "the master key must be 32 bytes (256 bits)")?;
        Ok(Self::from_bytes(array))
    }
}

#[async_trait]
impl KeyWrap for MasterKey {
    fn id(&self) -> String {
        self.id.clone()
    }

    async fn wrap(&self, context: &str, key: &[u8; 32]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: key,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "wrapping failed".to_owned())?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    async fn unwrap(&self, context: &str, wrapped: &[u8]) -> Result<[u8; 32], String> {
        if wrapped.len() < 12 {
            return Err("wrapped key too short".into());
        }
        let (nonce, sealed) = wrapped.split_at(12);
        let key = zeroize::Zeroizing::new(
            self.cipher
                .decrypt(
                    nonce.into(),
                    Payload {
                        msg: sealed,
                        aad: context.as_bytes(),
                    },
                )
                .map_err(|_| "the data key does not unwrap with this master key".to_owned())?,
        );
        key.as_slice()
            .try_into()
            .map_err(|_| "wrapped key of the wrong size".to_owned())
    }
}

/// What a node knows of one keyring.
#[derive(Default)]
struct Known {
    current: Option<u32>,
    /// When `current` was read, in ms.
    read_at: u64,
    keys: HashMap<u32, Arc<DataKey>>,
    /// Each learnt key as the record held it, wrapped: a record that later holds
    /// something else for a version is refused, never silently believed.
    wrapped: HashMap<u32, String>,
}

/// One namespace's keyring in the store.
pub struct Keyring {
    record: NsStore,
    key: ObjectKey,
    /// Names the namespace in every wrapping context.
    scope: String,
    wrap: Arc<dyn KeyWrap>,
    clock: Arc<dyn Clock>,
    known: Mutex<Known>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Keyring {
    /// The keyring of config namespace `name` (`_starfish/datakeys/ns/<name>`).
    pub fn for_config(
        docs: &super::DocStore,
        name: &starfish_protocol::names::NamespaceName,
        wrap: Arc<dyn KeyWrap>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            record: NsStore::system(docs.clone(), AREA),
            key: ObjectKey::fixed("ns").derived(format_args!("/{name}")),
            scope: format!("ns/{name}"),
            wrap,
            clock,
            known: Mutex::new(Known::default()),
        }
    }

    /// The keyring of runtime namespace `name` in `generation`
    /// (`_starfish/datakeys/t/<name>/<generation>`).
    pub fn for_runtime(
        docs: &super::DocStore,
        name: &starfish_protocol::names::NamespaceName,
        generation: &str,
        wrap: Arc<dyn KeyWrap>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            record: NsStore::system(docs.clone(), AREA),
            key: ObjectKey::fixed("t").derived(format_args!("/{name}/{generation}")),
            scope: format!("t/{name}/{generation}"),
            wrap,
            clock,
            known: Mutex::new(Known::default()),
        }
    }

    /// Deletes the keyring (with its namespace): nothing sealed under it opens again.
    ///
    /// # Errors
    /// [`super::StoreError`].
    pub async fn forget(&self) -> Result<(), super::StoreError> {
        if let Ok(mut k) = self.known.lock() {
            *k = Known::default();
        }
        self.record.remove(&self.key).await
    }

    fn context(&self, version: u32) -> String {
        format!("starfish-datakey-v1\n{}\n{version}", self.scope)
    }

    /// Reads the record and learns its current version and any key not known yet.
    /// When there is none: created with version 1 for a write (`create`) by a node
    /// that never learnt a key of it; otherwise an error (a keyring that vanished is
    /// never silently replaced while keys of it are in use).
    async fn refresh(&self, create: bool) -> Result<u32, String> {
        let stored = self
            .record
            .get(&self.key)
            .await
            .map_err(|e| e.to_string())?;
        let record: Value = match stored {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string())?,
            None => {
                let learnt = self.known.lock().map_or(true, |k| !k.keys.is_empty());
                if !create || learnt {
                    return Err("the keyring is missing from the store".into());
                }
                self.add_version(false).await?
            }
        };
        self.learn(&record).await
    }

    async fn learn(&self, record: &Value) -> Result<u32, String> {
        let current = record["current"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or("keyring without a current version")?;
        let listed = record["keys"].as_object().ok_or("keyring without keys")?;
        for (name, entry) in listed {
            let version: u32 = name.parse().map_err(|_| "bad key version")?;
            let text = entry["wrapped"].as_str().ok_or("bad wrapped key")?;
            let learnt = self
                .known
                .lock()
                .ok()
                .and_then(|k| k.wrapped.get(&version).cloned());
            match learnt {
                Some(same) if same == text => continue,
                Some(_) => {
                    return Err(format!(
                        "key version {version} changed in the store: refused"
                    ));
                }
                None => {}
            }
            let wrapped = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| "bad wrapped key")?;
            let key = self
                .wrap
                .unwrap(&self.context(version), &wrapped)
                .await
                .map_err(|e| format!("key version {version}: {e}"))?;
            if let Ok(mut k) = self.known.lock() {
                k.keys.insert(version, Arc::new(DataKey::from_bytes(key)));
                k.wrapped.insert(version, text.to_owned());
            }
        }
        if let Ok(mut k) = self.known.lock() {
            k.current = Some(current);
            k.read_at = self.clock.now_ms();
        }
        Ok(current)
    }

    /// Adds a new version with a fresh random key and makes it current (`rotate`),
    /// or creates the keyring when there is none (not `rotate`: a keyring another
    /// node created first is taken as it is). The record as it now stands.
    async fn add_version(&self, rotate: bool) -> Result<Value, String> {
        let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(fresh.as_mut()).map_err(|e| format!("no randomness: {e}"))?;
        // Wrapping is async (a KMS): wrap for the next version before the swap, and
        // again if the race moved the version.
        for _ in 0..8 {
            let stored = self
                .record
                .get(&self.key)
                .await
                .map_err(|e| e.to_string())?;
            let record: Option<Value> = stored
                .as_deref()
                .map(serde_json::from_slice)
                .transpose()
                .map_err(|e| e.to_string())?;
            if let (false, Some(existing)) = (rotate, &record) {
                return Ok(existing.clone());
            }
            let next = record
                .as_ref()
                .and_then(|r| r["keys"].as_object())
                .and_then(|keys| keys.keys().filter_map(|k| k.parse::<u32>().ok()).max())
                .map_or(Some(1), |v| v.checked_add(1))
                .ok_or("no key version left")?;
            let wrapped = self.wrap.wrap(&self.context(next), &fresh).await?;
            let entry = json!({"wrapped": b64(&wrapped), "by": self.wrap.id()});
            let expected = stored.clone();
            let result = self
                .record
                .compare_and_swap_uncounted(&self.key, |now| {
                    if now != expected.as_deref() {
                        return Err(());
                    }
                    let mut r = record.clone().unwrap_or_else(|| json!({"keys": {}}));
                    r["keys"][next.to_string()] = entry.clone();
                    r["current"] = json!(next);
                    if rotate {
                        // Objects under older versions are being re-sealed until
                        // `rotate-keys` clears this (the server's `rotate`).
                        r["resealing"] = json!(next);
                    }
                    Ok((serde_json::to_vec(&r).unwrap_or_default(), r))
                })
                .await;
            match result {
                Ok(r) => return Ok(r),
                // Changed since read (another node, another rotation): again.
                Err(CasError::Rejected(())) | Err(CasError::Contended) => {}
                Err(CasError::Store(e)) => return Err(e.to_string()),
            }
        }
        Err("the keyring kept changing".into())
    }
}

impl Keyring {
    /// Makes a new version current and marks the keyring as being re-sealed under
    /// it: `rotate-keys`' first step. The new version.
    pub async fn rotate(&self) -> Result<u32, String> {
        let record = self.add_version(true).await?;
        self.learn(&record).await
    }

    /// The version a `rotate-keys` left unfinished re-sealing under, if any (its
    /// keys learnt).
    pub async fn resealing(&self) -> Result<Option<u32>, String> {
        let Some(bytes) = self
            .record
            .get(&self.key)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let record: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        self.learn(&record).await?;
        Ok(record["resealing"]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok()))
    }

    /// Clears the re-sealing mark of `version`: every object is sealed under it.
    pub async fn resealed(&self, version: u32) -> Result<(), String> {
        let result = self
            .record
            .compare_and_swap_uncounted(&self.key, |now| {
                let mut r: Value = now.and_then(|b| serde_json::from_slice(b).ok()).ok_or(())?;
                if r["resealing"].as_u64() == Some(u64::from(version)) {
                    r.as_object_mut().map(|o| o.remove("resealing"));
                }
                Ok((serde_json::to_vec(&r).unwrap_or_default(), ()))
            })
            .await;
        result.map_err(|e| match e {
            CasError::Rejected(()) => "the keyring is gone".to_owned(),
            CasError::Contended => "the keyring kept changing".to_owned(),
            CasError::Store(e) => e.to_string(),
        })
    }
}

#[async_trait]
impl KeySource for Keyring {
    async fn current(&self) -> Result<(u32, Arc<DataKey>), String> {
        let now = self.clock.now_ms();
        let cached = self.known.lock().ok().and_then(|k| {
            let v = k.current?;
            (now.saturating_sub(k.read_at) < REFRESH_MS)
                .then(|| k.keys.get(&v).map(|key| (v, key.clone())))
                .flatten()
        });
        if let Some(hit) = cached {
            return Ok(hit);
        }
        let v = self.refresh(true).await?;
        let key = self.known.lock().ok().and_then(|k| k.keys.get(&v).cloned());
        key.map(|k| (v, k))
            .ok_or_else(|| format!("key version {v} is not in the keyring"))
    }

    async fn version(&self, version: u32) -> Result<Arc<DataKey>, KeyFailure> {
        let known = |s: &Self| s.known.lock().ok()?.keys.get(&version).cloned();
        if let Some(key) = known(self) {
            return Ok(key);
        }
        self.refresh(false).await.map_err(KeyFailure::Unavailable)?;
        known(self).ok_or(KeyFailure::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn master_key_wrapping_is_bound_to_its_context_and_key() {
        let m = MasterKey::parse(&"11".repeat(32)).unwrap();
        let w = m.wrap("ns/a\n1", &[9; 32]).await.unwrap();
        assert_eq!(m.unwrap("ns/a\n1", &w).await.unwrap(), [9; 32]);
        assert!(m.unwrap("ns/b\n1", &w).await.is_err());
        let other = MasterKey::parse(&b64(&[0x22; 32])).unwrap();
        assert!(other.unwrap("ns/a\n1", &w).await.is_err());
        assert!(MasterKey::parse("short").is_err());
        assert_ne!(m.id(), other.id());
    }
}
