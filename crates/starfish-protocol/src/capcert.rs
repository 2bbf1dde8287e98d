//! Capability certificates (§3.2–3.4): shape checks, validity window and signature.

use crate::BASE64;
use crate::author::{parse_public_key, parse_signature, verify};
use crate::canonical::write_stable_without;
use base64::Engine as _;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Domain tag of the cap-cert signing input.
pub const CAP_CERT_DOMAIN: &str = "starfish-capcert-v1\n";
/// Allowed clock difference for `nbf`/`exp`, in seconds.
pub const CAP_SKEW_SECS: f64 = 300.0;

/// What a cap-cert grants to (its `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapKind {
    /// A device of the issuer; identity = `issUserId`.
    Device,
    /// A member grant; identity = `subUserId`. Needs an extension validator.
    Member,
    /// A bearer-like grant to a presenter key. Needs an extension validator.
    Audience,
}

impl CapKind {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Device => "device",
            Self::Member => "member",
            Self::Audience => "audience",
        }
    }
}

/// An operation a cap may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapOp {
    /// Pull.
    Read,
    /// Push.
    Write,
    /// List.
    List,
}

impl CapOp {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::List => "list",
        }
    }
}

/// Why a cap-cert was refused; [`CapCertError::reason`] is the reference's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CapCertError {
    /// A structural rule failed; the code says which.
    #[error("cap-cert {0}")]
    Malformed(&'static str),
    /// `exp <= nbf`.
    #[error("cap-cert inverted-window")]
    InvertedWindow,
    /// Before `nbf - 300 s`.
    #[error("cap-cert not-yet-valid")]
    NotYetValid,
    /// After `exp + 300 s`.
    #[error("cap-cert expired")]
    Expired,
    /// The issuer's signature does not verify.
    #[error("cap-cert bad-signature")]
    BadSignature,
}

impl CapCertError {
    /// The reference's reason code (`expired`, `iss-userid-mismatch`, ...).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(code) => code,
            Self::InvertedWindow => "inverted-window",
            Self::NotYetValid => "not-yet-valid",
            Self::Expired => "expired",
            Self::BadSignature => "bad-signature",
        }
    }
}

/// A cap-cert whose shape has been checked (not yet its window or signature).
#[derive(Debug, Clone, PartialEq)]
pub struct CapCert {
    /// The signing input ([`Self::signing_input`]), made from the cert as received;
    /// `None` once forgotten ([`Self::forget_signing_input`]).
    signed: Option<String>,
    /// `kind`.
    pub kind: CapKind,
    /// Issuer public key (hex).
    pub iss: String,
    /// `userId(iss)`.
    pub iss_user_id: String,
    /// Subject public key (hex); absent for audience caps.
    pub sub: Option<String>,
    /// `userId(sub)` when present.
    pub sub_user_id: Option<String>,
    /// The cap's own nonce (its revocation key).
    pub nonce: String,
    /// Granted operations.
    pub ops: Vec<CapOp>,
    /// Granted collections (`*` = all).
    pub collections: Vec<String>,
    /// Path globs, if restricted.
    pub paths: Option<Vec<String>>,
    /// Audience allow-list (audience caps only).
    pub aud: Option<Vec<String>>,
    /// Not-before, unix seconds.
    pub nbf: f64,
    /// Expiry, unix seconds.
    pub exp: f64,
    sig: String,
}

/// `userId` of a hex Ed25519 public key: the first 16 bytes of its SHA-256, as hex.
/// `None` when `pub_hex` is not hex.
pub fn user_id_from_pub_hex(pub_hex: &str) -> Option<String> {
    let bytes = hex::decode(pub_hex).ok()?;
    Some(hex::encode(&Sha256::digest(bytes)[..16]))
}

fn is_js_integer(v: Option<&Value>) -> Option<f64> {
    let n = v?.as_f64()?;
    (n.is_finite() && n.fract() == 0.0).then_some(n)
}

fn string_list_of(list: &[Value]) -> Option<Vec<String>> {
    list.iter().map(|s| s.as_str().map(str::to_owned)).collect()
}

fn is_lower_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The code of every structural failure without a more precise one.
const SHAPE: CapCertError = CapCertError::Malformed("malformed-shape");

