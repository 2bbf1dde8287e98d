//! What a client needs to call a server: a root key (the identity), a device key
//! with its device certificate (§3.2) and the KEM key the certificate names, and
//! the headers of a signed request (§3.5).
//!
//! ```
//! use starfish_protocol::identity::Identity;
//! use starfish_protocol::signing::SignedRequest;
//!
//! let identity = Identity::generate(1_767_225_600)?;
//! let request = SignedRequest {
//!     method: "GET",
//!     path_and_query: "/pull/notes",
//!     body: b"",
//!     host: "127.0.0.1:8080",
//!     ts: 1_767_225_600_000,
//!     nonce: &starfish_protocol::identity::fresh_nonce()?,
//! };
//! let headers = identity.sign(&request);
//! assert!(headers.authorization.starts_with("Cap "));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::capcert::{CapCert, CapCertError, CapKind, CapOp, user_id_from_pub_hex};
use crate::{BASE64, stable_stringify};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde_json::{Map, Value, json};

/// How long a device certificate minted here is valid: 30 days, as the reference's
/// identities package mints them.
pub const DEVICE_CAP_TTL_SECS: u64 = 30 * 86_400;

/// A certificate's `nbf` is this many seconds before it was minted, so a server
/// whose clock is a little behind accepts it at once.
const NBF_MARGIN_SECS: u64 = 60;

/// Why an identity could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The system's random source failed.
    #[error("no random bytes: {0}")]
    Random(getrandom::Error),
    /// The identity file is not what [`Identity::to_json`] writes.
    #[error("not a starfish identity: {0}")]
    Malformed(&'static str),
    /// The stored certificate does not verify or is not for these keys.
    #[error("the identity's certificate is invalid: {0}")]
    Cert(#[from] CapCertError),
}

/// A capability to issue: its kind, what it grants, and when.
#[derive(Debug, Clone)]
pub struct CapGrant {
    /// `kind`.
    pub kind: CapKind,
    /// `scope.ops`.
    pub ops: Vec<CapOp>,
    /// `scope.collections` (`*` = all).
    pub collections: Vec<String>,
    /// `scope.paths` globs (`**` = all).
    pub paths: Vec<String>,
    /// Not-before, unix seconds.
    pub nbf: u64,
    /// Expiry, unix seconds.
    pub exp: u64,
}

impl CapGrant {
    /// What the identities package grants a device: every operation on every
    /// collection and path, for [`DEVICE_CAP_TTL_SECS`] from `now_secs`.
    pub fn device(now_secs: u64) -> Self {
        Self {
            kind: CapKind::Device,
            ops: vec![CapOp::Read, CapOp::List, CapOp::Write],
            collections: vec!["*".into()],
            paths: vec!["**".into()],
            nbf: now_secs.saturating_sub(NBF_MARGIN_SECS),
            exp: now_secs + DEVICE_CAP_TTL_SECS,
        }
    }
}

/// Issues a certificate: `issuer` grants `grant` to the key `subject` (whose KEM
/// public key is `subject_kem`), with the revocation nonce `nonce`; signed over
/// `"starfish-capcert-v1\n" + stableStringify(cert without sig)` (§3.3).
pub fn issue_cap(
    issuer: &SigningKey,
    subject: &VerifyingKey,
    subject_kem: &[u8; 32],
    grant: &CapGrant,
    nonce: [u8; 16],
) -> Value {
    let iss = hex::encode(issuer.verifying_key().as_bytes());
    let sub = hex::encode(subject.as_bytes());
    let ops: Vec<&str> = grant.ops.iter().map(|op| op.as_str()).collect();
    let mut cert = json!({
        "v": 1,
        "kind": grant.kind.as_str(),
        "iss": iss,
        "issUserId": user_id_from_pub_hex(&iss),
        "sub": sub,
        "subKem": hex::encode(subject_kem),
        "subUserId": user_id_from_pub_hex(&sub),
        "scope": {"ops": ops, "collections": grant.collections, "paths": grant.paths},
        "nbf": grant.nbf,
        "exp": grant.exp,
        "nonce": BASE64.encode(nonce),
    });
    sign_cap(issuer, &mut cert);
    cert
}

/// Issues an `audience` certificate (a public link): `issuer` grants `grant` to
/// whoever redeems it with a key of their own, or only to the keys in `aud` (hex
/// Ed25519 public keys) when given. It names no subject (§3.2).
pub fn issue_audience_cap(
    issuer: &SigningKey,
    grant: &CapGrant,
    aud: Option<&[String]>,
    nonce: [u8; 16],
) -> Value {
    let iss = hex::encode(issuer.verifying_key().as_bytes());
    let ops: Vec<&str> = grant.ops.iter().map(|op| op.as_str()).collect();
    let mut cert = json!({
        "v": 1,
        "kind": CapKind::Audience.as_str(),
        "iss": iss,
        "issUserId": user_id_from_pub_hex(&iss),
        "scope": {"ops": ops, "collections": grant.collections, "paths": grant.paths},
        "nbf": grant.nbf,
        "exp": grant.exp,
        "nonce": BASE64.encode(nonce),
    });
    if let Some(aud) = aud {
        cert["aud"] = json!(aud);
    }
    sign_cap(issuer, &mut cert);
    cert
}

/// Adds the issuer's signature over the certificate's signing input (§3.3).
fn sign_cap(issuer: &SigningKey, cert: &mut Value) {
    let input = format!(
        "{}{}",
        crate::capcert::CAP_CERT_DOMAIN,
        stable_stringify(cert)
    );
    cert["sig"] = json!(BASE64.encode(issuer.sign(input.as_bytes()).to_bytes()));
}

/// The headers that sign `request` with `key` under the certificate `cert`: the
/// key is the certificate's subject, or for an audience certificate the
/// redeemer's own key (then send `X-Starfish-Pub` with its hex too).
pub fn sign_request(
    key: &SigningKey,
    cert: &Value,
    request: &crate::signing::SignedRequest<'_>,
) -> SignedHeaders {
    let signature = key.sign(request.signing_input().as_bytes());
    SignedHeaders {
        authorization: format!("Cap {}", BASE64.encode(stable_stringify(cert).as_bytes())),
        sig: BASE64.encode(signature.to_bytes()),
        ts: request.ts.to_string(),
        nonce: request.nonce.to_owned(),
    }
}

/// A fresh request nonce: base64 of 16 random bytes.
///
/// # Errors
/// [`IdentityError::Random`] when the system's random source fails.
pub fn fresh_nonce() -> Result<String, IdentityError> {
    Ok(BASE64.encode(random::<16>()?))
}

fn random<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(IdentityError::Random)?;
    Ok(bytes)
}

