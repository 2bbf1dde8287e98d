//! Wire types, canonical JSON, hashes and the pure pull/push logic. No axum, no I/O.

pub(crate) mod append;
pub(crate) mod author;
pub(crate) mod canonical;
pub(crate) mod document;
pub(crate) mod schema;

pub(crate) use canonical::{sha256_hex, stable_stringify};
pub(crate) use document::{AuthorProof, DocLayout, EnvelopeError, PushEnvelope, StoredDoc};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard-alphabet base64 that writes padding and reads it or its absence, as the
/// reference's `atob`-based decoder does.
pub(crate) const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
