//! The [Starfish](https://github.com/Drakkar-Software/Starfish) wire protocol, pure:
//! what a server and a client share. No I/O, no async runtime, no HTTP.
//!
//! - [`canonical`]: the reference's canonical JSON (`stableStringify`) and the
//!   document hash ([`compute_hash`]).
//! - [`document`]: push and append bodies as the server reads them, and documents as
//!   stored (`{data, ts, hash}`).
//! - [`append`]: append-only logs: elements, their hash, segments and ranges.
//! - [`author`]: author proofs on documents and append elements.
//! - [`capcert`]: capability certificates: shape, validity window, signature, roles;
//!   [`cert_json`] reads one from a header with bounds on its size.
//! - [`signing`]: what a request signature covers, and signing one.
//! - [`scope`]: the path globs of a certificate's scope.
//! - [`sharing`]: the sharing extension's rules for member and audience certificates.
//! - [`identity`]: a root key and a device certificate, and the headers of a signed
//!   request: what a client needs to call a server.
//! - [`names`]: the rules for namespace and collection names and path-parameter
//!   values, and the names the server keeps for itself.
//! - [`template`]: a collection's `storagePath` template (`users/{identity}/notes`)
//!   and the keys it resolves to.
//!
//! Section numbers (§3.2, ...) refer to the protocol description the vectors in the
//! repository's `tests/vectors/` were produced from.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod append;
pub mod author;
pub mod canonical;
pub mod capcert;
pub mod cert_json;
pub mod document;
pub mod identity;
pub mod names;
pub mod scope;
pub mod sharing;
pub mod signing;
pub mod template;

pub use canonical::{compute_hash, sha256_hex, stable_stringify};
pub use document::{AuthorProof, EnvelopeError, PushEnvelope, StoredDoc};

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Standard-alphabet base64 that writes padding and reads it or its absence, as the
/// reference's `atob`-based decoder does.
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The crate README's example, compiled as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
