//! Encryption at rest: [`Sealed`], an `object_store` wrapper that seals every object
//! it writes with AES-256-GCM and opens every object it reads.
//!
//! The format is a streaming AEAD in the manner of Tink's AES-GCM-HKDF streaming
//! (built from the RustCrypto `aes-gcm` and `hkdf` crates, nothing hand-made):
//!
//! ```text
//! header  = "SFSEAL1\0" | key version (u32 BE) | salt (32 random bytes) | nonce prefix (7 random bytes)
//! object  = header | chunk 0 | chunk 1 | … | last chunk
//! chunk i = AES-256-GCM(object key, nonce = prefix | i (u32 BE) | last (0 or 1), aad = header, plaintext)
//! object key = HKDF-SHA256(data key of that version, salt, "starfish-seal-v1\n" | object path)
//! ```
//!
//! Every chunk but the last holds exactly [`CHUNK`] bytes of plaintext; the last holds
//! fewer (possibly none) and is sealed as the last. So a flipped byte anywhere, a
//! truncation (at a chunk boundary or not), reordered chunks, an object moved to
//! another path or sealed under another version are all refused
//! ([`SealError::Integrity`]), and memory stays at one chunk per stream whatever the
//! object's size. Sizes reported by `head` and `list` are the plaintext's.

use super::datakeys::{DataKey, KeyFailure, KeySource};
use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::BoxStream;
use hkdf::Hkdf;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};
use sha2::Sha256;
use std::sync::Arc;

/// Plaintext bytes per chunk.
pub(crate) const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const MAGIC: &[u8; 8] = b"SFSEAL1\0";
const SALT: usize = 32;
const PREFIX: usize = 7;
/// Bytes before the first chunk.
pub(crate) const HEADER: usize = MAGIC.len() + 4 + SALT + PREFIX;
const SEALED_CHUNK: usize = CHUNK + TAG;

/// Why an object could not be opened.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    /// The stored bytes are not what was sealed: flipped, truncated, moved or not
    /// sealed at all. Never served.
    #[error("stored object {0} failed its integrity check (tampered, truncated or not sealed)")]
    Integrity(String),
    /// The object names a key version the keyring does not have (or cannot unwrap).
    #[error("no data key for {0}: {1}")]
    Key(String, String),
    /// Ranges of sealed objects are not served.
    #[error("ranged reads of sealed objects are not supported")]
    Range,
}

impl SealError {
    fn into_store(self) -> object_store::Error {
        object_store::Error::Generic {
            store: "sealed",
            source: Box::new(self),
        }
    }
}

/// The plaintext size of a sealed object of `sealed` bytes (`None`: no sealed
/// object has that size).
pub(crate) fn plain_size(sealed: u64) -> Option<u64> {
    let body = sealed.checked_sub(HEADER as u64)?;
    let full = body / SEALED_CHUNK as u64;
    let last = body - full * SEALED_CHUNK as u64;
    let last_plain = last.checked_sub(TAG as u64)?;
    Some(full * CHUNK as u64 + last_plain)
}

/// Seals or opens the chunks of one object.
struct ObjectCipher {
    cipher: Aes256Gcm,
    header: [u8; HEADER],
}

impl ObjectCipher {
    fn new(key: &DataKey, header: [u8; HEADER], path: &Path) -> Self {
        let salt = &header[MAGIC.len() + 4..MAGIC.len() + 4 + SALT];
        let hk = Hkdf::<Sha256>::new(Some(salt), key.bytes());
        let mut okm = zeroize::Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit: expand cannot fail.
        let _ = hk.expand_multi_info(
            &[b"starfish-seal-v1\n", path.as_ref().as_bytes()],
            okm.as_mut(),
        );
        let cipher = Aes256Gcm::new_from_slice(okm.as_ref()).unwrap_or_else(|_| unreachable!());
        Self { cipher, header }
    }

    /// A fresh header for `version`.
    fn fresh_header(version: u32) -> Result<[u8; HEADER], SealError> {
        let mut header = [0u8; HEADER];
        header[..MAGIC.len()].copy_from_slice(MAGIC);
        header[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&version.to_be_bytes());
        getrandom::fill(&mut header[MAGIC.len() + 4..])
            .map_err(|e| SealError::Key(String::new(), format!("no randomness: {e}")))?;
        Ok(header)
    }

