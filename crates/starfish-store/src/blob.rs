//! Binary objects: streamed in under a byte limit, hashed on the way, never held
//! whole in memory; their content type (and our hash) kept beside them.

use super::{NsStore, ObjectKey, StoreError};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::{Attribute, AttributeValue, Attributes, GetResult, ObjectStoreExt, PutPayload};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Bytes buffered before an upload turns into a multipart upload.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Suffix of the sidecar that holds a blob's content type (the reference's filesystem
/// layout) and, from us, its SHA-256 and the version it describes.
pub const META_SUFFIX: &str = ".__meta__";
/// Room set aside for a blob's sidecar within a quota.
const SIDECAR_ALLOWANCE: u64 = 512;
/// The media type of a blob stored without one.
pub(super) const DEFAULT_BLOB_TYPE: &str = "application/octet-stream";

/// Why a blob upload did not land. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The body passed the limit.
    #[error("blob over the size limit")]
    TooLarge,
    /// Reading the request body failed.
    #[error("request body: {0}")]
    Body(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A stored blob ready to be sent.
pub struct Blob {
    /// Its media type.
    pub content_type: String,
    /// Lowercase hex SHA-256 of its bytes.
    pub sha256: String,
    /// The bytes, still streaming from the store when the hash was known.
    pub body: BlobBody,
}

/// The bytes of a [`Blob`].
pub enum BlobBody {
    /// Streaming from the store.
    Stream(GetResult),
    /// Already read (the hash had to be computed).
    Bytes(Bytes),
}

fn meta_key(key: &ObjectKey) -> ObjectKey {
    key.derived(META_SUFFIX)
}

impl NsStore {
    /// Streams `body` to `key`, at most `limit` bytes, and records its media type.
    /// Returns the SHA-256 of what was stored. Last write wins.
    ///
    /// # Errors
    /// [`BlobError`]; the upload is aborted and nothing is stored.
    pub async fn put_blob<S, E>(
        &self,
        key: &ObjectKey,
        body: S,
        limit: u64,
        content_type: &str,
    ) -> Result<String, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.writable()?;
        let Some(ledger) = self.quota.clone() else {
            let (sha256, _) = self.upload_blob(key, body, limit, content_type).await?;
            return Ok(sha256);
        };
        // Within a quota: the largest upload the collection accepts is set aside
        // before a byte is read, and what it took (beside what it replaced) is counted.
        let old = self.size_of(&self.path(key)).await?;
        let old_meta = self.size_of(&self.path(&meta_key(key))).await?;
        let reservation = ledger
            .reserve(
                limit.saturating_add(SIDECAR_ALLOWANCE),
                u64::from(old.is_none()),
            )
            .await?;
        let result = self.upload_blob(key, body, limit, content_type).await;
        let (grown, created) = match &result {
            Ok((_, stored)) => {
                let before = old.unwrap_or(0) + old_meta.unwrap_or(0);
                (*stored as i64 - before as i64, i64::from(old.is_none()))
            }
            Err(_) => (0, 0),
        };
        ledger.settle(reservation, grown, created).await;
        result.map(|(sha256, _)| sha256)
    }

    /// The size of the object at `path`; `None` when there is none.
    async fn size_of(&self, path: &object_store::path::Path) -> Result<Option<u64>, StoreError> {
        match self.docs.inner.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if super::is_missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// [`NsStore::put_blob`] without the quota: returns the hash and the bytes
    /// stored (the blob and its sidecar).
    async fn upload_blob<S, E>(
        &self,
        key: &ObjectKey,
        mut body: S,
        limit: u64,
        content_type: &str,
    ) -> Result<(String, u64), BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let path = self.path(key);
        // At most two parts in flight: memory per upload stays near 2 x PART_BYTES.
        let mut writer =
            BufWriter::with_capacity(self.docs.inner.clone(), path.clone(), PART_BYTES)
                .with_max_concurrency(2);
        if self.docs.caps.attributes {
            writer = writer.with_attributes(Attributes::from_iter([(
                Attribute::ContentType,
                AttributeValue::from(content_type.to_owned()),
            )]));
        }
        let mut hasher = Sha256::new();
        let mut total: u64 = 0;
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => break Some(BlobError::Body(e.to_string())),
                Some(Ok(chunk)) => {
                    total += chunk.len() as u64;
                    if total > limit {
                        break Some(BlobError::TooLarge);
                    }
                    hasher.update(&chunk);
                    if let Err(e) = writer.put(chunk).await {
                        break Some(BlobError::Store(StoreError::on_write(e)));
                    }
                }
            }
        };
        // An upload can outlast a migration's grace: look again before it lands.
        let failure = failure.or_else(|| self.writable().err().map(BlobError::Store));
        if let Some(e) = failure {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer.shutdown().await.map_err(|e| {
            BlobError::Store(StoreError::on_write(object_store::Error::Generic {
                store: "blob upload",
                source: Box::new(e),
            }))
        })?;
        let sha256 = hex::encode(hasher.finalize());
        // Record the hash for the exact version just written, so a pull can trust it.
        let version = self
            .docs
            .inner
            .head(&path)
            .await
            .map_err(StoreError::from)?;
        let meta = json!({
            "contentType": content_type,
            "sha256": sha256,
            "size": version.size,
            "eTag": version.e_tag,
        });
        let meta = meta.to_string();
        let stored = version.size + meta.len() as u64;
        let meta_path = self.path(&meta_key(key));
        let written = self
            .docs
            .inner
            .put(&meta_path, PutPayload::from(meta))
            .await;
        // The sidecar is read through the cache: what it holds now is not known here.
        self.wrote(&meta_path, None);
        written.map_err(StoreError::on_write)?;
        Ok((sha256, stored))
    }

    /// Opens the blob at `key`; `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError`] for anything but "not found".
    pub async fn get_blob(&self, key: &ObjectKey) -> Result<Option<Blob>, StoreError> {
        let result = match self.docs.inner.get(&self.path(key)).await {
            Ok(r) => r,
            Err(e) if super::is_missing(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let sidecar = match self.get(&meta_key(key)).await? {
            Some(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
            None => None,
        };
        let field = |name: &str| {
            sidecar
                .as_ref()
                .and_then(|m| m.get(name))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        // The sidecar describes one version: its hash and type are trusted only for it,
        // so a reader never pairs one upload's bytes with another's type or ETag.
        let current = result.meta.e_tag.clone();
        let fresh = current.is_some() && current == field("eTag");
        let attribute = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string());
        let content_type = match (fresh, field("contentType")) {
            (true, Some(recorded)) => recorded,
            _ => attribute
                .or_else(|| field("contentType").filter(|_| !self.docs.caps.attributes))
                .unwrap_or_else(|| DEFAULT_BLOB_TYPE.to_owned()),
        };
        let trusted = field("sha256").filter(|_| fresh);
        match trusted {
            Some(sha256) => Ok(Some(Blob {
                content_type,
                sha256,
                body: BlobBody::Stream(result),
            })),
            None => {
                // Written by another server (or its sidecar is stale): hash it here.
                let bytes = result.bytes().await?;
                Ok(Some(Blob {
                    content_type,
                    sha256: hex::encode(Sha256::digest(&bytes)),
                    body: BlobBody::Bytes(bytes),
                }))
            }
        }
    }
}
