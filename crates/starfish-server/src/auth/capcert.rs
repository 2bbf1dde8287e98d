//! Capability certificates (§3.2–3.4): shape checks, validity window and signature.

use crate::protocol::author::{parse_public_key, parse_signature, verify};
use crate::protocol::{BASE64, stable_stringify};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Domain tag of the cap-cert signing input.
pub(crate) const CAP_CERT_DOMAIN: &str = "starfish-capcert-v1\n";
/// Allowed clock difference for `nbf`/`exp`, in seconds.
pub(super) const CAP_SKEW_SECS: f64 = 300.0;

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
    /// The cert as received, for the signing input.
    raw: serde_json::Map<String, Value>,
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
    /// `synthesizeRoles`, computed once: a cached certificate costs no allocation per request.
    roles: Arc<[Arc<str>]>,
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

fn string_list(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn is_lower_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl CapCert {
    /// Checks the structure (`assertCapCertWellFormed`), first failure wins.
    ///
    /// # Errors
    /// [`CapCertError::Malformed`] with the reference's code.
    pub fn parse(value: &Value) -> Result<Self, CapCertError> {
        use CapCertError::Malformed;
        let shape = Malformed("malformed-shape");
        let obj = value.as_object().ok_or(shape)?;
        let kind = match obj.get("kind").and_then(Value::as_str) {
            Some("device") => CapKind::Device,
            Some("member") => CapKind::Member,
            Some("audience") => CapKind::Audience,
            _ => return Err(shape),
        };
        let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some(iss), Some(iss_user_id), Some(nonce)) =
            (text("iss"), text("issUserId"), text("nonce"))
        else {
            return Err(shape);
        };
        let sub = if kind == CapKind::Audience {
            if ["sub", "subKem", "subUserId"]
                .iter()
                .any(|k| obj.contains_key(*k))
            {
                return Err(Malformed("audience-has-sub"));
            }
            None
        } else {
            let sub = text("sub").ok_or(shape)?;
            text("subKem").ok_or(shape)?;
            Some(sub)
        };
        let (Some(nbf), Some(exp)) = (is_js_integer(obj.get("nbf")), is_js_integer(obj.get("exp")))
        else {
            return Err(shape);
        };
        let sub_user_id = match obj.get("subUserId") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(shape),
        };
        if BASE64.decode(&nonce).map(|b| b.len()) != Ok(16) {
            return Err(shape);
        }
        let scope = obj.get("scope").and_then(Value::as_object).ok_or(shape)?;
        let ops = scope
            .get("ops")
            .and_then(Value::as_array)
            .ok_or(shape)?
            .iter()
            .map(|op| match op.as_str() {
                Some("read") => Ok(CapOp::Read),
                Some("write") => Ok(CapOp::Write),
                Some("list") => Ok(CapOp::List),
                _ => Err(shape),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let collections = scope
            .get("collections")
            .and_then(string_list)
            .ok_or(shape)?;
        let paths = match scope.get("paths") {
            None => None,
            Some(v) => Some(string_list(v).ok_or(shape)?),
        };
        let aud = match (kind, obj.get("aud")) {
            (_, None) => None,
            (CapKind::Audience, Some(v)) => {
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
                Some(list)
            }
            (_, Some(_)) => return Err(Malformed("non-audience-has-aud")),
        };
        // A key that is not hex makes the reference's hex decoder throw: code-less "malformed".
        if user_id_from_pub_hex(&iss).ok_or(Malformed("malformed"))? != iss_user_id {
            return Err(Malformed("iss-userid-mismatch"));
        }
        if let Some(expected) = &sub_user_id {
            let actual = sub.as_deref().and_then(user_id_from_pub_hex);
            if actual.as_ref() != Some(expected) {
                return Err(Malformed("sub-userid-mismatch"));
            }
        }
        let sig = text("sig").unwrap_or_default();
        let roles = synthesize_roles(kind, &iss, sub.as_deref(), &iss_user_id, &ops, &collections);
        Ok(Self {
            raw: obj.clone(),
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
            roles,
        })
    }

    /// `"starfish-capcert-v1\n" + stableStringify(cert without "sig")`.
    pub fn signing_input(&self) -> String {
        let mut unsigned = self.raw.clone();
        unsigned.remove("sig");
        format!(
            "{CAP_CERT_DOMAIN}{}",
            stable_stringify(&Value::Object(unsigned))
        )
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
        let (Some(key), Some(sig)) = (parse_public_key(&self.iss), parse_signature(&self.sig))
        else {
            return Err(CapCertError::BadSignature);
        };
        if verify(&key, self.signing_input().as_bytes(), &sig) {
            Ok(())
        } else {
            Err(CapCertError::BadSignature)
        }
    }

    /// True for a self-signed device cap (`iss == sub`): the root device.
    pub fn is_root_device(&self) -> bool {
        self.kind == CapKind::Device && self.sub.as_deref() == Some(self.iss.as_str())
    }

    /// Roles the cap grants regardless of collection (`synthesizeRoles`).
    pub fn roles(&self) -> &Arc<[Arc<str>]> {
        &self.roles
    }
}

/// `cap:<op>:<collection>` per op and collection, `delegated:<issUserId>:<collection>`
/// for member and audience caps, and `device:root` for a self-signed device cap.
fn synthesize_roles(
    kind: CapKind,
    iss: &str,
    sub: Option<&str>,
    iss_user_id: &str,
    ops: &[CapOp],
    collections: &[String],
) -> Arc<[Arc<str>]> {
    let mut roles = Vec::new();
    for op in ops {
        for c in collections {
            roles.push(format!("cap:{}:{c}", op.as_str()));
        }
    }
    if matches!(kind, CapKind::Member | CapKind::Audience) {
        for c in collections {
            roles.push(format!("delegated:{iss_user_id}:{c}"));
        }
    }
    if kind == CapKind::Device && sub == Some(iss) {
        roles.push(crate::access::ROLE_DEVICE_ROOT.to_owned());
    }
    roles.sort();
    roles.dedup();
    roles.into_iter().map(Arc::from).collect()
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
