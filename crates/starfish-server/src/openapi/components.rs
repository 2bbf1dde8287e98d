//! The document's shared parts: body schemas, the security schemes, and a builder
//! for the responses an operation can answer with (the bodies `routes/error.rs` renders).

use crate::store::MAX_PARAM_BYTES;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The path-parameter rule (`names::is_param_value`, `key::MAX_PARAM_BYTES`).
pub(super) const PARAM_PATTERN: &str = "^[a-zA-Z0-9._:@-]+$";
/// Values the parameter rule admits but a key refuses: `..` anywhere, a lone `.`, and
/// the names of the store's own objects.
pub(super) const RESERVED_PARAM_PATTERN: &str =
    "\\.\\.|^\\.$|\\.__meta__$|__seg$|\\.tmp$|^_keyring$|^_members$";

/// A `$ref` to a schema of `components.schemas`.
pub(super) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A path parameter of a storage path template.
pub(super) fn path_param(name: &str) -> Value {
    let identity = if name == crate::config::IDENTITY_PARAM {
        " For `self` roles it must be the caller's identity (the cap's subject)."
    } else {
        ""
    };
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": format!(
            "A storage path parameter. `.`, `..`, `_keyring`, `_members` and values ending \
             in `.__meta__`, `__seg` or `.tmp` answer 400.{identity}"
        ),
        "schema": {
            "type": "string", "pattern": PARAM_PATTERN, "maxLength": MAX_PARAM_BYTES,
            // `..` anywhere, a lone `.`, and the store's reserved names are refused (400).
            "not": { "pattern": RESERVED_PARAM_PATTERN },
        },
    })
}

/// An optional query or header parameter.
pub(super) fn optional_param(name: &str, place: &str, description: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "in": place,
        "required": false,
        "description": description,
        "schema": schema,
    })
}

/// The security requirement of a signed request: every scheme together.
pub(super) fn signed() -> Value {
    json!({ "cap": [], "starfishSig": [], "starfishTs": [], "starfishNonce": [] })
}

/// An operation's `security`: credentials optional when the action is public.
pub(super) fn security(public: bool) -> Value {
    if public {
        json!([{}, signed()])
    } else {
        json!([signed()])
    }
}

fn header_scheme(name: &str, description: &str) -> Value {
    json!({ "type": "apiKey", "in": "header", "name": name, "description": description })
}

/// `components.securitySchemes`: the cap certificate and the request signature.
pub(super) fn security_schemes() -> Value {
    json!({
        "cap": header_scheme(
            "Authorization",
            "`Cap <base64 of the canonical JSON capability certificate>`: who is calling and \
             what the cap grants (docs/security.md). Without it a caller is anonymous and holds \
             only the `public` role (unless the server refuses anonymous callers: 401). \
             Credentials sent to a public collection are checked too (401 when invalid)."
        ),
        "starfishSig": header_scheme(
            "X-Starfish-Sig",
            "Base64 Ed25519 signature, by the cap's subject key, over the request: method, \
             path with query, host, `X-Starfish-Ts`, `X-Starfish-Nonce` and the SHA-256 of a \
             JSON body (an empty body for blob uploads). Required with `Authorization: Cap`."
        ),
        "starfishTs": header_scheme(
            "X-Starfish-Ts",
            "Request time in ms since the epoch (`^-?[0-9]+$`), within the server's allowed \
             skew (5 minutes by default)."
        ),
        "starfishNonce": header_scheme(
            "X-Starfish-Nonce",
            "A random value, never reused within the replay window (a replay answers 401)."
        ),
    })
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "required": required, "properties": properties })
}

/// The stored document fields a pull answers with.
fn document_properties() -> Value {
    json!({
        "data": { "type": "object", "description": "The document (`{}` when none is stored)." },
        "hash": { "type": "string", "description": "Its hash, `\"\"` when none is stored; also the ETag." },
        "timestamp": { "type": "integer", "minimum": 0, "description": "Server time of the read, ms." },
        "authorPubkey": { "type": "string" },
        "authorSignature": { "type": "string" },
    })
}

/// A list's page: the names, and with `include=values` each one's pull body.
fn list_page() -> Value {
    object(
        &["items", "hasMore"],
        json!({
            "items": { "type": "array", "items": { "type": "string" } },
            "hasMore": { "type": "boolean" },
            "values": {
                "type": "array",
                "items": { "anyOf": [ schema_ref("Document"), { "type": "null" } ] },
            },
        }),
    )
}