/// `obj[key]` when it is a string.
fn text(obj: &Map<String, Value>, key: &str) -> Option<String> {
    obj.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `kind` is one of the three kinds.
fn parse_kind(obj: &Map<String, Value>) -> Result<CapKind, CapCertError> {
    match obj.get("kind").and_then(Value::as_str) {
        Some("device") => Ok(CapKind::Device),
        Some("member") => Ok(CapKind::Member),
        Some("audience") => Ok(CapKind::Audience),
        _ => Err(SHAPE),
    }
}

/// `sub`: absent (with `subKem` and `subUserId`) for audience caps, else a string
/// with a string `subKem`.
fn parse_sub(obj: &Map<String, Value>, kind: CapKind) -> Result<Option<String>, CapCertError> {
    if kind == CapKind::Audience {
        if ["sub", "subKem", "subUserId"]
            .iter()
            .any(|k| obj.contains_key(*k))
        {
            return Err(CapCertError::Malformed("audience-has-sub"));
        }
        return Ok(None);
    }
    let sub = text(obj, "sub").ok_or(SHAPE)?;
    text(obj, "subKem").ok_or(SHAPE)?;
    Ok(Some(sub))
}

/// `nbf` and `exp` are integers.
fn parse_window(obj: &Map<String, Value>) -> Result<(f64, f64), CapCertError> {
    match (is_js_integer(obj.get("nbf")), is_js_integer(obj.get("exp"))) {
        (Some(nbf), Some(exp)) => Ok((nbf, exp)),
        _ => Err(SHAPE),
    }
}

/// `subUserId` is absent or a string.
fn parse_sub_user_id(obj: &Map<String, Value>) -> Result<Option<String>, CapCertError> {
    match obj.get("subUserId") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(SHAPE),
    }
}

/// `nonce` is base64 of 16 bytes.
fn check_nonce(nonce: &str) -> Result<(), CapCertError> {
    if BASE64.decode(nonce).map(|b| b.len()) == Ok(16) {
        Ok(())
    } else {
        Err(SHAPE)
    }
}

/// A cap-cert's `scope`, checked.
struct Scope {
    ops: Vec<CapOp>,
    collections: Vec<String>,
    paths: Option<Vec<String>>,
}

/// Most entries in `scope.collections` and in `scope.paths`.
pub const MAX_SCOPE_ENTRIES: usize = 64;
/// Longest entry in `scope.collections` or `scope.paths`, in bytes.
pub const MAX_SCOPE_ENTRY_BYTES: usize = 512;
/// A scope array that is too long, has an entry that is too long, or repeats one.
const SCOPE_TOO_LARGE: CapCertError = CapCertError::Malformed("scope-too-large");

/// `v` as an array of at most `max` entries: counted before anything is built.
fn bounded_array(v: Option<&Value>, max: usize) -> Result<&Vec<Value>, CapCertError> {
    let list = v.and_then(Value::as_array).ok_or(SHAPE)?;
    if list.len() > max {
        return Err(SCOPE_TOO_LARGE);
    }
    Ok(list)
}

/// A list of distinct strings of bounded length.
fn scope_strings(v: Option<&Value>) -> Result<Vec<String>, CapCertError> {
    let list = bounded_array(v, MAX_SCOPE_ENTRIES)?;
    let strings = string_list_of(list).ok_or(SHAPE)?;
    if strings.iter().any(|s| s.len() > MAX_SCOPE_ENTRY_BYTES) {
        return Err(SCOPE_TOO_LARGE);
    }
    let distinct: std::collections::HashSet<&String> = strings.iter().collect();
    if distinct.len() != strings.len() {
        return Err(SCOPE_TOO_LARGE);
    }
    Ok(strings)
}

