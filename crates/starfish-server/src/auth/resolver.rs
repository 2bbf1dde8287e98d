//! The [`Authenticator`] trait and the default cap-cert implementation (§3.7).

use super::nonce::{NonceCache, NonceCacheLimits};
use super::revocation::{InMemoryRevocationStore, RevocationStore};
use super::verified::VerifiedCert;
use super::{Caller, CapGrant, Clock};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use base64::Engine as _;
use futures::future::BoxFuture;
use starfish_protocol::BASE64;
use starfish_protocol::author::{parse_public_key, parse_signature, verify};
use starfish_protocol::capcert::user_id_from_pub_hex;
use starfish_protocol::capcert::{CAP_SKEW_SECS, CapCert, CapKind};
use starfish_protocol::cert_json::{CertJsonError, read_cert_json};
use starfish_protocol::signing::{REQUEST_SKEW_MS, SignedRequest, parse_ts_header};
use std::borrow::Cow;
use std::sync::Arc;

/// Why authentication failed. Only the status reaches the client; the reason is
/// logged at debug level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// `401 {"error":"Unauthorized"}`.
    #[error("unauthorized: {0}")]
    Unauthorized(Cow<'static, str>),
    /// `403 {"error":"Forbidden"}`.
    #[error("forbidden: {0}")]
    Forbidden(Cow<'static, str>),
    /// `413 {"error":<message>}`: the pre-auth body gate.
    #[error("{0}")]
    BodyTooLarge(&'static str),
    /// `503 {"error":"Replay cache unavailable"}`: the shared replay cache did not
    /// answer, so the request cannot be known not to be a replay.
    #[error("replay cache unavailable: {0}")]
    ReplayUnavailable(Cow<'static, str>),
}

/// The body a signature covers, as the router prepared it.
#[derive(Debug, Clone, Copy)]
pub enum SignedBody<'a> {
    /// Reads and blob uploads: signed over the empty body.
    Empty,
    /// A JSON write, buffered.
    Bytes(&'a [u8]),
    /// The pre-auth body gate refused the body; the authenticator reports it in order.
    Rejected(&'static str),
}

/// Everything an authenticator may look at.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The method.
    pub method: &'a Method,
    /// Path and query as the client sent them (before any `nest` prefix was stripped).
    pub path_and_query: &'a str,
    /// The host the client addressed (lower-cased `Host`, or the configured override).
    pub host: &'a str,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// The signed body.
    pub body: SignedBody<'a>,
}

/// Decides who is calling. Replace the default [`CapCertAuthenticator`] with your own
/// (bearer tokens, mTLS identities, ...) through [`crate::app::state::SyncOptions::with_authenticator`].
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one request.
    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Caller, AuthError>>;

    /// When `Some(limit)`, the router buffers JSON write bodies (at most `limit` bytes,
    /// `Content-Length` required) before calling [`Self::authenticate`], so the
    /// signature can cover them. The default needs no body.
    fn signed_body_limit(&self, _headers: &HeaderMap) -> Option<u64> {
        None
    }

    /// How many nonces its replay cache holds (a metrics gauge), if it has one.
    fn replay_entries(&self) -> Option<usize> {
        None
    }
}

/// Settings of the [`CapCertAuthenticator`]. Defaults are the reference's.
#[derive(Debug, Clone)]
pub struct CapAuthOptions {
    /// Requests without `Authorization: Cap` are anonymous (`public` role) instead of 401.
    pub allow_anonymous: bool,
    /// Largest `Authorization` header, checked before any parsing (8 KiB).
    pub max_cap_header_bytes: usize,
    /// Largest signed write body buffered before the signature is checked (64 KiB).
    pub max_signed_body_bytes: u64,
    /// Allowed `X-Starfish-Ts` skew in ms (5 minutes).
    pub max_skew_ms: u64,
    /// Replay-cache bounds.
    pub nonce_limits: NonceCacheLimits,
    /// Bytes of verified certificates kept so a repeat caller costs one signature
    /// check, not two (16 MiB). A certificate enters only once a whole request
    /// carrying it has verified.
    pub cert_cache_bytes: u64,
    /// Host to verify signatures against instead of the `Host` header (behind a proxy
    /// that rewrites it).
    pub host_override: Option<String>,
    /// Revocation lists.
    pub revocations: Arc<dyn RevocationStore>,
    /// A replay cache shared with other nodes (Redis), used instead of this
    /// process's own: a request accepted by one node is refused by every other.
    pub shared_replay: Option<Arc<dyn super::ReplayStore>>,
    /// Validators of certificate kinds other than `device` (the reference's
    /// `capValidators`): without one, `member` and `audience` certificates get `401`.
    pub validators: super::CapValidators,
}

impl CapAuthOptions {
    /// Checks the settings against each other.
    ///
    /// # Errors
    /// A sentence when the replay window is shorter than twice the allowed skew: a
    /// nonce would be forgotten while its request could still be replayed.
    pub fn check(&self) -> Result<(), String> {
        if self.nonce_limits.window_ms > 24 * 3600 * 1000 {
            return Err(format!(
                "the nonce window ({} ms) is longer than a day",
                self.nonce_limits.window_ms
            ));
        }
        if self.nonce_limits.window_ms < self.max_skew_ms.saturating_mul(2) {
            return Err(format!(
                "the nonce window ({} ms) must be at least twice the allowed clock skew ({} ms)",
                self.nonce_limits.window_ms, self.max_skew_ms
            ));
        }
        Ok(())
    }
}

impl Default for CapAuthOptions {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            max_cap_header_bytes: 8 * 1024,
            max_signed_body_bytes: 64 * 1024,
            max_skew_ms: REQUEST_SKEW_MS,
            nonce_limits: NonceCacheLimits::default(),
            cert_cache_bytes: 16 * 1024 * 1024,
            host_override: None,
            revocations: Arc::new(InMemoryRevocationStore::new()),
            shared_replay: None,
            validators: super::CapValidators::new(),
        }
    }
}