/// `components.schemas`.
pub(super) fn schemas() -> Value {
    let mut pull = document_properties();
    if let Value::Object(p) = &mut pull {
        p.insert(
            "keyring".into(),
            json!({
                "description": "With `withKeyring`: the sibling `<key>/_keyring` document, or null.",
                "anyOf": [ { "type": "null" }, schema_ref("Document") ],
            }),
        );
    }
    json!({
        "Error": object(&["error"], json!({ "error": { "type": "string" } })),
        "SchemaError": object(&["error", "path", "validator"], json!({
            "error": { "type": "string", "description": "`Schema validation failed: <message>`" },
            "path": { "type": "array", "items": { "type": ["string", "integer"] } },
            "validator": { "type": "string", "description": "The failing JSON Schema keyword." },
        })),
        "AppendLimitError": object(&["error", "limit"], json!({
            "error": { "const": "append_limit_exceeded" },
            "limit": { "type": "integer", "minimum": 0, "description": "`maxItems`, or the elements a single-document log holds when it reached the server's byte cap." },
            "maxBytes": { "type": "integer", "minimum": 0, "description": "The server's cap on a single-document log, when that is what was reached." },
        })),
        "Document": object(&["data", "hash", "timestamp"], document_properties()),
        "LogPull": object(&["data", "hash", "timestamp"], {
            let mut log = document_properties();
            log["hasMore"] = json!({
                "const": true,
                "description": "Only when the server's bound left out elements after the checkpoint (a pull without `last`/`limit`): pull again with `checkpoint` = the last element's `ts`.",
            });
            log
        }),
        "PullResponse": object(&["data", "hash", "timestamp"], pull),
        "PushResult": object(&["hash", "timestamp"], json!({
            "hash": { "type": "string" },
            "timestamp": { "type": "integer", "minimum": 0 },
        })),
        "BlobPushResult": object(&["hash"], json!({
            "hash": { "type": "string", "description": "SHA-256 of the bytes, hex." },
        })),
        "BundleResponse": object(&["collections", "timestamp"], json!({
            "collections": {
                "type": "object",
                "description": "One entry per member the caller may read.",
                "additionalProperties": object(&["data", "hash"], json!({
                    "data": { "type": "object" }, "hash": { "type": "string" },
                })),
            },
            "timestamp": { "type": "integer", "minimum": 0 },
        })),
        "ListPage": list_page(),
        "BatchResponse": object(&["collections"], json!({
            "collections": {
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "items": { "anyOf": [ schema_ref("Document"), schema_ref("Error") ] },
                },
            },
        })),
        "Health": object(&["ok", "ts"], json!({
            "ok": { "const": true }, "ts": { "type": "integer", "minimum": 0 },
        })),
        "ClientConfig": object(&["collections"], json!({
            "collections": { "type": "array", "items": { "type": "object" } },
            "namespaces": {
                "type": "object",
                "additionalProperties": object(&["collections"], json!({
                    "collections": { "type": "array", "items": { "type": "object" } },
                })),
            },
        })),
    })
}

/// The responses of one operation, by status.
#[derive(Default)]
pub(super) struct Responses(BTreeMap<u16, Value>);

impl Responses {
    /// Adds (or replaces) the response for `status`.
    pub(super) fn with(mut self, status: u16, response: Value) -> Self {
        self.0.insert(status, response);
        self
    }

    /// A JSON response whose body is `schema`.
    pub(super) fn json(self, status: u16, description: &str, schema: Value) -> Self {
        self.with(
            status,
            json!({
                "description": description,
                "content": { "application/json": { "schema": schema } },
            }),
        )
    }

    /// An `{"error": "..."}` response; `description` lists the messages.
    pub(super) fn error(self, status: u16, description: &str) -> Self {
        self.json(status, description, schema_ref("Error"))
    }

    /// The framework's plain-text 404 (no route matched).
    pub(super) fn not_found(self) -> Self {
        self.with(
            404,
            json!({
                "description": "No route matched (e.g. a dot segment the client normalised away): `404 Not Found` as plain text.",
                "content": { "text/plain": { "schema": { "const": "404 Not Found" } } },
            }),
        )
    }

    /// `429 Rate limit exceeded` with `Retry-After`, when `limited`.
    pub(super) fn rate_limited(self, limited: bool) -> Self {
        if !limited {
            return self;
        }
        self.with(
            429,
            json!({
                "description": "`Rate limit exceeded`: over the collection's rate limit for this action.",
                "headers": { "Retry-After": {
                    "description": "Seconds until the window ends.",
                    "schema": { "type": "integer", "minimum": 0 },
                } },
                "content": { "application/json": { "schema": schema_ref("Error") } },
            }),
        )
    }

    /// `401`, `403` and `503`, which every authenticated route can answer.
    pub(super) fn auth(self, forbidden: &str) -> Self {
        self.error(
            401,
            "`Unauthorized`: the credentials are missing (anonymous callers refused), invalid, expired, revoked or replayed.",
        )
        .error(403, forbidden)
        .error(
            503,
            "`Storage unavailable` (the store failed; retry), or `Unauthorized` when authentication timed out.",
        )
    }

    /// The responses as an OpenAPI `responses` object, with the router's own limits
    /// (`routes/limits.rs`) that every route can answer with.
    pub(super) fn build(mut self) -> Value {
        let busy = "`Server busy`: too many requests in flight (retry)";
        let described = match self.0.get(&503).and_then(|r| r["description"].as_str()) {
            Some(d) => format!("{busy}; {d}"),
            None => format!("{busy}."),
        };
        self = self
            .error(503, &described)
            .error(
                408,
                "`Request timeout`: the request, body included, took longer than the server allows.",
            )
            .with(
                414,
                json!({ "description": "URI Too Long: the HTTP server's bound on the request line (no body)." }),
            )
            .with(
                431,
                json!({ "description": "Request Header Fields Too Large: the HTTP server's bound on headers (no body)." }),
            );
        let map: Map<String, Value> = self
            .0
            .into_iter()
            .map(|(status, r)| (status.to_string(), r))
            .collect();
        Value::Object(map)
    }
}
