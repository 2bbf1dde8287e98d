//! Webhook ingress, as the reference's `starfish-webhook`: a third party (payment,
//! CI, chat) `POST`s to `/webhook/<id>`; the request is verified by HMAC-SHA256 (hex,
//! in `x-webhook-signature`) over the body, or over `<timestamp>.<body>` when the
//! route names a timestamp header (then at most `tolerance` seconds old, 300 by
//! default); a signature is accepted once (the replay cache, shared across nodes
//! through Redis when the router has one); a declarative [`Transform`] (JSON
//! pointers into the payload, no code) makes the document's data and fills the
//! target path's parameters; and the result is sent as an ordinary push through the
//! whole pipeline (authentication, roles, limits, quotas, hooks, audit), signed by
//! the route's own identity when it has one.
//!
//! Answers as the reference's: `404 {"error":"unknown_webhook"}`, `405`, `401` with
//! `missing_signature`, `missing_timestamp`, `invalid_timestamp`,
//! `timestamp_out_of_tolerance`, `invalid_signature` (and `replayed`, ours), `400
//! {"error":"rejected_by_transform"}` when the transform finds nothing, and
//! otherwise whatever the push answers.

pub(crate) mod replay;
mod transform;

pub use transform::Transform;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use starfish_protocol::identity::Identity;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The largest webhook body read.
pub(crate) const MAX_BODY_BYTES: u64 = 1 << 20;
/// The reference's default signature header.
const DEFAULT_SIGNATURE_HEADER: &str = "x-webhook-signature";
/// The reference's default tolerance for a timestamp, seconds.
const DEFAULT_TOLERANCE_SECS: u64 = 300;
/// The largest tolerance a route may set, seconds.
const MAX_TOLERANCE_SECS: u64 = 3600;
/// The host the forwarded pushes are signed for, unless the router verifies
/// signatures against a configured host.
const INTERNAL_HOST: &str = "webhook.internal";

/// A shared secret: never printed.
#[derive(Clone)]
struct Secret(Arc<[u8]>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// One webhook: how its caller is verified, what its payload becomes, and where
/// it is pushed.
#[derive(Debug)]
pub struct WebhookRoute {
    target: String,
    secret: Secret,
    signature_header: HeaderName,
    timestamp_header: Option<HeaderName>,
    tolerance_secs: u64,
    transform: Transform,
    identity: Option<Mutex<Identity>>,
}

impl WebhookRoute {
    /// A route pushing to `target` (`/push/<storage path>`, or
    /// `/<namespace>/push/<storage path>`; `{name}` segments are filled by the
    /// transform's parameters), its callers signing with `secret`.
    ///
    /// # Errors
    /// An empty secret, a target that is not a push path, or a `{name}` the
    /// transform does not fill.
    pub fn new(target: &str, secret: &[u8], transform: Transform) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("a webhook needs a secret".into());
        }
        transform::check_target(target, &transform)?;
        Ok(Self {
            target: target.to_owned(),
            secret: Secret(secret.into()),
            signature_header: HeaderName::from_static(DEFAULT_SIGNATURE_HEADER),
            timestamp_header: None,
            tolerance_secs: DEFAULT_TOLERANCE_SECS,
            transform,
            identity: None,
        })
    }

    /// The header carrying the signature (default `x-webhook-signature`).
    ///
    /// # Errors
    /// Not a header name.
    pub fn with_signature_header(mut self, name: &str) -> Result<Self, String> {
        self.signature_header = header_name(name)?;
        Ok(self)
    }

    /// Signs `<timestamp>.<body>`, the timestamp (unix seconds) in this header,
    /// at most `tolerance_secs` away from now.
    ///
    /// # Errors
    /// Not a header name, or a tolerance over an hour.
    pub fn with_timestamp_header(
        mut self,
        name: &str,
        tolerance_secs: u64,
    ) -> Result<Self, String> {
        if tolerance_secs > MAX_TOLERANCE_SECS {
            return Err(format!(
                "a tolerance of at most {MAX_TOLERANCE_SECS} seconds"
            ));
        }
        self.timestamp_header = Some(header_name(name)?);
        self.tolerance_secs = tolerance_secs;
        Ok(self)
    }

    /// Pushes as `identity`: the push is signed with its device certificate
    /// (renewed before it expires) and carries its append author proof, so a
    /// role-gated or author-signed collection takes it.
    #[must_use]
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Some(Mutex::new(identity));
        self
    }
}