/// Longest accepted `X-Starfish-Nonce` (clients send 16 random bytes in base64).
const MAX_NONCE_BYTES: usize = 128;

/// Verifies `Authorization: Cap …` plus `X-Starfish-Sig/Ts/Nonce` (§3.7).
pub struct CapCertAuthenticator {
    options: CapAuthOptions,
    clock: Arc<dyn Clock>,
    nonces: NonceCache,
    /// Certificates whose shape and issuer signature verified, keyed by the SHA-256
    /// of the exact header value (a value of about 800 bytes kept per certificate
    /// would be most of what a cached one costs; no two values share a digest that
    /// anyone can find). Their validity window is still checked on every request.
    certs: quick_cache::sync::Cache<CertKey, Arc<VerifiedCert>, CertWeight>,
}

impl std::fmt::Debug for CapCertAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapCertAuthenticator")
            .field("options", &self.options)
            .field("nonces", &self.nonces)
            .finish_non_exhaustive()
    }
}

fn unauthorized(reason: impl Into<Cow<'static, str>>) -> AuthError {
    AuthError::Unauthorized(reason.into())
}

impl CapCertAuthenticator {
    /// An authenticator with `options`, reading time from `clock`.
    pub fn new(options: CapAuthOptions, clock: Arc<dyn Clock>) -> Self {
        Self {
            nonces: NonceCache::new(options.nonce_limits),
            certs: quick_cache::sync::Cache::with_weighter(
                1024,
                options.cert_cache_bytes.max(1),
                CertWeight,
            ),
            options,
            clock,
        }
    }

    /// The settings.
    pub fn options(&self) -> &CapAuthOptions {
        &self.options
    }

    /// Parses and verifies (shape + issuer signature) a cap header value, or takes it
    /// from the cache; its key in the cache when it did not come from there.
    fn cert(&self, header_value: &[u8]) -> Result<(Arc<VerifiedCert>, Option<CertKey>), AuthError> {
        let header_value = std::str::from_utf8(header_value)
            .map_err(|_| unauthorized("malformed cap-cert in Authorization header"))?;
        let key = CertKey(<sha2::Sha256 as sha2::Digest>::digest(header_value).into());
        if let Some(cert) = self.certs.get(&key) {
            return Ok((cert, None));
        }
        let b64 = header_value.strip_prefix("Cap ").unwrap_or("").trim();
        let json = BASE64
            .decode(b64)
            .map_err(|_| unauthorized("malformed cap-cert in Authorization header"))?;
        // Counted while it is read: a certificate stuffed past the scope's bounds is
        // refused at its first value too many, before anything is built from it.
        let value = read_cert_json(&json).map_err(|e| match e {
            CertJsonError::Bounds => unauthorized("cap-cert over its bounds"),
            CertJsonError::Syntax => unauthorized("malformed cap-cert in Authorization header"),
        })?;
        let cert = CapCert::parse(&value).map_err(|e| unauthorized(e.to_string()))?;
        let cert = VerifiedCert::new(cert, &self.options.validators).map_err(unauthorized)?;
        Ok((Arc::new(cert), Some(key)))
    }