/// `scope` is an object with known, distinct `ops`, bounded string `collections` and
/// optional bounded string `paths`.
fn parse_scope(obj: &Map<String, Value>) -> Result<Scope, CapCertError> {
    let scope = obj.get("scope").and_then(Value::as_object).ok_or(SHAPE)?;
    let ops = bounded_array(scope.get("ops"), 3)?
        .iter()
        .map(|op| match op.as_str() {
            Some("read") => Ok(CapOp::Read),
            Some("write") => Ok(CapOp::Write),
            Some("list") => Ok(CapOp::List),
            _ => Err(SHAPE),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if (1..ops.len()).any(|i| ops[..i].contains(&ops[i])) {
        return Err(SCOPE_TOO_LARGE);
    }
    let collections = scope_strings(scope.get("collections"))?;
    let paths = match scope.get("paths") {
        None => None,
        Some(v) => Some(scope_strings(Some(v))?),
    };
    Ok(Scope {
        ops,
        collections,
        paths,
    })
}

/// `aud` is absent, or set only on audience caps.
fn parse_aud(kind: CapKind, aud: Option<&Value>) -> Result<Option<Vec<String>>, CapCertError> {
    match (kind, aud) {
        (_, None) => Ok(None),
        (CapKind::Audience, Some(v)) => audience_list(v).map(Some),
        (_, Some(_)) => Err(CapCertError::Malformed("non-audience-has-aud")),
    }
}

/// An audience cap's `aud`: 1 to 64 distinct lowercase hex keys.
fn audience_list(v: &Value) -> Result<Vec<String>, CapCertError> {
    use CapCertError::Malformed;
    let list = v.as_array().ok_or(Malformed("audience-aud-bad-entry"))?;
    if list.is_empty() {
        return Err(Malformed("audience-empty-aud"));
    }
    if list.len() > 64 {
        return Err(Malformed("audience-aud-too-large"));
    }
    let list: Vec<String> = list
        .iter()
        .map(|e| e.as_str().filter(|s| is_lower_hex64(s)).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or(Malformed("audience-aud-bad-entry"))?;
    let unique: std::collections::HashSet<&String> = list.iter().collect();
    if unique.len() != list.len() {
        return Err(Malformed("audience-aud-dup"));
    }
    Ok(list)
}

/// `issUserId` is the user id of `iss`, and `subUserId`, when set, that of `sub`.
fn check_user_ids(
    iss: &str,
    iss_user_id: &str,
    sub: Option<&str>,
    sub_user_id: Option<&String>,
) -> Result<(), CapCertError> {
    use CapCertError::Malformed;
    // A key that is not hex makes the reference's hex decoder throw: code-less "malformed".
    if user_id_from_pub_hex(iss).ok_or(Malformed("malformed"))? != iss_user_id {
        return Err(Malformed("iss-userid-mismatch"));
    }
    if let Some(expected) = sub_user_id {
        let actual = sub.and_then(user_id_from_pub_hex);
        if actual.as_ref() != Some(expected) {
            return Err(Malformed("sub-userid-mismatch"));
        }
    }
    Ok(())
}

impl CapCert {
    /// Checks the structure (`assertCapCertWellFormed`), first failure wins.
    ///
    /// # Errors
    /// [`CapCertError::Malformed`] with the reference's code.
    pub fn parse(value: &Value) -> Result<Self, CapCertError> {
        let obj = value.as_object().ok_or(SHAPE)?;
        let kind = parse_kind(obj)?;
        let (Some(iss), Some(iss_user_id), Some(nonce)) =
            (text(obj, "iss"), text(obj, "issUserId"), text(obj, "nonce"))
        else {
            return Err(SHAPE);
        };
        let sub = parse_sub(obj, kind)?;
        let (nbf, exp) = parse_window(obj)?;
        let sub_user_id = parse_sub_user_id(obj)?;
        check_nonce(&nonce)?;
        let Scope {
            ops,
            collections,
            paths,
        } = parse_scope(obj)?;
        let aud = parse_aud(kind, obj.get("aud"))?;
        check_user_ids(&iss, &iss_user_id, sub.as_deref(), sub_user_id.as_ref())?;
        let sig = text(obj, "sig").unwrap_or_default();
        let mut signed = String::from(CAP_CERT_DOMAIN);
        write_stable_without(&mut signed, obj, "sig");
        Ok(Self {
            signed: Some(signed),
            kind,
            iss,
            iss_user_id,
            sub,
            sub_user_id,
            nonce,
            ops,
            collections,
            paths,
            aud,
            nbf,
            exp,
            sig,
        })
    }

    /// `"starfish-capcert-v1\n" + stableStringify(cert without "sig")`: `None` once
    /// forgotten.
    pub fn signing_input(&self) -> Option<&str> {
        self.signed.as_deref()
    }

    /// Drops the signing input (most of what a certificate holds), for a certificate
    /// kept after its signature verified: verifying it again then fails, whatever
    /// its signature.
    pub fn forget_signing_input(&mut self) {
        self.signed = None;
    }

    /// The validity window at `now_secs`, with the 300 s skew.
    ///
    /// # Errors
    /// Inverted window, not yet valid, or expired.
    pub fn check_window(&self, now_secs: f64) -> Result<(), CapCertError> {
        if self.exp <= self.nbf {
            return Err(CapCertError::InvertedWindow);
        }
        if now_secs < self.nbf - CAP_SKEW_SECS {
            return Err(CapCertError::NotYetValid);
        }
        if now_secs > self.exp + CAP_SKEW_SECS {
            return Err(CapCertError::Expired);
        }
        Ok(())
    }

    /// The issuer's signature over [`Self::signing_input`].
    ///
    /// # Errors
    /// [`CapCertError::BadSignature`].
    pub fn check_signature(&self) -> Result<(), CapCertError> {
        self.verified_issuer_key().map(drop)
    }

    /// [`Self::check_signature`], giving the issuer's key it verified with (a
    /// self-signed certificate's subject key too, decoded once).
    pub fn verified_issuer_key(&self) -> Result<ed25519_dalek::VerifyingKey, CapCertError> {
        let (Some(key), Some(sig), Some(input)) = (
            parse_public_key(&self.iss),
            parse_signature(&self.sig),
            self.signing_input(),
        ) else {
            return Err(CapCertError::BadSignature);
        };
        if verify(&key, input.as_bytes(), &sig) {
            Ok(key)
        } else {
            Err(CapCertError::BadSignature)
        }
    }

    /// True for a self-signed device cap (`iss == sub`): the root device.
    pub fn is_root_device(&self) -> bool {
        self.kind == CapKind::Device && self.sub.as_deref() == Some(self.iss.as_str())
    }

    /// The roles the reference synthesises from a verified certificate
    /// (`synthesizeRoles`): `cap:<op>:<collection>` per op and collection, and
    /// `delegated:<issUserId>:<collection>` for member and audience caps; sorted,
    /// without duplicates.
    pub fn roles(&self) -> Vec<String> {
        let mut roles = Vec::new();
        for op in &self.ops {
            for c in &self.collections {
                roles.push(format!("cap:{}:{c}", op.as_str()));
            }
        }
        if matches!(self.kind, CapKind::Member | CapKind::Audience) {
            for c in &self.collections {
                roles.push(format!("delegated:{}:{c}", self.iss_user_id));
            }
        }
        roles.sort();
        roles.dedup();
        roles
    }

    /// Bytes this certificate holds, roughly: its strings with an overhead of 24
    /// each, its signing input, and the struct. For a cache's byte bound.
    pub fn held_bytes(&self) -> usize {
        let text = |s: &str| s.len() + 24;
        let texts = |list: &[String]| list.iter().map(|s| text(s)).sum::<usize>() + 24;
        [&self.iss, &self.iss_user_id, &self.nonce, &self.sig]
            .into_iter()
            .map(|s| text(s))
            .sum::<usize>()
            + self.sub.as_deref().map_or(0, text)
            + self.sub_user_id.as_deref().map_or(0, text)
            + texts(&self.collections)
            + self.paths.as_deref().map_or(0, texts)
            + self.aud.as_deref().map_or(0, texts)
            + self.ops.len() * 8
            + self.signed.as_ref().map_or(0, String::capacity)
            + std::mem::size_of::<Self>()
    }
}

/// Full verification (`verifyCapCert`): shape, window, then signature.
///
/// # Errors
/// The first failing check.
pub fn verify_cap_cert(value: &Value, now_secs: f64) -> Result<CapCert, CapCertError> {
    let cert = CapCert::parse(value)?;
    cert.check_window(now_secs)?;
    cert.check_signature()?;
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    const NOW: u64 = 1_767_225_600;

    /// The signing input covers every field but `sig`, those the parser does not
    /// read included: a certificate with a field added after signing, or its
    /// signature moved, fails.
    #[test]
    fn the_signature_covers_every_field_but_sig() {
        let id = Identity::generate(NOW).unwrap();
        assert!(verify_cap_cert(id.cert(), NOW as f64).is_ok());
        let mut added = id.cert().clone();
        added["extra"] = Value::from("added after signing");
        assert!(matches!(
            verify_cap_cert(&added, NOW as f64),
            Err(CapCertError::BadSignature)
        ));
        let cert = CapCert::parse(id.cert()).unwrap();
        let input = cert.signing_input().unwrap();
        assert!(input.starts_with(CAP_CERT_DOMAIN));
        assert!(!input.contains(&cert.sig), "sig is not signed");
    }

    /// A certificate that forgot its signing input does not verify over an empty
    /// one: not even with a signature its issuer made over nothing.
    #[test]
    fn a_certificate_that_forgot_does_not_verify_over_nothing() {
        use ed25519_dalek::Signer as _;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let iss = hex::encode(key.verifying_key().as_bytes());
        let mut value = serde_json::json!({
            "v": 1, "kind": "device", "iss": iss,
            "issUserId": user_id_from_pub_hex(&iss), "sub": iss, "subKem": "00".repeat(32),
            "scope": {"ops": ["read"], "collections": ["*"]},
            "nbf": NOW - 60, "exp": NOW + 3600, "nonce": BASE64.encode([7u8; 16]),
        });
        value["sig"] = Value::from(BASE64.encode(key.sign(b"").to_bytes()));
        let mut cert = CapCert::parse(&value).unwrap();
        assert_eq!(cert.check_signature(), Err(CapCertError::BadSignature));
        cert.forget_signing_input();
        assert_eq!(cert.check_signature(), Err(CapCertError::BadSignature));
    }

    /// A certificate kept after it verified forgets its signing input: it then holds
    /// well under half as much, and cannot be verified again.
    #[test]
    fn a_certificate_that_forgot_its_signing_input_holds_less_and_no_longer_verifies() {
        let id = Identity::generate(NOW).unwrap();
        let mut cert = CapCert::parse(id.cert()).unwrap();
        let whole = cert.held_bytes();
        cert.forget_signing_input();
        assert!(
            cert.held_bytes() * 10 < whole * 7,
            "{} of {whole}",
            cert.held_bytes()
        );
        assert_eq!(cert.check_signature(), Err(CapCertError::BadSignature));
    }
}