    /// The key version a header names, when it is a header.
    fn version_of(header: &[u8]) -> Option<u32> {
        if header.len() < HEADER || &header[..MAGIC.len()] != MAGIC {
            return None;
        }
        let v = &header[MAGIC.len()..MAGIC.len() + 4];
        Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    fn nonce(&self, index: u32, last: bool) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..PREFIX].copy_from_slice(&self.header[HEADER - PREFIX..]);
        n[PREFIX..PREFIX + 4].copy_from_slice(&index.to_be_bytes());
        n[11] = u8::from(last);
        n
    }

    fn seal(&self, index: u32, last: bool, plain: &[u8], out: &mut Vec<u8>) {
        let nonce = self.nonce(index, last);
        let payload = Payload {
            msg: plain,
            aad: &self.header,
        };
        // Encryption fails only past GCM's message length limit, far above a chunk.
        let sealed = self
            .cipher
            .encrypt((&nonce).into(), payload)
            .unwrap_or_else(|_| unreachable!());
        out.extend_from_slice(&sealed);
    }

    fn open(&self, index: u32, last: bool, sealed: &[u8]) -> Option<Vec<u8>> {
        let nonce = self.nonce(index, last);
        self.cipher
            .decrypt(
                (&nonce).into(),
                Payload {
                    msg: sealed,
                    aad: &self.header,
                },
            )
            .ok()
    }
}

/// Seals a whole plaintext.
fn seal_all(cipher: &ObjectCipher, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let full = plain.len() / CHUNK;
    let mut out = Vec::with_capacity(HEADER + plain.len() + (full + 1) * TAG);
    out.extend_from_slice(&cipher.header);
    let mut index = 0u32;
    let mut rest = plain;
    while rest.len() >= CHUNK {
        cipher.seal(index, false, &rest[..CHUNK], &mut out);
        rest = &rest[CHUNK..];
        index = index
            .checked_add(1)
            .ok_or_else(|| SealError::Integrity("object too large".into()))?;
    }
    cipher.seal(index, true, rest, &mut out);
    Ok(out)
}

/// An `object_store` that seals what it writes and opens what it reads, with the
/// data keys of `keys`. Everything else (listing, deleting) passes through.
#[derive(Debug)]
pub(crate) struct Sealed {
    inner: Arc<dyn ObjectStore>,
    keys: Arc<dyn KeySource>,
}

impl Sealed {
    pub(crate) fn new(inner: Arc<dyn ObjectStore>, keys: Arc<dyn KeySource>) -> Self {
        Self { inner, keys }
    }

    async fn cipher_for_write(&self, path: &Path) -> object_store::Result<ObjectCipher> {
        let (version, key) = self
            .keys
            .current()
            .await
            .map_err(|e| SealError::Key(path.to_string(), e).into_store())?;
        let header = ObjectCipher::fresh_header(version).map_err(SealError::into_store)?;
        Ok(ObjectCipher::new(&key, header, path))
    }
}

impl std::fmt::Display for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealed({})", self.inner)
    }
}

fn plain_meta(mut meta: ObjectMeta) -> ObjectMeta {
    if let Some(size) = plain_size(meta.size) {
        meta.size = size;
    }
    meta
}

/// Opens a sealed stream chunk by chunk.
struct Opener {
    inner: BoxStream<'static, object_store::Result<Bytes>>,
    keys: Arc<dyn KeySource>,
    path: Path,
    /// Sealed bytes read and not yet opened (taken from the front without copying
    /// the rest, however large the store's pieces).
    buf: BytesMut,
    cipher: Option<ObjectCipher>,
    index: u32,
    done: bool,
}

impl Opener {
    fn tampered(&self) -> object_store::Error {
        tracing::error!(path = %self.path, "a stored object failed its integrity check");
        SealError::Integrity(self.path.to_string()).into_store()
    }

    /// The next plaintext piece; `None` after the last chunk.
    async fn next(&mut self) -> Option<object_store::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            if self.cipher.is_none() && self.buf.len() >= HEADER {
                let Some(version) = ObjectCipher::version_of(&self.buf) else {
                    self.done = true;
                    return Some(Err(self.tampered()));
                };
                let key = match self.keys.version(version).await {
                    Ok(k) => k,
                    // A version the keyring never had: not sealed here.
                    Err(KeyFailure::Unknown) => {
                        self.done = true;
                        return Some(Err(self.tampered()));
                    }
                    Err(KeyFailure::Unavailable(e)) => {
                        self.done = true;
                        return Some(Err(SealError::Key(self.path.to_string(), e).into_store()));
                    }
                };
                let mut header = [0u8; HEADER];
                header.copy_from_slice(&self.buf.split_to(HEADER));
                self.cipher = Some(ObjectCipher::new(&key, header, &self.path));
            }
            if let Some(cipher) = &self.cipher {
                // More than a sealed chunk buffered: the first one is not the last.
                if self.buf.len() > SEALED_CHUNK {
                    let sealed = self.buf.split_to(SEALED_CHUNK);
                    let Some(plain) = cipher.open(self.index, false, &sealed) else {
                        self.done = true;
                        return Some(Err(self.tampered()));
                    };
                    // Past u32::MAX chunks no nonce is left: such an object was
                    // never sealed here.
                    let Some(next) = self.index.checked_add(1) else {
                        self.done = true;
                        return Some(Err(self.tampered()));
                    };
                    self.index = next;
                    return Some(Ok(Bytes::from(plain)));
                }
            }
            match self.inner.next().await {
                Some(Ok(bytes)) => self.buf.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                None => {
                    self.done = true;
                    let Some(cipher) = &self.cipher else {
                        return Some(Err(self.tampered()));
                    };
                    // What is left is the last chunk, or the object was cut short.
                    let last = if self.buf.len() >= TAG && self.buf.len() < SEALED_CHUNK {
                        cipher.open(self.index, true, &self.buf)
                    } else {
                        None
                    };
                    return Some(match last {
                        Some(plain) => Ok(Bytes::from(plain)),
                        None => Err(self.tampered()),
                    });
                }
            }
        }
    }
}