    /// Verifies `request`; the caller, and the nonce fingerprint still to be claimed
    /// in the shared replay cache (when there is one; otherwise this process's cache
    /// took it already).
    /// The fingerprint comes with the request's signed time.
    fn verify(&self, request: &AuthRequest<'_>) -> Result<(Caller, Option<Unclaimed>), AuthError> {
        let Some(headers) = self.signature_headers(request.headers)? else {
            return Ok((Caller::anonymous(), None));
        };
        let now_ms = self.clock.now_ms();
        if headers.ts.abs_diff(now_ms as i64) > self.options.max_skew_ms {
            return Err(unauthorized("request timestamp outside clock skew"));
        }
        // A signature that cannot be one is refused before the certificate is read,
        // so the refusal costs the same whatever the certificate holds. A body the
        // gate refused keeps its 413: the reference checks the body first.
        let signature = parse_signature(headers.sig);
        if signature.is_none() && !matches!(request.body, SignedBody::Rejected(_)) {
            return Err(unauthorized("bad request signature"));
        }
        // Cheap checks first; then the issuer signature (cached) and the window.
        let (verified, uncached) = self.cert(headers.cap)?;
        let cert = &verified.cert;
        cert.check_window((now_ms / 1000) as f64)
            .map_err(|e| unauthorized(e.to_string()))?;
        let signer = Signer::of(&verified, request.headers)?;
        self.check_signature(request, &headers, signature, &signer.key)?;
        if let (Some(aud), Some(presenter)) = (&cert.aud, &signer.presenter) {
            if !aud.iter().any(|a| a.eq_ignore_ascii_case(presenter)) {
                return Err(AuthError::Forbidden(
                    "presenter is not in the cap audience".into(),
                ));
            }
        }
        let signer_bytes = signer.key.to_bytes();
        let claim = if self.options.shared_replay.is_some() {
            let signed_at = u64::try_from(headers.ts).unwrap_or(0);
            Some((
                super::nonce::fingerprint(&signer_bytes, headers.nonce),
                signed_at,
            ))
        } else {
            if let Err(refusal) =
                self.nonces
                    .check_and_remember(&signer_bytes, headers.nonce, headers.ts, now_ms)
            {
                return Err(unauthorized(format!("nonce refused: {refusal:?}")));
            }
            None
        };
        // An audience certificate has no subject: it is revoked by its nonce alone.
        let subject = cert.sub.as_deref().unwrap_or("");
        if self
            .options
            .revocations
            .is_revoked(&cert.iss, subject, &cert.nonce)
        {
            return Err(unauthorized("cap-cert revoked"));
        }
        if let Some(key) = uncached {
            // Only a certificate that carried a whole valid request is kept.
            self.certs.insert(key, verified.clone());
        }
        Ok((caller_of(&verified, &signer)?, claim))
    }

    /// The `Authorization: Cap` value and the signature headers; `None` for an
    /// anonymous request when anonymous callers are allowed.
    fn signature_headers<'h>(
        &self,
        headers: &'h HeaderMap,
    ) -> Result<Option<SignatureHeaders<'h>>, AuthError> {
        // Its bytes, not yet its text: the text is checked with the certificate, after
        // the cheap checks (a value that starts with `Cap ` is a certificate, as in
        // the reference and in `signed_body_limit`).
        let auth = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .filter(|v| v.starts_with(b"Cap "));
        let Some(cap) = auth else {
            if self.options.allow_anonymous {
                return Ok(None);
            }
            return Err(unauthorized("missing Authorization: Cap header"));
        };
        if cap.len() > self.options.max_cap_header_bytes {
            return Err(unauthorized("cap-too-large"));
        }
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (Some(sig), Some(ts), Some(nonce)) = (
            text("x-starfish-sig"),
            text("x-starfish-ts"),
            text("x-starfish-nonce"),
        ) else {
            return Err(unauthorized("missing request signature headers"));
        };
        let ts = parse_ts_header(ts).ok_or_else(|| unauthorized("invalid X-Starfish-Ts"))?;
        if nonce.len() > MAX_NONCE_BYTES {
            return Err(unauthorized("X-Starfish-Nonce too long"));
        }
        Ok(Some(SignatureHeaders {
            cap,
            sig,
            ts,
            nonce,
        }))
    }

    /// Checks the request signature (`signature`: `X-Starfish-Sig` decoded, if it
    /// could be) against the verifying key `key`.
    fn check_signature(
        &self,
        request: &AuthRequest<'_>,
        headers: &SignatureHeaders<'_>,
        signature: Option<ed25519_dalek::Signature>,
        key: &ed25519_dalek::VerifyingKey,
    ) -> Result<(), AuthError> {
        let body = match request.body {
            SignedBody::Empty => &[][..],
            SignedBody::Bytes(b) => b,
            SignedBody::Rejected(message) => return Err(AuthError::BodyTooLarge(message)),
        };
        let signed = SignedRequest {
            method: request.method.as_str(),
            path_and_query: request.path_and_query,
            body,
            host: self
                .options
                .host_override
                .as_deref()
                .unwrap_or(request.host),
            ts: headers.ts,
            nonce: headers.nonce,
        };
        match signature {
            Some(sig) if verify(key, signed.signing_input().as_bytes(), &sig) => Ok(()),
            _ => Err(unauthorized("bad request signature")),
        }
    }
}