/// The headers of one signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Authorization`: `Cap <base64(stableStringify(cert))>`.
    pub authorization: String,
    /// `X-Starfish-Sig`: the device key's signature over the request.
    pub sig: String,
    /// `X-Starfish-Ts`: the request's time, ms since the epoch.
    pub ts: String,
    /// `X-Starfish-Nonce`.
    pub nonce: String,
}

impl SignedHeaders {
    /// The headers as (name, value) pairs, names in lower case.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            ("authorization", &self.authorization),
            ("x-starfish-sig", &self.sig),
            ("x-starfish-ts", &self.ts),
            ("x-starfish-nonce", &self.nonce),
        ]
    }
}

/// A user's root key, one device key with its KEM key, and the device certificate
/// the root issued to it.
#[derive(Clone)]
pub struct Identity {
    root: SigningKey,
    device: SigningKey,
    kem_secret: [u8; 32],
    cert: Value,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user_id", &self.user_id())
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// New random keys, and a device certificate valid for 30 days from `now_secs`.
    ///
    /// # Errors
    /// [`IdentityError::Random`] when the system's random source fails.
    pub fn generate(now_secs: u64) -> Result<Self, IdentityError> {
        let mut identity = Self {
            root: SigningKey::from_bytes(&random()?),
            device: SigningKey::from_bytes(&random()?),
            kem_secret: random()?,
            cert: Value::Null,
        };
        identity.reissue(now_secs)?;
        Ok(identity)
    }

