//! Writes: a JSON push (a document with its hash check, or an append to a log) and a
//! blob upload. Every check that can refuse a write runs before the store is touched.

use super::{DocRef, LogLimits, ProofKind, SyncError};
use crate::access::holds_any;
use crate::auth::Caller;
use crate::config::{AppendOnly, Payload};
use crate::store::{AppendFailure, AppendOp, BlobError, CasError, NsStore};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Map, Value};
use starfish_protocol::append::{AppendError, MAX_FUTURE_MS};
use starfish_protocol::author::{APPEND_AUTHOR_DOMAIN, DOC_AUTHOR_DOMAIN, verify_author};
use starfish_protocol::document::{AppendEnvelope, AuthorProof, parse_body_object};
use starfish_protocol::{PushEnvelope, StoredDoc, sha256_hex, stable_stringify};

/// An accepted write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Written {
    /// The document's (or log's, or blob's) new hash.
    pub(crate) hash: String,
    /// The write's timestamp (an append's element timestamp).
    pub(crate) timestamp: u64,
    /// False when nothing was stored (`appendOnly.persist: false`).
    pub(crate) stored: bool,
    /// The pushed `data` as sent (before sanitising), when asked for.
    pub(crate) body: Option<Map<String, Value>>,
}

/// A JSON push to `doc`: the body is parsed, then field write permissions and the
/// schema are checked, then the document is compare-and-swapped or the element
/// appended (a single-document log at most `limits.single_log_bytes` long).
///
/// # Errors
/// [`SyncError`]; nothing is written.
pub(crate) async fn push(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    body: &[u8],
    limits: &LogLimits,
    now: u64,
    keep_body: bool,
) -> Result<Written, SyncError> {
    let body = parse_body_object(body)?;
    let mut sent = None;
    if let Some(Value::Object(data)) = body.get("data") {
        check_field_writes(data, doc, caller)?;
        if let Some(schema) = &doc.collection.object_schema {
            schema
                .validate(&Value::Object(data.clone()))
                .map_err(SyncError::Schema)?;
        }
        if keep_body {
            sent = Some(data.clone());
        }
    }
    let mut written = match &doc.collection.append_only {
        Some(config) => append(store, doc, caller, config, body, limits, now).await,
        None => push_document(store, doc, caller, body, now).await,
    }?;
    written.body = sent;
    Ok(written)
}

/// `fieldPermissions` writeRoles: refused naming the first field the caller may not write.
fn check_field_writes(
    data: &Map<String, Value>,
    doc: DocRef<'_>,
    caller: &Caller,
) -> Result<(), SyncError> {
    for (field, perm) in &doc.collection.field_permissions {
        if !perm.write.is_empty()
            && data.contains_key(field)
            && !holds_any(caller, &[], &perm.write, doc.params)
        {
            return Err(SyncError::FieldNotWritable(field.clone()));
        }
    }
    Ok(())
}

/// An author proof must be the presenter's and must verify over `data` at the key.
fn check_author(
    kind: ProofKind,
    author: &AuthorProof,
    caller: &Caller,
    data: &Value,
    doc: DocRef<'_>,
) -> Result<(), SyncError> {
    if caller.presenter().is_some_and(|p| p != author.pubkey) {
        return Err(SyncError::AuthorNotPresenter(kind));
    }
    let domain = match kind {
        ProofKind::Document => DOC_AUTHOR_DOMAIN,
        ProofKind::Append => APPEND_AUTHOR_DOMAIN,
    };
    if verify_author(
        domain,
        data,
        doc.key.as_str(),
        &author.pubkey,
        &author.signature,
    ) {
        Ok(())
    } else {
        Err(SyncError::InvalidAuthorSignature(kind))
    }
}

async fn push_document(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    body: Map<String, Value>,
    now: u64,
) -> Result<Written, SyncError> {
    let envelope = PushEnvelope::from_body(body)?;
    let data = Value::Object(envelope.data);
    if let Some(author) = &envelope.author {
        check_author(ProofKind::Document, author, caller, &data, doc)?;
    }
    let Value::Object(data) = data else {
        return Err(starfish_protocol::EnvelopeError::MissingData.into());
    };
    let new_doc = StoredDoc::new(data, now, envelope.author);
    let new_bytes = new_doc.to_bytes();
    let base_hash = envelope.base_hash;
    let result = store
        .compare_and_swap(doc.key, |current| {
            let accepted = match (current, &base_hash) {
                // Create: nothing may be stored yet, not even a corrupt object.
                (Some(_), None) => false,
                (None, None) => true,
                (current, Some(base)) => {
                    let current_hash = current
                        .and_then(StoredDoc::parse)
                        .map(|d| d.hash)
                        .unwrap_or_default();
                    *base == current_hash
                }
            };
            if accepted {
                Ok((new_bytes.clone(), ()))
            } else {
                Err(())
            }
        })
        .await;
    match result {
        Ok(()) => Ok(Written {
            hash: new_doc.hash,
            timestamp: now,
            stored: true,
            body: None,
        }),
        Err(CasError::Rejected(()) | CasError::Contended) => Err(SyncError::HashMismatch),
        Err(CasError::Store(e)) => Err(e.into()),
    }
}

