//! Wire types, canonical JSON, hashes and the pure pull/push logic. No axum, no I/O.

pub mod author;
pub mod canonical;
pub mod document;

pub use canonical::{compute_hash, sha256_hex, stable_stringify};
pub use document::{AuthorProof, EnvelopeError, PushEnvelope, StoredDoc};
