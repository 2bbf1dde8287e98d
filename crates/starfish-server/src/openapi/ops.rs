//! One OpenAPI operation per route family, with the statuses its handler (and
//! `routes/error.rs`) can answer with.

use super::components::{Responses, optional_param, path_param, schema_ref, security, signed};
use crate::access::Action;
use crate::access::is_public;
use crate::config::{Collection, Payload, Segment};
use serde_json::{Value, json};

/// The scope an operation belongs to: the root or a namespace.
pub(super) struct Scope<'a> {
    pub(super) namespace: Option<&'a str>,
}

impl Scope<'_> {
    /// `""` at the root, `/<namespace>` otherwise.
    pub(super) fn prefix(&self) -> String {
        self.namespace.map_or_else(String::new, |n| format!("/{n}"))
    }

    /// The tag of a collection: `name` or `namespace/name`.
    pub(super) fn tag(&self, c: &Collection) -> String {
        self.qualified(c.name.as_str())
    }

    fn qualified(&self, name: &str) -> String {
        match self.namespace {
            Some(ns) => format!("{ns}/{name}"),
            None => name.to_owned(),
        }
    }

    /// A sentence about a collection: kind, storage path, who may read and write.
    pub(super) fn describe(&self, c: &Collection) -> String {
        let roles = |r: &crate::config::RoleSet| {
            r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        };
        let access = |action| {
            if is_public(c, action) {
                "public"
            } else {
                "credentials required"
            }
        };
        format!(
            "{} collection `{}` at `{}`{}. Read ({}): roles [{}]. Write ({}): roles [{}]. Bodies up to {} bytes.",
            kind(c),
            c.name,
            c.storage_path,
            if c.root_only {
                ", root device only"
            } else {
                ""
            },
            access(Action::Pull),
            roles(&c.read_roles),
            access(Action::Push),
            roles(&c.write_roles),
            c.max_body_bytes,
        )
    }

    /// `x-starfish-collection`: the collection an operation serves.
    fn info(&self, c: &Collection) -> Value {
        let roles = |r: &crate::config::RoleSet| {
            r.iter().map(|r| r.as_str().to_owned()).collect::<Vec<_>>()
        };
        json!({
            "namespace": self.namespace,
            "name": c.name.as_str(),
            "storagePath": c.storage_path.as_str(),
            "kind": kind(c),
            "publicRead": is_public(c, Action::Pull),
            "publicWrite": is_public(c, Action::Push),
            "readRoles": roles(&c.read_roles),
            "writeRoles": roles(&c.write_roles),
            "rootOnly": c.root_only,
            "listable": c.listable,
            "bundle": c.bundle,
            "maxBodyBytes": c.max_body_bytes.get(),
        })
    }
}

fn kind(c: &Collection) -> &'static str {
    if c.is_binary() {
        "blob"
    } else if c.append_only.is_some() {
        "append-only log"
    } else {
        "JSON document"
    }
}

/// One operation being built.
struct Op {
    id: String,
    summary: String,
    tag: Option<String>,
    parameters: Vec<Value>,
    security: Option<Value>,
    body: Option<Value>,
    responses: Responses,
    info: Option<Value>,
}

impl Op {
    fn new(id: String, summary: String, responses: Responses) -> Self {
        Self {
            id,
            summary,
            tag: None,
            parameters: Vec::new(),
            security: None,
            body: None,
            responses,
            info: None,
        }
    }

    fn build(self) -> Value {
        let mut op = json!({
            "operationId": self.id,
            "summary": self.summary,
            "parameters": self.parameters,
            "responses": self.responses.build(),
        });
        let fields = [
            ("tags", self.tag.map(|t| json!([t]))),
            ("security", self.security),
            ("requestBody", self.body),
            ("x-starfish-collection", self.info),
        ];
        if let Value::Object(map) = &mut op {
            for (name, value) in fields {
                if let Some(value) = value {
                    map.insert(name.into(), value);
                }
            }
        }
        op
    }
}

/// The path parameters of the first `n` segments of `c`'s template.
fn template_params(c: &Collection, n: usize) -> Vec<Value> {
    c.storage_path
        .segments()
        .iter()
        .take(n)
        .filter_map(|s| match s {
            Segment::Param(p) => Some(path_param(p)),
            Segment::Static(_) => None,
        })
        .collect()
}

