//! The protocol's rules, apart from HTTP: typed requests in, typed results out.
//!
//! - [`read`]: the one read path of single, bundle and batch pulls: `ttlMs`,
//!   corrupt documents, log bounds, and `fieldPermissions` (inside log elements too).
//! - [`write`]: pushes (hash check and compare-and-swap), appends, blobs; field write
//!   permissions, `objectSchema` and author proofs.
//!
//! Nothing here knows a status code; [`SyncError`] says what went wrong and
//! `crate::error` decides how it is answered.

pub(crate) mod read;
pub(crate) mod write;

use crate::config::Collection;
use crate::config::schema::SchemaViolation;
use crate::store::{ObjectKey, PathParams, StoreError};
use starfish_protocol::EnvelopeError;
use starfish_protocol::document::AppendEnvelopeError;

/// One object of one collection, reached with these path parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocRef<'a> {
    pub(crate) collection: &'a Collection,
    pub(crate) key: &'a ObjectKey,
    pub(crate) params: &'a PathParams,
}

/// Which author proof a message is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProofKind {
    /// A regular document's.
    Document,
    /// A log element's.
    Append,
}

/// A log pull's bounds as the client gave them (query string or `appendParams`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LogQuery {
    pub(crate) checkpoint: Option<u64>,
    pub(crate) last: Option<u64>,
    pub(crate) full: bool,
}

/// The server's own bounds on logs (`SyncOptions::max_append_pull_elements` and
/// `max_single_log_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogLimits {
    /// Most elements one pull returns when the collection sets no `maxPullLimit`.
    pub(crate) pull_elements: u64,
    /// Largest a single-document log may grow to, in bytes.
    pub(crate) single_log_bytes: u64,
}

impl LogLimits {
    /// The most elements one pull of a log of `config` returns.
    pub(crate) fn pull_cap(&self, config: &crate::config::AppendOnly) -> u64 {
        config
            .max_pull_limit
            .map_or(self.pull_elements, |m| m.get())
            .max(1)
    }
}

/// Why a log pull's bounds were refused; the text is the protocol's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BoundError {
    /// No checkpoint, no `last` and no `full`.
    #[error("pull_bound_required")]
    Required,
    /// `full` together with a bound.
    #[error("full_with_bounds")]
    FullWithBounds,
    /// `full` on a collection that forbids it.
    #[error("full_not_allowed")]
    FullNotAllowed,
    /// A checkpoint older than `maxCheckpointAgeMs`.
    #[error("checkpoint_too_old")]
    CheckpointTooOld,
}

/// Why a pull or a write did not happen.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    /// `baseHash` is not the stored hash, or writers kept racing.
    #[error("hash_mismatch")]
    HashMismatch,
    /// An append's `ts` is not after the last element.
    #[error("non_monotonic_timestamp")]
    NonMonotonicTimestamp,
    /// The log holds `maxItems` already, or a single-document log would grow past
    /// the server's byte cap.
    #[error("append_limit_exceeded")]
    AppendLimitExceeded {
        /// The collection's `maxItems`, or the elements the capped log holds.
        limit: u64,
        /// The byte cap a single-document log reached.
        max_bytes: Option<u64>,
    },
    /// The push body was refused.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The append body was refused.
    #[error(transparent)]
    AppendEnvelope(#[from] AppendEnvelopeError),
    /// An append's `ts` is too far in the future.
    #[error("ts is too far in the future")]
    TimestampInFuture,
    /// `data` breaks the collection's `objectSchema`.
    #[error("Schema validation failed: {}", .0.message)]
    Schema(SchemaViolation),
    /// The caller may not write this field.
    #[error("Field '{0}' is not writable with your roles")]
    FieldNotWritable(String),
    /// The author proof is not the request presenter's.
    #[error("author is not the request presenter")]
    AuthorNotPresenter(ProofKind),
    /// The author proof does not verify.
    #[error("invalid author signature")]
    InvalidAuthorSignature(ProofKind),
    /// A log pull's bounds.
    #[error(transparent)]
    Bound(#[from] BoundError),
    /// A blob's media type is not one the collection allows.
    #[error("Content-Type '{content_type}' is not allowed")]
    MediaTypeNotAllowed {
        /// What the client sent.
        content_type: String,
        /// The collection's patterns, as configured.
        allowed: Vec<String>,
    },
    /// The body is over the collection's limit.
    #[error("Payload too large")]
    PayloadTooLarge,
    /// The request body could not be read.
    #[error("Invalid request body")]
    Body,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