fn header_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))
}

/// The router's webhooks, by id.
#[derive(Debug, Default, Clone)]
pub struct Webhooks {
    routes: HashMap<String, Arc<WebhookRoute>>,
}

impl Webhooks {
    /// None yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `route` as `POST /webhook/<id>`.
    #[must_use]
    pub fn with(mut self, id: impl Into<String>, route: WebhookRoute) -> Self {
        self.routes.insert(id.into(), Arc::new(route));
        self
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// What the webhook routes share: the routes, and the signatures seen.
#[derive(Debug)]
pub(crate) struct Ingress {
    webhooks: Webhooks,
    seen: replay::Signatures,
    /// The host forwarded pushes are signed for.
    host: String,
    /// What this node read lately of runtime namespaces' webhooks: a delivery is
    /// verified with its route's secret, so without this every request, signed or
    /// not, would cost a store read.
    tenant_hooks: std::sync::Mutex<TenantHooks>,
}

/// Runtime namespaces' webhooks as this node read them, by namespace and
/// generation, and how many times one was forgotten (a create or delete here).
#[derive(Debug, Default)]
struct TenantHooks {
    forgotten: u64,
    namespaces: HashMap<(String, String), Listed>,
}

/// One namespace's webhooks: their ids (listed at once, at most 100, so an id it
/// does not have costs nothing), the routes read so far, and when.
#[derive(Debug)]
struct Listed {
    ids: std::collections::HashSet<String>,
    routes: HashMap<String, Arc<WebhookRoute>>,
    at: Instant,
}

/// What a node knows of a namespace's webhook.
#[derive(Debug)]
pub(crate) enum Known {
    /// Its route.
    Route(Arc<WebhookRoute>),
    /// The namespace has no such webhook.
    Unknown,
    /// It has it: read its route.
    Listed,
    /// Nothing fresh: list the namespace's webhooks.
    Nothing,
}

/// How long what a node read of a namespace's webhooks is used before it is read
/// again (another node's create or delete is seen within it).
pub(crate) const TENANT_ROUTE_TTL: Duration = Duration::from_secs(5);
/// Namespaces whose webhooks a node remembers at most; past it, it forgets all.
const MAX_TENANT_NAMESPACES: usize = 4096;

impl Ingress {
    /// The webhook `id` of the config.
    pub(crate) fn route(&self, id: &str) -> Option<Arc<WebhookRoute>> {
        self.webhooks.routes.get(id).cloned()
    }

    /// True when the config has webhooks (`/webhook/<id>` is then mounted).
    pub(crate) fn has_routes(&self) -> bool {
        !self.webhooks.is_empty()
    }

    /// Claims `signature` on `id` for the route's window (twice its tolerance, at
    /// least a minute).
    pub(crate) async fn claim(
        &self,
        id: &str,
        route: &WebhookRoute,
        signature: &Verified,
        now_ms: u64,
    ) -> replay::Seen {
        let window_ms = route.tolerance_secs.saturating_mul(2_000).max(60_000);
        let fingerprint = replay::fingerprint(id, &signature.hex);
        let signed_ms = signature.signed_secs.map(|s| s.saturating_mul(1000));
        self.seen
            .claim(id, fingerprint, window_ms, now_ms, signed_ms)
            .await
    }

    /// Forgets the claim of `signature` (its push failed: the sender may retry).
    pub(crate) async fn release(&self, id: &str, signature: &Verified) {
        let fingerprint = replay::fingerprint(id, &signature.hex);
        self.seen.release(id, fingerprint).await;
    }

    pub(crate) fn new(
        webhooks: Webhooks,
        shared: Option<Arc<dyn crate::auth::ReplayStore>>,
        host_override: Option<&str>,
    ) -> Self {
        for (id, route) in &webhooks.routes {
            if route.timestamp_header.is_none() {
                tracing::warn!(
                    webhook = %id,
                    "webhook without a timestamp header: a delivery replayed after its window is taken again"
                );
            }
        }
        Self {
            webhooks,
            seen: replay::Signatures::new(shared),
            host: host_override.unwrap_or(INTERNAL_HOST).to_owned(),
            tenant_hooks: std::sync::Mutex::default(),
        }
    }

    fn hooks(&self) -> std::sync::MutexGuard<'_, TenantHooks> {
        self.tenant_hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many times what this node read was forgotten: a read that started
    /// before a forget must not be remembered after it.
    pub(crate) fn tenant_epoch(&self) -> u64 {
        self.hooks().forgotten
    }

    /// What this node knows lately of webhook `id` of namespace `namespace` (its
    /// `generation`).
    pub(crate) fn tenant_route(&self, namespace: &str, generation: &str, id: &str) -> Known {
        let hooks = self.hooks();
        let key = (namespace.to_owned(), generation.to_owned());
        match hooks.namespaces.get(&key) {
            Some(listed) if listed.at.elapsed() < TENANT_ROUTE_TTL => {
                if let Some(route) = listed.routes.get(id) {
                    Known::Route(route.clone())
                } else if listed.ids.contains(id) {
                    Known::Listed
                } else {
                    Known::Unknown
                }
            }
            _ => Known::Nothing,
        }
    }

    /// Remembers the ids of `namespace`'s webhooks, listed since `epoch`.
    pub(crate) fn listed_tenant_hooks(
        &self,
        namespace: &str,
        generation: &str,
        ids: std::collections::HashSet<String>,
        epoch: u64,
    ) {
        let mut hooks = self.hooks();
        if hooks.forgotten != epoch {
            return;
        }
        if hooks.namespaces.len() >= MAX_TENANT_NAMESPACES {
            hooks.namespaces.clear();
        }
        let listed = Listed {
            ids,
            routes: HashMap::new(),
            at: Instant::now(),
        };
        let key = (namespace.to_owned(), generation.to_owned());
        hooks.namespaces.insert(key, listed);
    }

    /// Remembers the route of webhook `id` of `namespace`, read since `epoch`.
    pub(crate) fn read_tenant_route(
        &self,
        namespace: &str,
        generation: &str,
        id: &str,
        route: Arc<WebhookRoute>,
        epoch: u64,
    ) {
        let mut hooks = self.hooks();
        if hooks.forgotten != epoch {
            return;
        }
        let key = (namespace.to_owned(), generation.to_owned());
        if let Some(listed) = hooks.namespaces.get_mut(&key) {
            listed.routes.insert(id.to_owned(), route);
        }
    }

    /// Forgets what was read of `namespace`'s webhooks (one created or deleted on
    /// this node: seen at once here, within [`TENANT_ROUTE_TTL`] on others).
    pub(crate) fn forget_tenant_hooks(&self, namespace: &str) {
        let mut hooks = self.hooks();
        hooks.forgotten += 1;
        hooks.namespaces.retain(|(ns, _), _| ns != namespace);
    }
}

/// A signature that held, and when the sender said it signed.
#[derive(Debug)]
pub(crate) struct Verified {
    hex: String,
    signed_secs: Option<u64>,
}

/// Checks the caller's HMAC (and timestamp); the signature, when it holds.
pub(crate) fn verify(
    route: &WebhookRoute,
    headers: &HeaderMap,
    raw: &[u8],
    now_secs: u64,
) -> Result<Verified, &'static str> {
    let provided = headers
        .get(&route.signature_header)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
        .ok_or("missing_signature")?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&route.secret.0).map_err(|_| "invalid_signature")?;
    let mut signed_secs = None;
    if let Some(name) = &route.timestamp_header {
        let ts = headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .ok_or("missing_timestamp")?;
        let secs: u64 = ts.trim().parse().map_err(|_| "invalid_timestamp")?;
        if secs.abs_diff(now_secs) > route.tolerance_secs {
            return Err("timestamp_out_of_tolerance");
        }
        mac.update(ts.as_bytes());
        mac.update(b".");
        signed_secs = Some(secs);
    }
    mac.update(raw);
    let expected = hex::encode(mac.finalize().into_bytes());
    let same: bool = subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), provided.as_bytes()).into();
    if !same {
        return Err("invalid_signature");
    }
    Ok(Verified {
        hex: provided,
        signed_secs,
    })
}