/// Who signs a request on a certificate: its subject (`device`, `member`), or for an
/// `audience` certificate the redeemer named by `X-Starfish-Pub`.
struct Signer {
    key: ed25519_dalek::VerifyingKey,
    /// The hex key as the certificate or the header gave it.
    hex: String,
    /// The redeemer's key (lower-case hex), for an audience certificate.
    presenter: Option<String>,
}

impl Signer {
    fn of(verified: &VerifiedCert, headers: &HeaderMap) -> Result<Self, AuthError> {
        if verified.cert.kind == CapKind::Audience {
            let presenter = headers
                .get("x-starfish-pub")
                .and_then(|v| v.to_str().ok())
                .filter(|v| {
                    v.len() == 64 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                })
                .ok_or_else(|| {
                    unauthorized("missing or malformed X-Starfish-Pub for audience cap")
                })?;
            let key = parse_public_key(presenter).ok_or_else(|| {
                unauthorized("missing or malformed X-Starfish-Pub for audience cap")
            })?;
            return Ok(Self {
                key,
                hex: presenter.to_owned(),
                presenter: Some(presenter.to_owned()),
            });
        }
        let hex = verified
            .cert
            .sub
            .clone()
            .ok_or_else(|| unauthorized("cap-cert missing subject"))?;
        // A subject that is no key verifies no signature: refused as a bad one.
        let key = verified
            .subject_key
            .ok_or_else(|| unauthorized("bad request signature"))?;
        Ok(Self {
            key,
            hex,
            presenter: None,
        })
    }
}

/// Weighs a cached certificate by the bytes it holds.
#[derive(Clone)]
struct CertWeight;

impl quick_cache::Weighter<CertKey, Arc<VerifiedCert>> for CertWeight {
    fn weight(&self, key: &CertKey, cert: &Arc<VerifiedCert>) -> u64 {
        std::mem::size_of_val(key) as u64 + cert.weight
    }
}

/// A certificate's key in the cache: the SHA-256 of its header value.
#[derive(Clone, PartialEq, Eq, Hash)]
struct CertKey([u8; 32]);

/// The signature headers of a signed request, before anything is verified.
struct SignatureHeaders<'h> {
    /// The `Authorization` value's bytes (its text is checked when it is read).
    cap: &'h [u8],
    sig: &'h str,
    ts: i64,
    nonce: &'h str,
}