/// An operation on one collection of `scope`.
fn collection_op(scope: &Scope, c: &Collection, verb: &str, summary: &str, r: Responses) -> Op {
    let mut op = Op::new(
        format!("{verb}:{}", scope.tag(c)),
        format!("{summary} `{}`", scope.tag(c)),
        r,
    );
    op.tag = Some(scope.tag(c));
    op.info = Some(scope.info(c));
    op
}

const READ_FORBIDDEN: &str = "`Forbidden`: the caller holds none of the read roles, the cap does not grant this key, or `{identity}` is not the caller's.";
const WRITE_FORBIDDEN: &str = "`Forbidden` (no write role, cap scope, identity binding), `Field '<name>' is not writable with your roles`, `<document|append> author must be the request presenter`, `invalid <document|append> author signature`.";

fn not_modified() -> Value {
    json!({ "description": "Not Modified: `If-None-Match` named the current ETag. No body." })
}

/// `GET /[ns/]pull/<storage path>`: a document, a log or a blob.
pub(super) fn pull(scope: &Scope, c: &Collection) -> Value {
    let mut r = Responses::default()
        .auth(READ_FORBIDDEN)
        .not_found()
        .rate_limited(c.rate_limits.pull.is_some())
        .with(304, not_modified())
        .error(400, "`Invalid path parameter`.");
    let mut params = template_params(c, usize::MAX);
    params.push(optional_param(
        "If-None-Match",
        "header",
        "The ETag (`\"<hash>\"`) of the copy the client holds: 304 when current.",
        json!({ "type": "string" }),
    ));
    if let Payload::Binary(patterns) = &c.payload {
        let content = binary_content(patterns);
        r = r
            .with(200, json!({
                "description": "The blob's bytes with its stored media type, an ETag, `Content-Security-Policy: sandbox`, and `Content-Disposition: attachment` unless a raster image, audio, video or plain text.",
                "content": content,
            }))
            .with(404, json!({ "description": "No blob is stored at this key (empty body), or no route matched (`404 Not Found` as plain text)." }));
    } else if let Some(log) = &c.append_only {
        params.extend(log_params(log.allow_full));
        r = r
            .json(200, "The log's elements within the bounds, under `data.<field>`: at most `maxPullLimit` (or the server's bound, 1000 by default); without `last`/`limit`, the oldest after the checkpoint, with `hasMore` when there are others.", schema_ref("LogPull"))
            .error(400, "`Invalid path parameter`, `Invalid checkpoint`, `Invalid limit`, `Invalid last`, `pull_bound_required` (no checkpoint, last or full), `full_with_bounds`, `full_not_allowed`, `checkpoint_too_old`.");
    } else {
        params.push(optional_param(
            "withKeyring",
            "query",
            "`1` or `true`: add the sibling `<key>/_keyring` document when the caller may read it.",
            json!({ "type": "string" }),
        ));
        r = r.json(
            200,
            "The document (`{data: {}, hash: \"\"}` when none is stored), with an ETag.",
            schema_ref("PullResponse"),
        );
    }
    let mut op = collection_op(scope, c, "pull", "Pull from", r);
    op.parameters = params;
    op.security = Some(security(is_public(c, Action::Pull)));
    op.build()
}

fn log_params(allow_full: bool) -> Vec<Value> {
    let number = json!({ "type": "integer", "minimum": 0 });
    let mut params = vec![
        optional_param(
            "checkpoint",
            "query",
            "Elements after this timestamp (ms); without `last`/`limit`, the oldest of them up to the bound, with `hasMore` when there are others.",
            number.clone(),
        ),
        optional_param(
            "last",
            "query",
            "The last N elements (at most `maxPullLimit`, or the server's bound).",
            number.clone(),
        ),
        optional_param(
            "limit",
            "query",
            "Alias of `last`; wins when both are given.",
            number,
        ),
    ];
    let full = if allow_full {
        "`true` or `1`: the log from its start (without other bounds), up to the bound, with `hasMore` when there is more."
    } else {
        "Not allowed on this collection (`full_not_allowed`)."
    };
    // Any other value is no `full`: the server never refuses it, so it is a string.
    params.push(optional_param(
        "full",
        "query",
        full,
        json!({ "type": "string" }),
    ));
    params
}

