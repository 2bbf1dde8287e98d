//! Wire types, canonical JSON, hashes and the pure pull/push logic. No axum, no I/O.

pub mod append;
pub mod author;
pub mod canonical;
pub mod document;
pub mod schema;

pub use canonical::{compute_hash, sha256_hex, stable_stringify};
pub use document::{AuthorProof, EnvelopeError, PushEnvelope, StoredDoc};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard-alphabet base64 that writes padding and reads it or its absence, as the
/// reference's `atob`-based decoder does.
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