    /// A new device certificate, valid for 30 days from `now_secs`, replaces the one
    /// held (for an identity whose certificate has expired).
    ///
    /// # Errors
    /// [`IdentityError::Random`] when the system's random source fails.
    pub fn reissue(&mut self, now_secs: u64) -> Result<(), IdentityError> {
        self.cert = issue_cap(
            &self.root,
            &self.device.verifying_key(),
            &self.kem_public(),
            &CapGrant::device(now_secs),
            random()?,
        );
        Ok(())
    }

    /// The user id: the first 16 bytes of SHA-256 of the root public key, in hex.
    pub fn user_id(&self) -> String {
        user_id_from_pub_hex(&hex::encode(self.root.verifying_key().as_bytes())).unwrap_or_default()
    }

    /// The device certificate.
    pub fn cert(&self) -> &Value {
        &self.cert
    }

    /// When the device certificate expires, unix seconds.
    pub fn cert_expiry(&self) -> u64 {
        self.cert["exp"].as_u64().unwrap_or(0)
    }

    fn kem_public(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.kem_secret)).to_bytes()
    }

    /// The headers that sign `request` with the device key under its certificate.
    pub fn sign(&self, request: &crate::signing::SignedRequest<'_>) -> SignedHeaders {
        sign_request(&self.device, &self.cert, request)
    }

    /// An author proof by the device key over `data` at `document_key` (§5.4 with
    /// [`DOC_AUTHOR_DOMAIN`](crate::author::DOC_AUTHOR_DOMAIN), §5.6 with
    /// [`APPEND_AUTHOR_DOMAIN`](crate::author::APPEND_AUTHOR_DOMAIN)): the
    /// `authorPubkey` (hex) and `authorSignature` (base64) a push or append carries.
    pub fn author_proof(&self, domain: &str, data: &Value, document_key: &str) -> (String, String) {
        let input = crate::author::author_signing_input(domain, data, document_key);
        (
            hex::encode(self.device.verifying_key().as_bytes()),
            BASE64.encode(self.device.sign(input.as_bytes()).to_bytes()),
        )
    }

    /// The identity as a JSON object: the three secret keys in hex and the
    /// certificate. Whoever reads it can act as this user: keep it private.
    pub fn to_json(&self) -> Value {
        json!({
            "v": 1,
            "userId": self.user_id(),
            "rootKey": hex::encode(self.root.to_bytes()),
            "deviceKey": hex::encode(self.device.to_bytes()),
            "kemKey": hex::encode(self.kem_secret),
            "cert": self.cert,
        })
    }

    /// Reads what [`Self::to_json`] wrote, and checks that the certificate is the
    /// root's, for the device key, and signed (not its validity window: an expired
    /// one can be [reissued](Self::reissue)).
    ///
    /// # Errors
    /// [`IdentityError::Malformed`] or [`IdentityError::Cert`].
    pub fn from_json(value: &Value) -> Result<Self, IdentityError> {
        let obj = value
            .as_object()
            .ok_or(IdentityError::Malformed("not an object"))?;
        let identity = Self {
            root: SigningKey::from_bytes(&secret(obj, "rootKey")?),
            device: SigningKey::from_bytes(&secret(obj, "deviceKey")?),
            kem_secret: secret(obj, "kemKey")?,
            cert: obj
                .get("cert")
                .cloned()
                .ok_or(IdentityError::Malformed("no cert"))?,
        };
        let cert = CapCert::parse(&identity.cert)?;
        cert.check_signature()?;
        let device = hex::encode(identity.device.verifying_key().as_bytes());
        let root = hex::encode(identity.root.verifying_key().as_bytes());
        if cert.iss != root || cert.sub.as_deref() != Some(device.as_str()) {
            return Err(IdentityError::Malformed("cert is not for these keys"));
        }
        Ok(identity)
    }
}