/// `POST /[ns/]push/<storage path>[/<member>]`: a document, an append or a blob.
pub(super) fn push(scope: &Scope, c: &Collection) -> Value {
    let too_large = format!(
        "`Payload too large`: over {} bytes (or over the authenticator's limit for a signed body).",
        c.max_body_bytes
    );
    let r = Responses::default()
        .auth(WRITE_FORBIDDEN)
        .not_found()
        .rate_limited(c.rate_limits.push.is_some())
        .error(413, &too_large);
    let (r, body) = match &c.payload {
        Payload::Binary(patterns) => blob_push(r, patterns, c),
        Payload::Json => json_push(r, c),
    };
    let mut op = collection_op(scope, c, "push", "Push to", r);
    op.parameters = template_params(c, usize::MAX);
    op.security = Some(security(is_public(c, Action::Push)));
    op.body = Some(body);
    op.build()
}

/// A binary body or response in each of the collection's media type patterns.
fn binary_content(patterns: &[crate::config::MimePattern]) -> serde_json::Map<String, Value> {
    patterns
        .iter()
        .map(|p| {
            (
                p.as_str().to_owned(),
                json!({ "schema": { "type": "string", "format": "binary" } }),
            )
        })
        .collect()
}

fn blob_push(
    r: Responses,
    patterns: &[crate::config::MimePattern],
    c: &Collection,
) -> (Responses, Value) {
    let content = binary_content(patterns);
    let allowed = serde_json::to_string(&c.allowed_mime_types).unwrap_or_default();
    let r = r
        .json(200, "Stored.", schema_ref("BlobPushResult"))
        .error(
            400,
            "`Invalid path parameter`, `Invalid Content-Length`, `Invalid request body`.",
        )
        .error(409, "`Key conflicts with another document`.")
        .error(
            415,
            &format!("`Content-Type '<type>' is not allowed. Allowed: {allowed}`."),
        );
    let body = json!({ "required": true, "description": "The blob's bytes, streamed.", "content": content });
    (r, body)
}

