//! Author proofs (§5.4, §5.6): an Ed25519 signature over
//! `domain + stableStringify({"d": data, "k": documentKey})`.

use crate::canonical::stable_stringify;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{Map, Value};

/// Domain tag for whole-document author proofs.
pub const DOC_AUTHOR_DOMAIN: &str = "starfish-doc-author-v1\n";
/// Domain tag for append-element author proofs.
pub const APPEND_AUTHOR_DOMAIN: &str = "starfish-append-author-v1\n";

/// The bytes an author signs.
pub fn author_signing_input(domain: &str, data: &Value, document_key: &str) -> String {
    let mut obj = Map::new();
    obj.insert("d".into(), data.clone());
    obj.insert("k".into(), Value::from(document_key));
    format!("{domain}{}", stable_stringify(&Value::Object(obj)))
}

/// Decodes a lowercase-or-uppercase hex Ed25519 public key; `None` if malformed.
pub fn parse_public_key(hex_key: &str) -> Option<VerifyingKey> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// Decodes a standard-base64 (padding optional) 64-byte signature; `None` if malformed.
pub fn parse_signature(b64: &str) -> Option<Signature> {
    let bytes = crate::BASE64.decode(b64).ok()?;
    let bytes: [u8; 64] = bytes.try_into().ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// Verifies a signature the way every Starfish check does: strict RFC 8032
/// verification (`verify_strict`, which refuses small-order keys and non-canonical
/// signatures). The reference uses `@noble/curves`, which also refuses
/// non-canonical `S`; every vector in `tests/vectors` verifies under this rule.
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    key.verify_strict(message, signature).is_ok()
}

/// Checks an author proof over `data` at `document_key`.
pub fn verify_author(
    domain: &str,
    data: &Value,
    document_key: &str,
    pubkey: &str,
    signature: &str,
) -> bool {
    let (Some(key), Some(sig)) = (parse_public_key(pubkey), parse_signature(signature)) else {
        return false;
    };
    verify(
        &key,
        author_signing_input(domain, data, document_key).as_bytes(),
        &sig,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doc_author_vector_verifies_and_tampering_fails() {
        let pubkey = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
        let sig = "xyTh8+bMezp88FchV6kRburkMyEJO1zqnGP4KNYEvgRdk6lsAfSSrAN/0CTU9B4ynw2kihRdYo4zSI/gKiKrCQ==";
        let key = "users/10ba682c8ad13513971e8b56881aab8b/notes";
        assert!(verify_author(
            DOC_AUTHOR_DOMAIN,
            &json!({"title":"hello"}),
            key,
            pubkey,
            sig
        ));
        assert!(!verify_author(
            DOC_AUTHOR_DOMAIN,
            &json!({"title":"hellO"}),
            key,
            pubkey,
            sig
        ));
        assert!(!verify_author(
            APPEND_AUTHOR_DOMAIN,
            &json!({"title":"hello"}),
            key,
            pubkey,
            sig
        ));
        assert!(!verify_author(
            DOC_AUTHOR_DOMAIN,
            &json!({"title":"hello"}),
            key,
            "zz",
            sig
        ));
    }
}
