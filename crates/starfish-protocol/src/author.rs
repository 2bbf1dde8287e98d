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
/// verification, accepting exactly what `ed25519_dalek`'s `verify_strict` accepts
/// (it refuses small-order keys and `R`, non-canonical `S` and `R`). The reference
/// uses `@noble/curves`, which also refuses non-canonical `S`; every vector in
/// `tests/vectors` verifies under this rule.
///
/// One step cheaper than `verify_strict`: it compares the recomputed `R` with the
/// signature's as points (two multiplications) rather than as encodings (an
/// inversion, about a tenth of a verification). The two are the same test once
/// `R`'s encoding is known canonical: then the encodings are equal exactly when
/// the points are. A test compares the two on valid, tampered, non-canonical,
/// small-order and mixed-order inputs.
pub fn verify(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use sha2::Digest as _;
    let r_bytes = signature.r_bytes();
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes())) else {
        return false;
    };
    if !canonical_y(r_bytes) {
        return false;
    }
    let Some(r) = CompressedEdwardsY(*r_bytes).decompress() else {
        return false;
    };
    let a = key.to_edwards();
    if r.is_small_order() || a.is_small_order() {
        return false;
    }
    let mut hash = sha2::Sha512::new();
    hash.update(r_bytes);
    hash.update(key.as_bytes());
    hash.update(message);
    let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
    // -[k]A + [s]B = R, compared in projective coordinates.
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &(-a), &s) == r
}