/// The time (seconds, from a certificate's `exp` plus the allowed skew: until then
/// the certificate is accepted) in ms; a value that is not a finite non-negative
/// number reads as already past (such a cert is refused before this anyway).
fn exp_ms(exp: f64) -> u64 {
    if exp.is_finite() && exp >= 0.0 {
        // Saturating: seconds past u64::MAX / 1000 are "never" in practice.
        (exp * 1000.0).min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// The caller a verified certificate describes: the identity it is bound to (a
/// device certificate's issuer, a member certificate's subject, an audience
/// certificate's redeemer), its roles, grant and path scope (`{identity}` filled
/// in with that identity).
///
/// # Errors
/// A member certificate without `subUserId` (`401`); a member or audience
/// certificate without `scope.paths` (`403`: it would reach everything).
fn caller_of(verified: &VerifiedCert, signer: &Signer) -> Result<Caller, AuthError> {
    let cert = &verified.cert;
    let identity = match cert.kind {
        CapKind::Device => cert.iss_user_id.clone(),
        CapKind::Member => cert
            .sub_user_id
            .clone()
            .ok_or_else(|| unauthorized("member cap-cert without subUserId"))?,
        CapKind::Audience => user_id_from_pub_hex(&signer.hex)
            .ok_or_else(|| unauthorized("missing or malformed X-Starfish-Pub for audience cap"))?,
    };
    let delegated = cert.kind != CapKind::Device;
    if delegated && cert.paths.as_ref().is_none_or(Vec::is_empty) {
        return Err(AuthError::Forbidden(
            "member/audience cap must carry an explicit scope.paths".into(),
        ));
    }
    let mut caller = Caller::from_cap(&identity, verified.roles.clone())
        .with_presenter(signer.hex.as_str())
        .with_root(cert.iss.to_ascii_lowercase())
        .with_expiry(exp_ms(cert.exp + CAP_SKEW_SECS))
        .with_grant(CapGrant {
            ops: cert.ops.clone(),
            collections: cert.collections.clone(),
        });
    if delegated {
        caller = caller.with_delegation();
    }
    if let Some(paths) = &cert.paths {
        let paths = paths
            .iter()
            .map(|p| p.replace("{identity}", &identity))
            .collect();
        caller = caller.with_scope_paths(paths);
    }
    Ok(caller)
}

/// A nonce's fingerprint still to be claimed in the shared replay cache, and the
/// time its request was signed (ms).
type Unclaimed = ([u8; 16], u64);

impl Authenticator for CapCertAuthenticator {
    fn replay_entries(&self) -> Option<usize> {
        Some(self.nonces.len())
    }

    fn authenticate<'a>(
        &'a self,
        request: AuthRequest<'a>,
    ) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(async move {
            let (caller, claim) = self.verify(&request)?;
            let (Some((fingerprint, signed_at)), Some(shared)) =
                (claim, &self.options.shared_replay)
            else {
                return Ok(caller);
            };
            // Remembered past the window by the allowed skew: another node's clock may
            // run behind this one's by up to that much.
            let ttl = self
                .options
                .nonce_limits
                .window_ms
                .saturating_add(self.options.max_skew_ms);
            match shared.claim(fingerprint, ttl, self.clock.now_ms()).await {
                Ok(claim) if !claim.first => Err(unauthorized("nonce refused: Replay")),
                // Signed before the cache's memory starts: it may have been accepted
                // in a memory the cache lost. Fail closed; the client signs again.
                Ok(claim) if signed_at < claim.remembers_since_ms => {
                    Err(AuthError::ReplayUnavailable(
                        "signed before the replay cache lost its memory".into(),
                    ))
                }
                Ok(_) => Ok(caller),
                Err(e) => Err(AuthError::ReplayUnavailable(e.into())),
            }
        })
    }

    fn signed_body_limit(&self, headers: &HeaderMap) -> Option<u64> {
        let is_cap = headers
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes().starts_with(b"Cap "));
        is_cap.then_some(self.options.max_signed_body_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::ManualClock;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;
    use starfish_protocol::capcert::CAP_CERT_DOMAIN;
    use starfish_protocol::stable_stringify;

    const T0: u64 = 1_767_225_600_000;

    fn b64(bytes: &[u8]) -> String {
        BASE64.encode(bytes)
    }

    /// A self-signed device cap header for `key`.
    fn cap_header(key: &SigningKey) -> String {
        let pub_hex = hex::encode(key.verifying_key().as_bytes());
        device_cap(key, &pub_hex)
    }

    /// A device cap header issued by `issuer` for the subject key `sub` (hex).
    fn device_cap(issuer: &SigningKey, sub: &str) -> String {
        let pub_hex = hex::encode(issuer.verifying_key().as_bytes());
        let mut cert = json!({
            "v": 1, "kind": "device", "iss": pub_hex,
            "issUserId": starfish_protocol::capcert::user_id_from_pub_hex(&pub_hex),
            "sub": sub, "subKem": "00".repeat(32),
            "scope": {"ops": ["read"], "collections": ["*"]},
            "nbf": T0 / 1000 - 60, "exp": T0 / 1000 + 3600, "nonce": b64(&[7u8; 16]),
        });
        let input = format!("{CAP_CERT_DOMAIN}{}", stable_stringify(&cert));
        cert["sig"] = json!(b64(&issuer.sign(input.as_bytes()).to_bytes()));
        format!("Cap {}", b64(stable_stringify(&cert).as_bytes()))
    }

    fn headers(key: &SigningKey, cap: &str, nonce: &str, signed_path: &str) -> HeaderMap {
        let input = SignedRequest {
            method: "GET",
            path_and_query: signed_path,
            body: b"",
            host: "h",
            ts: T0 as i64,
            nonce,
        }
        .signing_input();
        let mut h = HeaderMap::new();
        let mut set = |name: &'static str, value: String| {
            h.insert(name, value.parse().unwrap());
        };
        set("authorization", cap.to_owned());
        set(
            "x-starfish-sig",
            b64(&key.sign(input.as_bytes()).to_bytes()),
        );
        set("x-starfish-ts", T0.to_string());
        set("x-starfish-nonce", nonce.to_owned());
        h
    }

    /// `GET /pull/x` on host `h` with `headers`.
    fn pull_x(headers: &HeaderMap) -> AuthRequest<'_> {
        AuthRequest {
            method: &Method::GET,
            path_and_query: "/pull/x",
            host: "h",
            headers,
            body: SignedBody::Empty,
        }
    }

    /// The cache tells certificates apart by their whole header value, and keeps
    /// none of it: a cached certificate weighs under 1,200 bytes (it was 2,600 with
    /// its header and its JSON); the same certificate in another form (a space more) is
    /// verified and cached again, and each form keeps working.
    #[tokio::test]
    async fn certificates_are_cached_by_their_header_value_without_keeping_it() {
        let auth =
            CapCertAuthenticator::new(CapAuthOptions::default(), Arc::new(ManualClock::new(T0)));
        let key = SigningKey::from_bytes(&[5; 32]);
        let cap = cap_header(&key);
        let spaced = cap.replacen("Cap ", "Cap  ", 1);
        for (i, form) in [&cap, &spaced, &cap, &spaced].into_iter().enumerate() {
            let headers = headers(&key, form, &format!("n{i}"), "/pull/x");
            assert!(auth.authenticate(pull_x(&headers)).await.is_ok(), "{i}");
        }
        assert_eq!(auth.certs.len(), 2, "one per form");
        let weight = auth.certs.weight();
        assert!(cap.len() > 500 && weight < 2 * 1200, "{weight} for two");
    }

    /// A request is verified against the certificate's subject key (decompressed once,
    /// with the certificate): not the issuer's, and a subject that is no key refuses
    /// every request, from the cache too.
    #[tokio::test]
    async fn requests_are_verified_against_the_subject_key() {
        let auth =
            CapCertAuthenticator::new(CapAuthOptions::default(), Arc::new(ManualClock::new(T0)));
        let issuer = SigningKey::from_bytes(&[3; 32]);
        let device = SigningKey::from_bytes(&[4; 32]);
        let cap = device_cap(&issuer, &hex::encode(device.verifying_key().as_bytes()));
        let attempt = |key: &SigningKey, cap: &str, nonce: &str| {
            let headers = headers(key, cap, nonce, "/pull/x");
            let auth = &auth;
            async move { auth.authenticate(pull_x(&headers)).await.map(|_| ()) }
        };
        assert!(attempt(&device, &cap, "d1").await.is_ok());
        assert_eq!(auth.certs.len(), 1);
        // Cached now: still the subject's key, not the issuer's.
        let refused = attempt(&issuer, &cap, "i1").await.unwrap_err();
        assert!(
            refused.to_string().contains("bad request signature"),
            "{refused}"
        );
        assert!(attempt(&device, &cap, "d2").await.is_ok());

        // A subject of 64 hex digits that is no curve point.
        let no_point = (0u8..=255)
            .map(|i| [i; 32])
            .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
            .expect("some bytes are no point");
        let cap = device_cap(&issuer, &hex::encode(no_point));
        for (key, nonce) in [(&issuer, "n1"), (&device, "n2")] {
            let refused = attempt(key, &cap, nonce).await.unwrap_err();
            assert!(
                refused.to_string().contains("bad request signature"),
                "{refused}"
            );
        }
    }

    /// A device cap header issued by `issuer` to itself, with `scope`.
    fn scoped_cap(issuer: &SigningKey, scope: serde_json::Value) -> String {
        let pub_hex = hex::encode(issuer.verifying_key().as_bytes());
        let mut cert = json!({
            "v": 1, "kind": "device", "iss": pub_hex,
            "issUserId": starfish_protocol::capcert::user_id_from_pub_hex(&pub_hex),
            "sub": pub_hex, "subKem": "00".repeat(32), "scope": scope,
            "nbf": T0 / 1000 - 60, "exp": T0 / 1000 + 3600, "nonce": b64(&[7u8; 16]),
        });
        let input = format!("{CAP_CERT_DOMAIN}{}", stable_stringify(&cert));
        cert["sig"] = json!(b64(&issuer.sign(input.as_bytes()).to_bytes()));
        format!("Cap {}", b64(stable_stringify(&cert).as_bytes()))
    }

    /// Why `headers` are refused for `GET /pull/x`.
    async fn refusal(auth: &CapCertAuthenticator, headers: &HeaderMap) -> String {
        auth.authenticate(pull_x(headers))
            .await
            .map(|_| ())
            .unwrap_err()
            .to_string()
    }

    /// A signature that cannot be one (not base64 of 64 bytes) is refused before the
    /// certificate is read, whatever the certificate holds: the refusal costs the same
    /// for a bloated certificate, or for one that is not even base64.
    #[tokio::test]
    async fn a_junk_signature_is_refused_before_the_certificate_is_read() {
        let auth =
            CapCertAuthenticator::new(CapAuthOptions::default(), Arc::new(ManualClock::new(T0)));
        let key = SigningKey::from_bytes(&[3; 32]);
        let bloated = scoped_cap(
            &key,
            json!({"ops": vec!["read"; 300], "collections": vec![""; 400]}),
        );
        for cap in [cap_header(&key), bloated, "Cap !!!".to_owned()] {
            let mut headers = headers(&key, &cap, "n", "/pull/x");
            headers.insert("x-starfish-sig", "junk".parse().unwrap());
            let reason = refusal(&auth, &headers).await;
            assert!(reason.contains("bad request signature"), "{reason}");
        }
        // A write whose body the gate refused keeps its 413, as in the reference
        // (the body is checked before the request signature).
        let mut headers = headers(&key, &cap_header(&key), "n", "/pull/x");
        headers.insert("x-starfish-sig", "junk".parse().unwrap());
        let request = AuthRequest {
            body: SignedBody::Rejected("request body too large"),
            ..pull_x(&headers)
        };
        assert_eq!(
            auth.authenticate(request).await.map(|_| ()),
            Err(AuthError::BodyTooLarge("request body too large"))
        );
    }

    /// A validly issued certificate stuffed past the scope's bounds is refused while
    /// it is read, with a well-formed signature too (nothing is built from it).
    #[tokio::test]
    async fn a_bloated_certificate_is_refused_while_it_is_read() {
        let auth =
            CapCertAuthenticator::new(CapAuthOptions::default(), Arc::new(ManualClock::new(T0)));
        let key = SigningKey::from_bytes(&[3; 32]);
        let bloated = scoped_cap(
            &key,
            json!({"ops": vec!["read"; 300], "collections": vec![""; 400]}),
        );
        let reason = refusal(&auth, &headers(&key, &bloated, "n", "/pull/x")).await;
        assert!(reason.contains("cap-cert over its bounds"), "{reason}");
        // Within the bounds, the same key's certificate is served.
        let fine = scoped_cap(&key, json!({"ops": ["read"], "collections": ["*"]}));
        let headers = headers(&key, &fine, "n2", "/pull/x");
        assert!(auth.authenticate(pull_x(&headers)).await.is_ok());
    }

    #[tokio::test]
    async fn a_certificate_is_cached_only_after_a_whole_request_verifies() {
        let auth =
            CapCertAuthenticator::new(CapAuthOptions::default(), Arc::new(ManualClock::new(T0)));
        let key = SigningKey::from_bytes(&[3; 32]);
        let cap = cap_header(&key);
        // Signed for another path: the certificate verifies, the request does not.
        let wrong = headers(&key, &cap, "n1", "/elsewhere");
        assert!(auth.authenticate(pull_x(&wrong)).await.is_err());
        assert_eq!(auth.certs.len(), 0, "a failed request caches nothing");
        let right = headers(&key, &cap, "n2", "/pull/x");
        assert!(auth.authenticate(pull_x(&right)).await.is_ok());
        assert_eq!(auth.certs.len(), 1);
    }
}