fn secret(obj: &Map<String, Value>, name: &'static str) -> Result<[u8; 32], IdentityError> {
    let text = obj
        .get(name)
        .and_then(Value::as_str)
        .ok_or(IdentityError::Malformed(name))?;
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| IdentityError::Malformed(name))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capcert::verify_cap_cert;
    use crate::signing::SignedRequest;

    const NOW: u64 = 1_767_225_600;

    #[test]
    fn a_new_identity_holds_a_device_cap_the_protocol_accepts() {
        let id = Identity::generate(NOW).unwrap();
        let cert = verify_cap_cert(id.cert(), NOW as f64).unwrap();
        assert_eq!(cert.kind, CapKind::Device);
        assert_eq!(cert.iss_user_id, id.user_id());
        assert!(!cert.is_root_device(), "the device key is not the root key");
        assert_eq!(cert.roles(), ["cap:list:*", "cap:read:*", "cap:write:*"]);
        assert_eq!(id.cert_expiry(), NOW + DEVICE_CAP_TTL_SECS);
        assert!(verify_cap_cert(id.cert(), (NOW + DEVICE_CAP_TTL_SECS + 301) as f64).is_err());
    }

    #[test]
    fn an_identity_reads_back_what_it_wrote_and_refuses_a_swapped_key() {
        let id = Identity::generate(NOW).unwrap();
        let back = Identity::from_json(&id.to_json()).unwrap();
        assert_eq!(back.to_json(), id.to_json());
        let other = Identity::generate(NOW).unwrap();
        let mut swapped = id.to_json();
        swapped["deviceKey"] = other.to_json()["deviceKey"].clone();
        assert!(matches!(
            Identity::from_json(&swapped),
            Err(IdentityError::Malformed(_))
        ));
        let mut forged = id.to_json();
        forged["cert"]["exp"] = json!(NOW + 10 * DEVICE_CAP_TTL_SECS);
        assert!(matches!(
            Identity::from_json(&forged),
            Err(IdentityError::Cert(CapCertError::BadSignature))
        ));
    }

    #[test]
    fn a_signed_request_verifies_with_the_device_key_and_only_for_what_was_signed() {
        let id = Identity::generate(NOW).unwrap();
        let request = SignedRequest {
            method: "POST",
            path_and_query: "/push/notes/a",
            body: b"{\"data\":{}}",
            host: "127.0.0.1:8080",
            ts: 1_767_225_600_123,
            nonce: &fresh_nonce().unwrap(),
        };
        let headers = id.sign(&request);
        let sig = crate::author::parse_signature(&headers.sig).unwrap();
        let device = CapCert::parse(id.cert()).unwrap().sub.unwrap();
        let key = crate::author::parse_public_key(&device).unwrap();
        assert!(crate::author::verify(
            &key,
            request.signing_input().as_bytes(),
            &sig
        ));
        let other_path = SignedRequest {
            path_and_query: "/push/notes/b",
            ..request
        };
        assert!(!crate::author::verify(
            &key,
            other_path.signing_input().as_bytes(),
            &sig
        ));
        let cert_json = BASE64
            .decode(headers.authorization.strip_prefix("Cap ").unwrap())
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&cert_json).unwrap(),
            *id.cert()
        );
        assert_eq!(headers.ts, "1767225600123");
    }

    #[test]
    fn an_author_proof_verifies_for_its_data_and_key_only() {
        use crate::author::{APPEND_AUTHOR_DOMAIN, DOC_AUTHOR_DOMAIN, verify_author};
        let id = Identity::generate(NOW).unwrap();
        let item = json!({"msg": "hi"});
        let (key, sig) = id.author_proof(APPEND_AUTHOR_DOMAIN, &item, "logs/a");
        assert!(verify_author(
            APPEND_AUTHOR_DOMAIN,
            &item,
            "logs/a",
            &key,
            &sig
        ));
        assert!(!verify_author(
            APPEND_AUTHOR_DOMAIN,
            &item,
            "logs/b",
            &key,
            &sig
        ));
        assert!(!verify_author(
            DOC_AUTHOR_DOMAIN,
            &item,
            "logs/a",
            &key,
            &sig
        ));
        assert!(!verify_author(
            APPEND_AUTHOR_DOMAIN,
            &json!({"msg": "ho"}),
            "logs/a",
            &key,
            &sig
        ));
    }

    #[test]
    fn nonces_are_sixteen_fresh_bytes() {
        let (a, b) = (fresh_nonce().unwrap(), fresh_nonce().unwrap());
        assert_ne!(a, b);
        assert_eq!(BASE64.decode(a).unwrap().len(), 16);
    }
}