/// What `payload` becomes: the document's data and the filled target path;
/// `None` when the transform finds nothing.
pub(crate) fn transformed(route: &WebhookRoute, raw: &[u8]) -> Option<(Value, String)> {
    let payload: Value = serde_json::from_slice(raw).ok()?;
    let (data, params) = route.transform.apply(&payload)?;
    Some((data, transform::fill(&route.target, &params)?))
}

/// The push a webhook becomes: to `target`, as the route's identity when it has
/// one (signed, with its append author proof), or anonymously as a create;
/// `None` when it cannot be made (no random nonce, a target no URI can carry).
pub(crate) fn forwarded(
    ingress: &Ingress,
    route: &WebhookRoute,
    target: &str,
    data: Value,
    inbound: &axum::http::request::Parts,
    now_ms: u64,
) -> Option<Request<Body>> {
    let document_key = transform::document_key(target);
    let mut headers: Vec<(HeaderName, String)> = Vec::new();
    let body = match &route.identity {
        None => json!({ "data": data, "baseHash": null }).to_string(),
        Some(identity) => {
            let mut identity = identity
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // A day before the device certificate expires, a new one.
            if identity.cert_expiry() < now_ms / 1000 + 86_400 {
                if let Err(e) = identity.reissue(now_ms / 1000) {
                    tracing::error!(error = %e, "webhook identity: certificate not renewed");
                }
            }
            let domain = starfish_protocol::author::APPEND_AUTHOR_DOMAIN;
            let (pubkey, signature) = identity.author_proof(domain, &data, document_key);
            let body =
                json!({ "data": data, "authorPubkey": pubkey, "authorSignature": signature })
                    .to_string();
            let nonce = starfish_protocol::identity::fresh_nonce().ok()?;
            let signed = identity.sign(&starfish_protocol::signing::SignedRequest {
                method: "POST",
                path_and_query: target,
                body: body.as_bytes(),
                host: &ingress.host,
                ts: i64::try_from(now_ms).unwrap_or(i64::MAX),
                nonce: &nonce,
            });
            for (name, value) in signed.pairs() {
                headers.push((HeaderName::from_static(name), value.to_owned()));
            }
            body
        }
    };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(target)
        .header(
            header::HOST,
            HeaderValue::from_str(&ingress.host).unwrap_or(HeaderValue::from_static(INTERNAL_HOST)),
        )
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, body.len());
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if let Some(id) = inbound.headers.get("x-request-id") {
        request = request.header("x-request-id", id.clone());
    }
    let mut request = request.body(Body::from(body)).ok()?;
    // Limits by address apply to the webhook's sender.
    if let Some(peer) = inbound
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
    {
        request.extensions_mut().insert(*peer);
    }
    Some(request)
}