fn json_push(r: Responses, c: &Collection) -> (Responses, Value) {
    let data = c
        .object_schema
        .as_ref()
        .map_or_else(|| json!({ "type": "object" }), |s| s.schema().clone());
    let bad_request = if c.object_schema.is_some() {
        json!({ "anyOf": [ schema_ref("SchemaError"), schema_ref("Error") ] })
    } else {
        schema_ref("Error")
    };
    let common = "`Invalid path parameter`, `Invalid Content-Length`, `Invalid request body`, `Body must be a JSON object`, `Body nesting too deep`, `Missing or invalid data`, `Schema validation failed: <message>` (with `path` and `validator`)";
    let proof = json!({ "type": "string" });
    let together =
        json!({ "authorPubkey": ["authorSignature"], "authorSignature": ["authorPubkey"] });
    let (schema, r) = match &c.append_only {
        Some(log) => {
            let mut required = vec!["data"];
            if log.require_author_signature {
                required.extend(["authorPubkey", "authorSignature"]);
            }
            let schema = json!({
                "type": "object",
                "description": "An element to append; `ts` (ms) must be after the last element's and at most 5 minutes ahead; omitted or null, the server picks it.",
                "required": required,
                "properties": { "data": data, "ts": { "type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX }, "authorPubkey": proof, "authorSignature": proof },
                "dependentRequired": together,
            });
            let r = r
                .json(200, "Appended (`timestamp` is the element's).", schema_ref("PushResult"))
                .json(400, &format!("{common}, `ts must be a non-negative integer`, `ts is too far in the future`, `append requires authorPubkey and authorSignature`."), bad_request)
                .json(409, "`non_monotonic_timestamp`, `hash_mismatch` (writers kept racing), `Key conflicts with another document`, or `append_limit_exceeded` with the log's `limit`.",
                    json!({ "anyOf": [ schema_ref("AppendLimitError"), schema_ref("Error") ] }));
            (schema, r)
        }
        None => {
            let schema = json!({
                "type": "object",
                "description": "`baseHash`: the hash the client last pulled, or null to create. `authorPubkey` and `authorSignature` come together.",
                "required": ["data"],
                "properties": { "data": data, "baseHash": { "type": ["string", "null"] }, "authorPubkey": proof, "authorSignature": proof },
                "dependentRequired": together,
            });
            let r = r
                .json(200, "Stored.", schema_ref("PushResult"))
                .json(400, &format!("{common}, `baseHash must be a string or null`, `author proof requires authorPubkey and authorSignature`."), bad_request)
                .error(409, "`hash_mismatch` (`baseHash` is not the stored hash), `Key conflicts with another document`.");
            (schema, r)
        }
    };
    let r = r.error(415, "`Content-Type must be application/json`.");
    let body = json!({ "required": true, "content": { "application/json": { "schema": schema } } });
    (r, body)
}

/// `GET /[ns/]list/<parent path>`: the keys one level below the prefix.
pub(super) fn list(scope: &Scope, c: &Collection) -> Value {
    let r = Responses::default()
        .auth(READ_FORBIDDEN)
        .not_found()
        .rate_limited(c.rate_limits.list.is_some())
        .json(
            200,
            "A page of names, sorted; `after` the last one for the next page. With `include=values`, `values`: each listed document's pull body (`null` where the caller may not read it), at most 100 documents and 4 MiB of bodies per page.",
            schema_ref("ListPage"),
        )
        .error(
            400,
            "`Invalid path parameter`, `Invalid limit parameter` (an integer from 1 to 1000), `Invalid include parameter`.",
        );
    let mut op = collection_op(scope, c, "list", "List", r);
    let parent = c.storage_path.segments().len().saturating_sub(1);
    op.parameters = template_params(c, parent);
    op.parameters.push(optional_param(
        "limit",
        "query",
        "Page size (default 100).",
        json!({ "type": "integer", "minimum": 1, "maximum": 1000 }),
    ));
    op.parameters.push(optional_param(
        "after",
        "query",
        "Exclusive cursor: names after this one.",
        json!({ "type": "string" }),
    ));
    if !c.is_binary() && c.append_only.is_none() {
        op.parameters.push(optional_param(
            "include",
            "query",
            "`values`: each listed document's pull body too.",
            json!({ "type": "string", "enum": ["values"] }),
        ));
    }
    op.security = Some(security(is_public(c, Action::List)));
    op.build()
}

/// `GET /[ns/]pull/<bundle path>`: every member the caller may read.
pub(super) fn bundle(scope: &Scope, name: &str, members: &[&Collection]) -> Value {
    let public = members.iter().all(|m| is_public(m, Action::Pull));
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let r = Responses::default()
        .auth("`Forbidden`: `{identity}` is not the caller's (members the caller may not read are left out, not refused).")
        .not_found()
        .json(200, "The readable members' documents.", schema_ref("BundleResponse"))
        .error(400, "`Invalid path parameter`.");
    let mut op = Op::new(
        format!("pullBundle:{}", scope.qualified(name)),
        format!(
            "Pull bundle `{}` (members: {})",
            scope.qualified(name),
            names.join(", ")
        ),
        r,
    );
    op.tag = members.first().map(|m| scope.tag(m));
    op.parameters = members
        .first()
        .map(|m| template_params(m, usize::MAX))
        .unwrap_or_default();
    op.security = Some(security(public));
    op.info = Some(json!({ "bundle": name, "members": names, "publicRead": public }));
    op.build()
}

/// `GET /[ns/]batch/pull`.
pub(super) fn batch(scope: &Scope) -> Value {
    let r = Responses::default()
        .json(200, "One array per collection name, one entry per parameter set: the document, or `{error}` (`Collection not found`, `Invalid path parameter`, `Missing required path parameter`, `Forbidden`, `binary_not_supported`, `append_params_not_supported`, `pull_bound_required`, `Internal error`, ...).", schema_ref("BatchResponse"))
        .error(400, "`Missing collections parameter`, `Too many collections`, `Invalid params parameter`, `Invalid appendParams parameter`, `appendParams[\"<name>\"]: full is not allowed in batch pull`, `appendParams length mismatch: must equal params length for each collection`, `Batch append element budget exceeded`.");
    let mut op = Op::new(
        format!("batchPull:{}", scope.namespace.unwrap_or("")),
        "Pull many documents of this scope at once".to_owned(),
        r,
    );
    let bound = json!({ "anyOf": [
        { "type": "integer", "minimum": 0, "maximum": u64::MAX },
        { "type": "string", "pattern": "^[0-9]{1,19}$" },
        { "type": "null" },
    ] });
    op.parameters = vec![
        json!({
            "name": "collections", "in": "query", "required": true,
            "description": "Comma-separated collection names (duplicates ignored; at most 100 documents in all).",
            "schema": { "type": "string", "pattern": "[^,\\s]" },
        }),
        json!({
            "name": "params", "in": "query", "required": false,
            "description": "Path parameters per collection: a list of parameter sets (`{name: string or number}`), one entry each; `{identity}` defaults to the caller's. A value that breaks the rules is an entry's `Invalid path parameter`.",
            "content": { "application/json": { "schema": {
                "type": "object",
                "additionalProperties": { "type": "array", "items": { "type": "object" } },
            } } },
        }),
        json!({
            "name": "appendParams", "in": "query", "required": false,
            "description": "Log bounds per collection, one entry (or null) per parameter set; `full` is refused.",
            "content": { "application/json": { "schema": {
                "type": "object",
                "additionalProperties": { "type": "array", "items": { "anyOf": [
                    { "type": "null" },
                    { "type": "object", "properties": { "since": bound, "last": bound, "limit": bound } },
                ] } },
            } } },
        }),
    ];
    // A failed authentication reads as anonymous: credentials are always optional.
    op.security = Some(json!([{}, signed()]));
    op.build()
}

/// `GET /[ns/]events`: live changes as Server-Sent Events.
pub(super) fn events(scope: &Scope) -> Value {
    let r = Responses::default()
        .with(200, json!({
            "description": "An endless Server-Sent Events stream: a `: connected` comment with the stream's `id`, then one frame per accepted write to a named document (an `id:` and `data:` `{namespace, collection, path, hash, timestamp}`, never the data), a `: keep-alive` comment every 20 s; it ends after 15 minutes, at shutdown, or when the subscriber falls 256 frames behind. Reconnecting with `Last-Event-ID`, the stream first replays what was missed, or sends `event: pull` when the node cannot tell.",
            "content": { "text/event-stream": { "schema": { "type": "string" } } },
        }))
        .error(400, "`Missing paths parameter`, `too many candidates` (more than 64 paths), `Invalid path parameter`.")
        .error(401, "`Unauthorized`: a named document needs credentials, and they are missing, invalid, expired, revoked or replayed.")
        .error(403, READ_FORBIDDEN)
        .error(404, "`Collection not found`: a path names no document of this scope.")
        .error(429, "`Too many concurrent requests`: the caller holds 8 subscriptions, its IP 32, or the node 1,000; or a rate limit (`Rate limit exceeded`, with `Retry-After`).");
    let mut op = Op::new(
        format!("events:{}", scope.namespace.unwrap_or("")),
        "Live changes to the named documents (Server-Sent Events)".to_owned(),
        r,
    );
    op.parameters = vec![json!({
        "name": "paths", "in": "query", "required": true,
        "description": "Comma-separated document paths, as in a pull (`users/abc/notes`), at most 64; each is authorised as a pull of it.",
        "schema": { "type": "string", "minLength": 1 },
    })];
    op.security = Some(json!([{}, signed()]));
    op.build()
}

/// `GET /health`.
pub(super) fn health() -> Value {
    let r = Responses::default().json(200, "Alive.", schema_ref("Health"));
    Op::new("health".into(), "Liveness".into(), r).build()
}

/// `GET /config`.
pub(super) fn client_config() -> Value {
    let r = Responses::default()
        .json(200, "What clients may know about the collections (every one, or those whose roles the caller holds).", schema_ref("ClientConfig"))
        .not_found();
    let mut op = Op::new(
        "clientConfig".into(),
        "The collections, for clients (when enabled; otherwise 404)".into(),
        r,
    );
    op.security = Some(json!([{}, signed()]));
    op.build()
}

/// `GET /openapi.json`.
pub(super) fn openapi() -> Value {
    let r = Responses::default()
        .json(200, "This document.", json!({ "type": "object" }))
        .not_found();
    Op::new(
        "openapi".into(),
        "This OpenAPI document (when enabled; otherwise 404)".into(),
        r,
    )
    .build()
}