async fn append(
    store: &NsStore,
    doc: DocRef<'_>,
    caller: &Caller,
    config: &AppendOnly,
    body: Map<String, Value>,
    limits: &LogLimits,
    now: u64,
) -> Result<Written, SyncError> {
    let envelope = AppendEnvelope::from_body(body, config.require_author_signature)?;
    if let Some(author) = &envelope.author {
        // Verified even when not required: an unverified proof is never stored.
        let item = Value::Object(envelope.item.clone());
        check_author(ProofKind::Append, author, caller, &item, doc)?;
    }
    if envelope
        .ts
        .is_some_and(|ts| ts > now.saturating_add(MAX_FUTURE_MS))
    {
        return Err(SyncError::TimestampInFuture);
    }
    if !config.persist {
        let hash = sha256_hex(stable_stringify(&Value::Object(envelope.item)).as_bytes());
        return Ok(Written {
            hash,
            timestamp: envelope.ts.unwrap_or(now),
            stored: false,
            body: None,
        });
    }
    let op = AppendOp {
        key: doc.key,
        field: &config.field,
        item: &envelope.item,
        ts: envelope.ts,
        author: envelope.author.as_ref(),
        max_items: config.max_items.map(|m| m.get()),
        chunk_size: config.chunk_size.map(|c| c.get()),
        max_single_bytes: limits.single_log_bytes,
        now,
    };
    match store.append(&op).await {
        Ok((hash, timestamp)) => Ok(Written {
            hash,
            timestamp,
            stored: true,
            body: None,
        }),
        Err(AppendFailure::Refused(AppendError::NonMonotonic)) => {
            Err(SyncError::NonMonotonicTimestamp)
        }
        Err(AppendFailure::Refused(AppendError::LimitExceeded(limit))) => {
            Err(SyncError::AppendLimitExceeded {
                limit,
                max_bytes: None,
            })
        }
        Err(AppendFailure::Refused(AppendError::TooLarge { held, max_bytes })) => {
            tracing::info!(key = %doc.key, held, max_bytes, "single-document log is full");
            Err(SyncError::AppendLimitExceeded {
                limit: held,
                max_bytes: Some(max_bytes),
            })
        }
        Err(AppendFailure::Contended) => Err(SyncError::HashMismatch),
        Err(AppendFailure::Store(e)) => Err(e.into()),
    }
}

/// Whether `content_type`'s media type is `expected` (lower case), without building it.
pub(crate) fn media_type_is(content_type: &str, expected: &str) -> bool {
    crate::util::text::split_once_ascii(content_type, b';')
        .map_or(content_type, |(media_type, _)| media_type)
        .trim()
        .eq_ignore_ascii_case(expected)
}

/// The media type of a `Content-Type` value: before any `;`, trimmed, lower-cased.
pub(crate) fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// True when `media` matches one of the collection's patterns: `type/subtype`,
/// either part `*` for anything.
fn mime_allowed(media: &str, payload: &Payload) -> bool {
    let Payload::Binary(patterns) = payload else {
        return false;
    };
    let Some((ty, sub)) = media.split_once('/') else {
        return false;
    };
    !ty.is_empty()
        && patterns.iter().any(|p| {
            let p = p.as_str().to_ascii_lowercase();
            p.split_once('/').is_some_and(|(pty, psub)| {
                (pty == "*" || pty == ty) && (psub == "*" || psub == sub)
            })
        })
}

/// A blob upload to `doc`, streamed under the collection's limit.
///
/// # Errors
/// [`SyncError::MediaTypeNotAllowed`], [`SyncError::PayloadTooLarge`],
/// [`SyncError::Body`], store failures; nothing is stored.
pub(crate) async fn put_blob<S, E>(
    store: &NsStore,
    doc: DocRef<'_>,
    content_type: &str,
    body: S,
    now: u64,
) -> Result<Written, SyncError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let collection = doc.collection;
    let media = media_type(content_type);
    if !mime_allowed(&media, &collection.payload) {
        return Err(SyncError::MediaTypeNotAllowed {
            content_type: content_type.to_owned(),
            allowed: collection.allowed_mime_types.clone(),
        });
    }
    let stored_type = content_type.split(';').next().unwrap_or("").trim();
    let limit = collection.max_body_bytes.get();
    match store.put_blob(doc.key, body, limit, stored_type).await {
        Ok(hash) => Ok(Written {
            hash,
            timestamp: now,
            stored: true,
            body: None,
        }),
        Err(BlobError::TooLarge) => Err(SyncError::PayloadTooLarge),
        Err(BlobError::Body(e)) => {
            tracing::debug!(error = %e, "blob body read failed");
            Err(SyncError::Body)
        }
        Err(BlobError::Store(e)) => Err(e.into()),
    }
}