/// A namespace's own webhook route, created through the admin API and kept in its
/// part of the store (sealed with its key when it seals at rest); its secret is the
/// server's, shown once.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StoredRoute {
    /// `/push/<storage path>`, within the namespace.
    pub(crate) target: String,
    /// The shared secret, hex.
    pub(crate) secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tolerance_seconds: Option<u64>,
    pub(crate) transform: Value,
    pub(crate) created_at: u64,
}

impl std::fmt::Debug for StoredRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredRoute")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl StoredRoute {
    /// The route it makes in `namespace`: its target under `/<namespace>`.
    ///
    /// # Errors
    /// A target outside `/push/`, or a bad transform or header.
    pub(crate) fn route(&self, namespace: &str) -> Result<WebhookRoute, String> {
        if !self.target.starts_with("/push/") {
            return Err("target: a /push/<storage path> of the namespace".into());
        }
        let target = format!("/{namespace}{}", self.target);
        let transform = Transform::from_value(&self.transform)?;
        let mut route = WebhookRoute::new(&target, self.secret.as_bytes(), transform)?;
        if let Some(name) = &self.timestamp_header {
            let tolerance = self.tolerance_seconds.unwrap_or(DEFAULT_TOLERANCE_SECS);
            route = route.with_timestamp_header(name, tolerance)?;
        }
        Ok(route)
    }

    /// A new secret: 32 random bytes, hex.
    pub(crate) fn new_secret() -> Option<String> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).ok()?;
        Some(hex::encode(bytes))
    }
}