/// True when a point's encoding holds `y` reduced (below 2^255 - 19), as the
/// encoding of a computed point always does. (The sign bit of an `x` of 0 is the
/// other non-canonical case; the only such points, `y = ±1`, are of small order.)
fn canonical_y(encoding: &[u8; 32]) -> bool {
    let top = encoding[31] & 0x7f;
    !(top == 0x7f && encoding[1..31].iter().all(|&b| b == 0xff) && encoding[0] >= 0xed)
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

    /// The verification this module's replaces, for comparison.
    fn strict(key: &VerifyingKey, message: &[u8], signature: &Signature) -> bool {
        key.verify_strict(message, signature).is_ok()
    }

    /// A reproducible stream of bytes (SplitMix64).
    struct Bytes(u64);
    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn array<const N: usize>(&mut self) -> [u8; N] {
            std::array::from_fn(|_| self.next() as u8)
        }
        fn scalar(&mut self) -> Scalar {
            Scalar::from_bytes_mod_order_wide(&self.array())
        }
    }

    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT as B, EIGHT_TORSION};
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;

    /// A signature made by hand: `R = [r]B + r_torsion`, `s = r + k·a`, for the
    /// key `a_point` (which may carry a torsion part `a` does not know).
    fn signed(
        a: Scalar,
        a_point: EdwardsPoint,
        r: Scalar,
        r_torsion: EdwardsPoint,
        message: &[u8],
    ) -> (VerifyingKey, Signature) {
        use sha2::Digest as _;
        let key_bytes = a_point.compress().to_bytes();
        let key = VerifyingKey::from_bytes(&key_bytes).unwrap();
        let r_bytes = (r * B + r_torsion).compress().to_bytes();
        let mut hash = sha2::Sha512::new();
        hash.update(r_bytes);
        hash.update(key_bytes);
        hash.update(message);
        let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
        let mut bytes = [0; 64];
        bytes[..32].copy_from_slice(&r_bytes);
        bytes[32..].copy_from_slice((r + k * a).as_bytes());
        (key, Signature::from_bytes(&bytes))
    }

    /// Both verifications agree on `cases`; how many of them verified.
    fn agree(cases: impl IntoIterator<Item = (VerifyingKey, Vec<u8>, Signature)>) -> usize {
        let mut verified = 0;
        for (key, message, signature) in cases {
            let ours = verify(&key, &message, &signature);
            assert_eq!(
                ours,
                strict(&key, &message, &signature),
                "key {:?} signature {signature:?}",
                key.as_bytes()
            );
            verified += usize::from(ours);
        }
        verified
    }

    #[test]
    fn verification_accepts_exactly_what_verify_strict_accepts() {
        let mut rng = Bytes(7);
        let mut cases = Vec::new();
        // Valid signatures, then each with one bit flipped (signature or message).
        for _ in 0..100 {
            let secret = ed25519_dalek::SigningKey::from_bytes(&rng.array());
            let message = rng.array::<20>().to_vec();
            let signature = ed25519_dalek::Signer::sign(&secret, &message);
            let key = secret.verifying_key();
            cases.push((key, message.clone(), signature));
            let bit = (rng.next() % (84 * 8)) as usize;
            let (mut sig, mut msg) = (signature.to_bytes(), message.clone());
            if bit < 512 {
                sig[bit / 8] ^= 1 << (bit % 8);
            } else {
                msg[(bit - 512) / 8] ^= 1 << (bit % 8);
            }
            cases.push((key, msg, Signature::from_bytes(&sig)));
            // `S` plus the group's order: the same equation, not canonical.
            let s = Scalar::from_canonical_bytes(*signature.s_bytes()).unwrap();
            let mut wide = [0u8; 32];
            let mut carry = 0u16;
            // The order of the base point, little-endian.
            let mut order = [0u8; 32];
            order[..16]
                .copy_from_slice(&0x14de_f9de_a2f7_9cd6_5812_631a_5cf5_d3ed_u128.to_le_bytes());
            order[31] = 0x10;
            for (i, byte) in wide.iter_mut().enumerate() {
                let sum = u16::from(s.as_bytes()[i]) + u16::from(order[i]) + carry;
                *byte = sum as u8;
                carry = sum >> 8;
            }
            let mut sig = signature.to_bytes();
            sig[32..].copy_from_slice(&wide);
            cases.push((key, message, Signature::from_bytes(&sig)));
        }
        assert_eq!(agree(cases), 100);
    }

    #[test]
    fn small_and_mixed_order_keys_and_r_are_judged_as_verify_strict_judges_them() {
        let mut rng = Bytes(11);
        let mut cases = Vec::new();
        for n in 0..160 {
            let torsion = EIGHT_TORSION[n % 8];
            let (a, r) = (rng.scalar(), rng.scalar());
            let message = rng.array::<16>().to_vec();
            // A key with a torsion part: valid under the cofactorless equation
            // only when [k] kills it.
            let (key, sig) = signed(a, a * B + torsion, r, EdwardsPoint::default(), &message);
            cases.push((key, message.clone(), sig));
            // `R` with a torsion part; and both with one, which verifies when
            // -[k] turns the key's into R's.
            let (key, sig) = signed(a, a * B, r, torsion, &message);
            cases.push((key, message.clone(), sig));
            let other = EIGHT_TORSION[(n / 8) % 8];
            let (key, sig) = signed(a, a * B + torsion, r, other, &message);
            cases.push((key, message.clone(), sig));
            // A small-order key (which the cofactorless equation may accept), a
            // small-order key and `R` (which it accepts when [k + 1] kills them),
            // and a small-order `R`.
            let (key, sig) = signed(Scalar::ZERO, torsion, r, EdwardsPoint::default(), &message);
            cases.push((key, message.clone(), sig));
            let (key, sig) = signed(Scalar::ZERO, torsion, Scalar::ZERO, torsion, &message);
            cases.push((key, message.clone(), sig));
            // A small-order `R` with a mixed-order key, which the cofactorless
            // equation accepts when [k - 1] kills the torsion.
            let (key, sig) = signed(a, a * B - torsion, Scalar::ZERO, torsion, &message);
            cases.push((key, message.clone(), sig));
            let mut bytes = sig.to_bytes();
            bytes[..32].copy_from_slice(&torsion.compress().to_bytes());
            cases.push((key, message.clone(), Signature::from_bytes(&bytes)));
            let honest = ed25519_dalek::SigningKey::from_bytes(&rng.array());
            let mut bytes = ed25519_dalek::Signer::sign(&honest, &message).to_bytes();
            bytes[..32].copy_from_slice(&torsion.compress().to_bytes());
            cases.push((
                honest.verifying_key(),
                message,
                Signature::from_bytes(&bytes),
            ));
        }
        // Some mixed-order keys verify (k a multiple of the torsion's order), most do not.
        let verified = agree(cases);
        assert!(verified > 0 && verified < 160, "{verified}");
    }

    #[test]
    fn an_r_encoded_with_y_past_the_field_is_not_canonical() {
        // p = 2^255 - 19: its encoding, little-endian, sign bit clear.
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        let below = |mut e: [u8; 32]| {
            e[0] -= 1;
            e
        };
        assert!(canonical_y(&below(p)));
        assert!(!canonical_y(&p));
        for top in [0xef, 0xff] {
            let mut e = p;
            e[0] = top;
            assert!(!canonical_y(&e));
            e[31] = 0xff;
            assert!(!canonical_y(&e), "the sign bit is not part of y");
        }
        let mut e = p;
        e[5] = 0xfe;
        assert!(canonical_y(&e));
        let mut e = p;
        e[31] = 0x7e;
        assert!(canonical_y(&e), "below p by 2^248");
        // Such an `R` (y = 1 + p, which decompresses) is refused, as verify_strict does.
        let mut one = p;
        one[0] = 0xee;
        assert!(CompressedEdwardsY(one).decompress().is_some());
        let secret = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let mut bytes = ed25519_dalek::Signer::sign(&secret, b"m").to_bytes();
        bytes[..32].copy_from_slice(&one);
        let sig = Signature::from_bytes(&bytes);
        assert!(!verify(&secret.verifying_key(), b"m", &sig));
        assert!(!strict(&secret.verifying_key(), b"m", &sig));
        // y = ±1 with the sign bit set (x = 0, of small order), as `R`; and keys
        // encoded past the field (y = p + 3 decodes to a point of large order).
        let mut cases = Vec::new();
        for y in [1u8, 0xec] {
            let mut r = if y == 1 { [0; 32] } else { p };
            r[0] = y;
            r[31] |= 0x80;
            bytes[..32].copy_from_slice(&r);
            cases.push((
                secret.verifying_key(),
                b"m".to_vec(),
                Signature::from_bytes(&bytes),
            ));
        }
        let mut past = p;
        past[0] = 0xf0;
        let key = VerifyingKey::from_bytes(&past).expect("y = p + 3 decodes");
        assert!(key.to_edwards().is_torsion_free() || !key.to_edwards().is_small_order());
        let honest = ed25519_dalek::Signer::sign(&secret, b"m");
        cases.push((key, b"m".to_vec(), honest));
        assert_eq!(agree(cases), 0);
    }
}