/// Smallest part S3 (and its kin) accept, but for the last one.
const MIN_PART: usize = 5 * 1024 * 1024;

/// A multipart upload sealing as its parts arrive: whole chunks are sealed at once,
/// a partial chunk waits for the next part or the end, and sealed bytes go out in
/// parts of at least [`MIN_PART`] (the last one excepted), whatever sizes the
/// writer's parts have. At most a part and [`MIN_PART`] are held.
#[derive(Debug)]
struct SealingUpload {
    inner: Box<dyn MultipartUpload>,
    cipher: Arc<ObjectCipherDebug>,
    /// Plaintext of the chunk not yet whole.
    pending: Vec<u8>,
    /// Sealed bytes not yet sent.
    out: Vec<u8>,
    index: u32,
}

/// [`ObjectCipher`] with a `Debug` that shows nothing secret.
struct ObjectCipherDebug(ObjectCipher);

impl std::fmt::Debug for ObjectCipherDebug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectCipher")
    }
}

impl SealingUpload {
    /// Seals every whole chunk pending (and, `last`, what is left as the last one).
    fn seal_pending(&mut self, last: bool) -> Result<(), SealError> {
        let cipher = &self.cipher.0;
        let mut used = 0;
        while self.pending.len() - used >= CHUNK {
            cipher.seal(
                self.index,
                false,
                &self.pending[used..used + CHUNK],
                &mut self.out,
            );
            used += CHUNK;
            self.index = self
                .index
                .checked_add(1)
                .ok_or_else(|| SealError::Integrity("object too large to seal".into()))?;
        }
        if last {
            cipher.seal(self.index, true, &self.pending[used..], &mut self.out);
            used = self.pending.len();
        }
        self.pending.drain(..used);
        Ok(())
    }
}

#[async_trait]
impl MultipartUpload for SealingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        for piece in &data {
            self.pending.extend_from_slice(piece);
        }
        if let Err(e) = self.seal_pending(false) {
            return Box::pin(async move { Err(e.into_store()) });
        }
        if self.out.len() < MIN_PART {
            return Box::pin(async { Ok(()) });
        }
        let part = std::mem::take(&mut self.out);
        self.inner.put_part(PutPayload::from(part))
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.seal_pending(true).map_err(SealError::into_store)?;
        let part = std::mem::take(&mut self.out);
        self.inner.put_part(PutPayload::from(part)).await?;
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for Sealed {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let cipher = self.cipher_for_write(location).await?;
        let mut plain = Vec::with_capacity(payload.content_length());
        for piece in &payload {
            plain.extend_from_slice(piece);
        }
        let sealed = seal_all(&cipher, &plain).map_err(SealError::into_store)?;
        self.inner
            .put_opts(location, PutPayload::from(sealed), opts)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let cipher = self.cipher_for_write(location).await?;
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        let out = cipher.header.to_vec();
        Ok(Box::new(SealingUpload {
            inner,
            cipher: Arc::new(ObjectCipherDebug(cipher)),
            pending: Vec::new(),
            out,
            index: 0,
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if options.range.is_some() {
            return Err(SealError::Range.into_store());
        }
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        let meta = plain_meta(result.meta.clone());
        let range = 0..meta.size;
        if head {
            return Ok(GetResult {
                payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
                meta,
                range,
                attributes: result.attributes,
                extensions: result.extensions,
            });
        }
        let attributes = result.attributes.clone();
        let extensions = result.extensions.clone();
        let opener = Opener {
            inner: result.into_stream(),
            keys: self.keys.clone(),
            path: location.clone(),
            buf: BytesMut::new(),
            cipher: None,
            index: 0,
            done: false,
        };
        let stream = futures::stream::unfold(opener, |mut o| async move {
            o.next().await.map(|item| (item, o))
        });
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream.boxed()),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix).map(|m| m.map(plain_meta)).boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .map(|m| m.map(plain_meta))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed.objects = listed.objects.into_iter().map(plain_meta).collect();
        Ok(listed)
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        // A sealed object is bound to its path: a byte copy would not open.
        Err(object_store::Error::NotSupported {
            source: format!("copying sealed objects ({to})").into(),
        })
    }

    async fn rename_opts(
        &self,
        _from: &Path,
        to: &Path,
        _options: RenameOptions,
    ) -> object_store::Result<()> {
        Err(object_store::Error::NotSupported {
            source: format!("renaming sealed objects ({to})").into(),
        })
    }
}

/// True when `e` says an object could not be opened (not that the store failed).
pub(crate) fn is_seal_error(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic {
            store: "sealed",
            ..
        }
    )
}

/// The key version `stored` (an object as the store holds it) is sealed under;
/// `None` when it is not sealed.
pub(crate) fn sealed_version(stored: &[u8]) -> Option<u32> {
    ObjectCipher::version_of(stored)
}

/// Opens a whole sealed object held in memory (`stored`, read from `path`).
///
/// # Errors
/// [`SealError`] as an `object_store` error, as a read would give it.
pub(crate) async fn open_all(
    keys: Arc<dyn KeySource>,
    path: &Path,
    stored: Bytes,
) -> object_store::Result<Vec<u8>> {
    let mut opener = Opener {
        inner: futures::stream::once(async move { Ok(stored) }).boxed(),
        keys,
        path: path.clone(),
        buf: BytesMut::new(),
        cipher: None,
        index: 0,
        done: false,
    };
    let mut out = Vec::new();
    while let Some(piece) = opener.next().await {
        out.extend_from_slice(&piece?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sizes_follow_the_format() {
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let key = DataKey::from_bytes([7; 32]);
            let header = ObjectCipher::fresh_header(1).unwrap();
            let c = ObjectCipher::new(&key, header, &Path::from("a/b"));
            let sealed = seal_all(&c, &vec![1u8; n]).unwrap();
            assert_eq!(plain_size(sealed.len() as u64), Some(n as u64), "{n}");
        }
        assert_eq!(plain_size(HEADER as u64 + 3), None);
    }

    /// Records the sizes of the parts it is given.
    #[derive(Debug, Default)]
    struct Parts(Arc<std::sync::Mutex<Vec<usize>>>);

    #[async_trait]
    impl MultipartUpload for Parts {
        fn put_part(&mut self, data: PutPayload) -> UploadPart {
            self.0.lock().unwrap().push(data.content_length());
            Box::pin(async { Ok(()) })
        }
        async fn complete(&mut self) -> object_store::Result<PutResult> {
            Ok(PutResult {
                e_tag: None,
                version: None,
                extensions: Default::default(),
            })
        }
        async fn abort(&mut self) -> object_store::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn sealed_parts_are_never_too_small_for_s3_but_the_last() {
        // The writer's parts: 5 MiB, 5 MiB, then a short last one (as BufWriter
        // sends them), and odd sizes.
        for sizes in [
            vec![MIN_PART, MIN_PART, 200_000],
            vec![MIN_PART, 70_000],
            vec![1_000_000, 3_000_000, 2_500_000, 10],
            vec![MIN_PART],
        ] {
            let sizes_seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let key = DataKey::from_bytes([7; 32]);
            let cipher = ObjectCipher::new(
                &key,
                ObjectCipher::fresh_header(1).unwrap(),
                &Path::from("a"),
            );
            let mut upload = SealingUpload {
                inner: Box::new(Parts(sizes_seen.clone())),
                out: cipher.header.to_vec(),
                cipher: Arc::new(ObjectCipherDebug(cipher)),
                pending: Vec::new(),
                index: 0,
            };
            for n in &sizes {
                upload
                    .put_part(PutPayload::from(vec![1u8; *n]))
                    .await
                    .unwrap();
            }
            upload.complete().await.unwrap();
            let parts = sizes_seen.lock().unwrap().clone();
            let (last, rest) = parts.split_last().unwrap();
            assert!(
                rest.iter().all(|p| *p >= MIN_PART),
                "{sizes:?} -> {parts:?}"
            );
            let total: usize = sizes.iter().sum();
            let sealed = parts.iter().sum::<usize>() as u64;
            assert_eq!(plain_size(sealed), Some(total as u64), "{parts:?}");
            assert!(*last > 0);
        }
    }
}
