//! Validation with the reference's exact messages, then conversion to typed values.

use super::names::SYSTEM_ROOT;
use super::raw::{RawCollection, RawConfig, RawNamespace};
use super::routes::{RouteTable, keys_overlap};
use super::tenancy::{self, Isolation};
use super::{
    AppendOnly, Bucket, Collection, CollectionName, ConfigError, DEFAULT_MAX_BODY_BYTES,
    Encryption, FieldPermission, MimePattern, Namespace, NamespaceName, PathTemplate, Payload,
    RateLimits, RateRule, RateWindow, RestrictedAction, Restriction, RoleSet, SyncConfig,
};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use starfish_protocol::canonical::non_negative_integer;
use std::collections::HashSet;
use std::num::NonZeroU64;
use std::sync::Arc;

const MIME_JSON: &str = "application/json";
const RATE_ACTIONS: [&str; 3] = ["push", "pull", "list"];

fn deserialize<T: DeserializeOwned>(value: Value, context: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ConfigError::Shape(format!("{context}{inner}"))
        } else {
            ConfigError::Shape(format!("{context}{path}: {inner}"))
        }
    })
}

fn js_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) | Value::Object(_) => "object",
    }
}

pub(super) fn load_value(value: Value) -> Result<SyncConfig, ConfigError> {
    let Value::Object(mut top) = value else {
        return Err(ConfigError::Shape("the config must be an object".into()));
    };
    // The reference checks the namespaces' shape before anything else.
    let raw_namespaces = raw_scopes(top.remove("namespaces"), "namespaces", "namespace")?;
    let raw_templates = raw_scopes(
        top.remove("namespaceTemplates"),
        "namespaceTemplates",
        "namespace template",
    )?;
    let raw: RawConfig = deserialize(Value::Object(top), "")?;
    build(raw, raw_namespaces, raw_templates)
}

/// The `namespaces` (or `namespaceTemplates`) object, each value's shape checked.
fn raw_scopes(
    value: Option<Value>,
    field: &str,
    what: &str,
) -> Result<Vec<(String, RawNamespace)>, ConfigError> {
    let mut out = Vec::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, ns) in map {
                if !ns.is_object() {
                    return Err(ConfigError::Shape(format!(
                        "{what} \"{name}\" must be an object, got {}",
                        js_type(&ns)
                    )));
                }
                let ns: RawNamespace = deserialize(ns, &format!("{field}.{name}."))?;
                out.push((name, ns));
            }
        }
        Some(_) => {
            return Err(ConfigError::Shape(format!("\"{field}\" must be an object")));
        }
    }
    Ok(out)
}

/// One namespace (or namespace template) of the config.
fn namespace(
    name: &str,
    ns: &RawNamespace,
    label: &str,
    global: Option<RateFields>,
    errors: &mut Vec<String>,
) -> Option<Namespace> {
    let ns_restrictions = restrictions(ns.restrictions.as_ref(), label, errors);
    let parsed = NamespaceName::parse(name);
    if let Err(problems) = &parsed {
        errors.extend(problems.iter().map(|p| p.message(name)));
    }
    if ns.collections.is_empty() {
        errors.push(format!("{label}must contain at least one collection"));
    }
    let cols = validate_scope(&ns.collections, label, global, errors);
    let isolation = tenancy::isolation(ns.isolation.as_ref(), label, errors);
    let trusted_roots = tenancy::trusted_roots(ns.trusted_roots.as_ref(), label, errors);
    let quota = tenancy::quota(ns.quota.as_ref(), label, errors);
    let limits = tenancy::limits(ns.limits.as_ref(), label, errors);
    let encrypt_at_rest = match &ns.encrypt_at_rest {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errors.push(format!("{label}encryptAtRest must be true or false"));
            false
        }
    };
    Some(Namespace {
        encrypt_at_rest,
        quota,
        limits,
        name: parsed.ok()?,
        collections: cols,
        restrictions: ns_restrictions,
        routes: Arc::default(),
        isolation,
        trusted_roots: trusted_roots.map(Into::into),
    })
}

/// `windowMs` and `maxRequests` as written (each may be missing): the global ones, or
/// what a rate rule inherits.
#[derive(Default, Clone, Copy)]
struct RateFields {
    window_ms: Option<u64>,
    max_requests: Option<u64>,
}

impl RateFields {
    /// These fields, replaced by those `obj` sets to positive integers.
    fn overridden_by(self, obj: &Map<String, Value>) -> Self {
        Self {
            window_ms: pos_int(obj.get("windowMs")).or(self.window_ms),
            max_requests: pos_int(obj.get("maxRequests")).or(self.max_requests),
        }
    }

    /// The window, when both fields are set.
    fn window(self) -> Option<RateWindow> {
        window(self.window_ms, self.max_requests)
    }
}

fn build(
    raw: RawConfig,
    raw_namespaces: Vec<(String, RawNamespace)>,
    raw_templates: Vec<(String, RawNamespace)>,
) -> Result<SyncConfig, ConfigError> {
    let mut errors = Vec::new();
    if let Some(v) = &raw.version {
        if v.as_u64() != Some(1) {
            errors.push(format!("version must be 1, got {v}"));
        }
    }
    let global = global_rate_limit(raw.rate_limit.as_ref(), &mut errors);
    let collections = validate_scope(&raw.collections, "", global, &mut errors);
    let top_restrictions = restrictions(raw.restrictions.as_ref(), "", &mut errors);
    let default_isolation =
        tenancy::isolation(raw.isolation.as_ref(), "", &mut errors).unwrap_or_default();

    let namespaces = config_namespaces(&raw_namespaces, global, &mut errors);
    let mut templates = namespace_templates(&raw_templates, global, &mut errors);
    if namespaces.iter().any(|ns| ns.name.as_str() == SYSTEM_ROOT) {
        errors.push(format!(
            "Namespace \"{SYSTEM_ROOT}\": name is reserved for the server's own routes"
        ));
    }
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    let mut warnings = collect_warnings(&raw.collections, "");
    for (name, ns) in &raw_namespaces {
        warnings.extend(collect_warnings(
            &ns.collections,
            &format!("Namespace \"{name}\": "),
        ));
    }
    let routes = route_table(&collections, "", &mut errors);
    let mut namespaces = namespaces;
    for ns in &mut namespaces {
        let label = format!("Namespace \"{}\": ", ns.name);
        ns.routes = route_table(&ns.collections, &label, &mut errors);
    }
    for t in &mut templates {
        let label = format!("Namespace template \"{}\": ", t.name);
        t.routes = route_table(&t.collections, &label, &mut errors);
    }
    if !errors.is_empty() {
        return Err(ConfigError::Invalid(errors));
    }
    let config = SyncConfig {
        collections,
        namespaces,
        restrictions: top_restrictions,
        warnings: Vec::new(),
        base_warnings: warnings,
        routes,
        isolation: Isolation::Shared,
        templates,
    };
    Ok(config.with_isolation(default_isolation))
}

/// The top-level `rateLimit`, the default of every collection's.
fn global_rate_limit(raw: Option<&Value>, errors: &mut Vec<String>) -> Option<RateFields> {
    match raw {
        Some(Value::Object(rl)) => Some(RateFields {
            window_ms: pos_int(rl.get("windowMs")),
            max_requests: pos_int(rl.get("maxRequests")),
        }),
        // The reference keeps only a truthy value.
        Some(Value::Null | Value::Bool(false)) | None => None,
        Some(_) => {
            errors.push("rateLimit must be an object".into());
            None
        }
    }
}

/// The config's `namespaces`.
fn config_namespaces(
    raw: &[(String, RawNamespace)],
    global: Option<RateFields>,
    errors: &mut Vec<String>,
) -> Vec<Namespace> {
    let mut namespaces = Vec::new();
    for (name, ns) in raw {
        let label = format!("Namespace \"{name}\": ");
        if let Some(ns) = namespace(name, ns, &label, global, errors) {
            namespaces.push(ns);
        }
    }
    namespaces
}

/// The config's `namespaceTemplates`, which runtime namespaces are made from; none
/// may be `shared`.
fn namespace_templates(
    raw: &[(String, RawNamespace)],
    global: Option<RateFields>,
    errors: &mut Vec<String>,
) -> Vec<Namespace> {
    let mut templates = Vec::new();
    for (name, t) in raw {
        let label = format!("Namespace template \"{name}\": ");
        if let Some(t) = namespace(name, t, &label, global, errors) {
            if t.isolation == Some(Isolation::Shared) {
                errors.push(format!(
                    "{label}isolation \"shared\" would give every namespace made from it the same documents"
                ));
            }
            templates.push(t);
        }
    }
    templates
}

fn route_table(
    collections: &[Arc<Collection>],
    label: &str,
    errors: &mut Vec<String>,
) -> Arc<RouteTable> {
    match RouteTable::build(collections, label) {
        Ok(table) => Arc::new(table),
        Err(problems) => {
            errors.extend(problems);
            Arc::default()
        }
    }
}

/// `n == null || (Number.isInteger(n) && n > 0)` of the reference.
fn is_pos_int(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(v) => pos_int(Some(v)).is_some(),
    }
}

fn pos_int(v: Option<&Value>) -> Option<u64> {
    non_negative_integer(v?.as_f64()?).filter(|n| *n > 0)
}

fn present(v: Option<&Value>) -> bool {
    !matches!(v, None | Some(Value::Null))
}

fn window(window_ms: Option<u64>, max_requests: Option<u64>) -> Option<RateWindow> {
    Some(RateWindow {
        window_ms: NonZeroU64::new(window_ms?)?,
        max_requests: NonZeroU64::new(max_requests?)?,
    })
}

fn is_binary(mimes: &[String]) -> bool {
    !mimes.iter().any(|m| m.eq_ignore_ascii_case(MIME_JSON))
}

/// `appendOnly` after the reference's coercion: `true` -> `{type}`, an object gets a
/// default `type`, anything falsy -> absent.
fn coerce_append(v: Option<&Value>) -> Option<Map<String, Value>> {
    match v? {
        Value::Bool(true) => Some(Map::from_iter([(
            "type".into(),
            Value::from("by_timestamp"),
        )])),
        Value::Object(obj) => {
            let mut obj = obj.clone();
            if !present(obj.get("type")) {
                obj.insert("type".into(), Value::from("by_timestamp"));
            }
            Some(obj)
        }
        _ => None,
    }
}

/// One collection's settings after the reference's defaults, shared by its checks.
struct Resolved<'a> {
    raw: &'a RawCollection,
    /// The message prefix, `Collection "<name>": ` within its scope.
    p: String,
    pull_only: bool,
    push_only: bool,
    listable: bool,
    root_only: bool,
    mimes: Vec<String>,
    binary: bool,
    bundle: Option<String>,
    append: Option<Map<String, Value>>,
}

impl<'a> Resolved<'a> {
    /// Applies the reference's defaults to `raw`.
    fn new(raw: &'a RawCollection, scope: &str) -> Self {
        let mimes = raw
            .allowed_mime_types
            .clone()
            .unwrap_or_else(|| vec![MIME_JSON.to_owned()]);
        Self {
            raw,
            p: format!("{scope}Collection \"{}\": ", raw.name),
            pull_only: raw.pull_only.unwrap_or(false),
            push_only: raw.push_only.unwrap_or(false),
            listable: raw.listable.unwrap_or(false),
            root_only: raw.root_only.unwrap_or(false),
            binary: is_binary(&mimes),
            mimes,
            bundle: raw.bundle.clone().filter(|b| !b.is_empty()),
            append: coerce_append(raw.append_only.as_ref()),
        }
    }
}

/// The typed values a collection's checks produced, for [`build_collection`].
struct Typed {
    template: Option<PathTemplate>,
    encryption: Encryption,
    object_schema: Option<crate::config::schema::ObjectSchema>,
    rate_limits: RateLimits,
    restrictions: Vec<Restriction>,
    queue: Option<crate::config::queue::QueueSettings>,
}

/// Checks one scope's collections and converts those without errors.
fn validate_scope(
    raws: &[RawCollection],
    scope: &str,
    global: Option<RateFields>,
    errors: &mut Vec<String>,
) -> Vec<Arc<Collection>> {
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for raw in raws {
        let err_count = errors.len();
        if !names.insert(raw.name.as_str()) {
            errors.push(format!(
                "{scope}Duplicate collection name: \"{}\"",
                raw.name
            ));
        }
        let c = Resolved::new(raw, scope);
        let typed = check_collection(&c, global, errors);
        if errors.len() != err_count {
            continue;
        }
        if let Some(collection) = build_collection(c, typed) {
            out.push(Arc::new(collection));
        }
    }
    check_bundles(raws, scope, errors);
    out
}

/// All of one collection's checks: the reference's, in its order, then ours.
fn check_collection(c: &Resolved, global: Option<RateFields>, errors: &mut Vec<String>) -> Typed {
    let (raw, p) = (c.raw, c.p.as_str());
    if raw.storage_path.starts_with('/') {
        errors.push(format!("{p}storagePath must not start with /"));
    }
    if c.pull_only && c.push_only {
        errors.push(format!("{p}cannot be both pullOnly and pushOnly"));
    }
    if let Some(a) = &c.append {
        check_append(c, a, errors);
    }
    if c.listable {
        check_listable(c, errors);
    }
    check_roles(c, errors);
    check_payload(c, errors);
    let rate_limits = rate_limits(raw.rate_limit.as_ref(), p, global, errors);
    let restrictions = restrictions(raw.restrictions.as_ref(), p, errors);

    // Checks of our own, after the reference's, in the same message style.
    let template = parse_template(c, errors);
    let encryption = parse_encryption(c, errors);
    let object_schema = compile_schema(c, errors);
    check_positive_sizes(c, errors);
    let queue = crate::config::queue::settings(raw.queue.as_ref(), template.as_ref(), p, errors);
    Typed {
        template,
        encryption,
        object_schema,
        rate_limits,
        restrictions,
        queue,
    }
}

/// `appendOnly`: a supported type, not with binary, pullOnly or a persisted bundle,
/// positive numbers, and numbers only when persisted.
fn check_append(c: &Resolved, a: &Map<String, Value>, errors: &mut Vec<String>) {
    let p = &c.p;
    let persist = a.get("persist") != Some(&Value::Bool(false));
    let ty = a.get("type").cloned().unwrap_or(Value::Null);
    if ty != "by_timestamp" {
        let shown = match &ty {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        errors.push(format!(
            "{p}appendOnly.type \"{shown}\" is not supported (expected \"by_timestamp\")"
        ));
    }
    if c.binary {
        errors.push(format!(
            "{p}appendOnly cannot be used with binary collections"
        ));
    }
    if c.pull_only {
        errors.push(format!(
            "{p}appendOnly cannot be used with pullOnly (push routes are disabled)"
        ));
    }
    if persist && c.bundle.is_some() {
        errors.push(format!(
            "{p}appendOnly with persist=true cannot be used with bundle"
        ));
    }
    const NUMERIC: [&str; 4] = [
        "maxItems",
        "chunkSize",
        "maxPullLimit",
        "maxCheckpointAgeMs",
    ];
    for field in NUMERIC {
        if !is_pos_int(a.get(field)) {
            errors.push(format!("{p}appendOnly.{field} must be a positive integer"));
        }
    }
    if !persist {
        for field in NUMERIC {
            if present(a.get(field)) {
                errors.push(format!(
                    "{p}appendOnly.{field} requires persist=true (nothing is stored when persist=false)"
                ));
            }
        }
    }
}

/// `listable`: the path ends in a parameter, and documents are stored unbundled.
fn check_listable(c: &Resolved, errors: &mut Vec<String>) {
    let (path, p) = (&c.raw.storage_path, &c.p);
    if !path.contains('{') {
        errors.push(format!(
            "{p}listable requires at least one path parameter in storagePath"
        ));
    } else {
        let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        if !is_param_segment(last) {
            errors.push(format!(
                "{p}listable requires the last storagePath segment to be a path parameter (e.g. {{day}}), got \"{last}\""
            ));
        }
    }
    if c.append
        .as_ref()
        .is_some_and(|a| a.get("persist") == Some(&Value::Bool(false)))
    {
        errors.push(format!(
            "{p}listable cannot be used with appendOnly+persist=false (no documents are stored)"
        ));
    }
    if c.bundle.is_some() {
        errors.push(format!(
            "{p}listable cannot be used with bundle (bundled collections share storage paths)"
        ));
    }
}

/// True for a whole-segment parameter such as `{day}`.
fn is_param_segment(segment: &str) -> bool {
    segment.len() > 2
        && segment.starts_with('{')
        && segment.ends_with('}')
        && !segment[1..segment.len() - 1].contains('}')
}

/// Roles: a root-only collection is never public, and readable ones name readers.
fn check_roles(c: &Resolved, errors: &mut Vec<String>) {
    let (raw, p) = (c.raw, &c.p);
    if c.root_only
        && (raw.read_roles.iter().any(|r| r == "public")
            || raw.write_roles.iter().any(|r| r == "public"))
    {
        errors.push(format!(
            "{p}rootOnly cannot be combined with the \"public\" role in readRoles/writeRoles (a root-only collection is never public)"
        ));
    }
    if !c.pull_only && raw.read_roles.is_empty() {
        errors.push(format!(
            "{p}readRoles must not be empty (use [\"public\"] for public access)"
        ));
    }
}

/// Payload: binary collections have no schema and no bundle; some media type is allowed.
fn check_payload(c: &Resolved, errors: &mut Vec<String>) {
    let p = &c.p;
    if c.binary {
        if c.raw.object_schema.is_some() {
            errors.push(format!("{p}binary collections cannot have objectSchema"));
        }
        if c.bundle.is_some() {
            errors.push(format!("{p}binary collections cannot be part of a bundle"));
        }
    }
    if c.mimes.is_empty() {
        errors.push(format!(
            "{p}allowedMimeTypes must contain at least one pattern"
        ));
    }
}

/// `storagePath` as a template; not parsed when it starts with `/` (already reported).
fn parse_template(c: &Resolved, errors: &mut Vec<String>) -> Option<PathTemplate> {
    if c.raw.storage_path.starts_with('/') {
        return None;
    }
    match PathTemplate::parse(&c.raw.storage_path) {
        Ok(t) => Some(t),
        Err(e) => {
            errors.push(format!("{}{e}", c.p));
            None
        }
    }
}

/// `encryption` is `none` (the default) or `delegated`.
fn parse_encryption(c: &Resolved, errors: &mut Vec<String>) -> Encryption {
    match c.raw.encryption.as_deref() {
        None | Some("none") => Encryption::None,
        Some("delegated") => Encryption::Delegated,
        Some(other) => {
            errors.push(format!(
                "{}encryption must be \"none\" or \"delegated\", got \"{other}\"",
                c.p
            ));
            Encryption::None
        }
    }
}

/// `objectSchema` of a JSON collection compiles (binary ones were reported already).
fn compile_schema(
    c: &Resolved,
    errors: &mut Vec<String>,
) -> Option<crate::config::schema::ObjectSchema> {
    match &c.raw.object_schema {
        Some(schema) if !c.binary => match crate::config::schema::ObjectSchema::compile(schema) {
            Ok(s) => Some(s),
            Err(e) => {
                errors.push(format!(
                    "{}objectSchema is not a valid JSON Schema: {e}",
                    c.p
                ));
                None
            }
        },
        _ => None,
    }
}

/// `maxBodyBytes`, `cacheDurationMs` and `ttlMs` are not 0.
fn check_positive_sizes(c: &Resolved, errors: &mut Vec<String>) {
    let raw = c.raw;
    for (field, value) in [
        ("maxBodyBytes", raw.max_body_bytes),
        ("cacheDurationMs", raw.cache_duration_ms),
        ("ttlMs", raw.ttl_ms),
    ] {
        if value == Some(0) {
            errors.push(format!("{}{field} must be a positive integer", c.p));
        }
    }
}

/// The typed collection from a checked one; `None` without a storage template.
fn build_collection(c: Resolved, typed: Typed) -> Option<Collection> {
    let raw = c.raw;
    let storage_path = typed.template?;
    let max_body = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    let client_info = client_info(raw, &c.mimes, c.append.as_ref());
    Some(Collection {
        name: CollectionName::new(&raw.name),
        storage_path,
        read_roles: RoleSet::parse(&raw.read_roles),
        write_roles: RoleSet::parse(&raw.write_roles),
        encryption: typed.encryption,
        max_body_bytes: NonZeroU64::new(max_body).unwrap_or(NonZeroU64::MIN),
        max_body_bytes_configured: raw.max_body_bytes.is_some(),
        payload: if c.binary {
            Payload::Binary(c.mimes.iter().map(|m| MimePattern(m.clone())).collect())
        } else {
            Payload::Json
        },
        allowed_mime_types: c.mimes,
        rate_limits: typed.rate_limits,
        cache_duration_ms: raw.cache_duration_ms,
        object_schema: typed.object_schema,
        pull_only: c.pull_only,
        push_only: c.push_only,
        force_full_fetch: raw.force_full_fetch.unwrap_or(false),
        bundle: c.bundle,
        append_only: c.append.map(|a| typed_append(&a)),
        ttl_ms: raw.ttl_ms.and_then(NonZeroU64::new),
        field_permissions: field_permissions(raw),
        keyring_path: raw.keyring_path.clone(),
        listable: c.listable,
        root_only: c.root_only,
        restrictions: typed.restrictions,
        queue: typed.queue.map(Arc::new),
        client_info,
    })
}

/// `fieldPermissions`, by field, with parsed role sets.
fn field_permissions(raw: &RawCollection) -> Vec<(String, FieldPermission)> {
    raw.field_permissions
        .iter()
        .flatten()
        .map(|(field, perm)| {
            (
                field.clone(),
                FieldPermission {
                    read: RoleSet::parse(&perm.read_roles),
                    write: RoleSet::parse(&perm.write_roles),
                },
            )
        })
        .collect()
}

/// Bundles: every member shares one storagePath.
fn check_bundles(raws: &[RawCollection], scope: &str, errors: &mut Vec<String>) {
    let mut bundles: Vec<(&str, &str)> = Vec::new();
    for raw in raws {
        let Some(bundle) = raw.bundle.as_deref().filter(|b| !b.is_empty()) else {
            continue;
        };
        match bundles.iter_mut().find(|(b, _)| *b == bundle) {
            Some((_, path)) => {
                if *path != raw.storage_path {
                    errors.push(format!(
                        "{scope}Bundle \"{bundle}\": all collections must share the same storagePath (found \"{path}\" and \"{}\")",
                        raw.storage_path
                    ));
                }
                *path = &raw.storage_path;
            }
            None => bundles.push((bundle, &raw.storage_path)),
        }
    }
}

/// `toCollectionClientInfo`: name, maxBodyBytes, encryption, allowedMimeTypes, then
/// only the flags that are set.
fn client_info(
    raw: &RawCollection,
    mimes: &[String],
    append: Option<&Map<String, Value>>,
) -> Value {
    let mut info = Map::new();
    info.insert("name".into(), Value::from(raw.name.as_str()));
    if let Some(n) = raw.max_body_bytes {
        info.insert("maxBodyBytes".into(), Value::from(n));
    }
    if let Some(e) = &raw.encryption {
        info.insert("encryption".into(), Value::from(e.as_str()));
    }
    info.insert("allowedMimeTypes".into(), Value::from(mimes.to_vec()));
    if raw.pull_only == Some(true) {
        info.insert("pullOnly".into(), Value::Bool(true));
    }
    if raw.push_only == Some(true) {
        info.insert("pushOnly".into(), Value::Bool(true));
    }
    if let Some(a) = append {
        info.insert("appendOnly".into(), Value::Object(a.clone()));
    }
    if let Some(ttl) = raw.ttl_ms {
        info.insert("ttlMs".into(), Value::from(ttl));
    }
    if raw.force_full_fetch == Some(true) {
        info.insert("forceFullFetch".into(), Value::Bool(true));
    }
    Value::Object(info)
}

fn typed_append(a: &Map<String, Value>) -> AppendOnly {
    let num = |f: &str| pos_int(a.get(f)).and_then(NonZeroU64::new);
    AppendOnly {
        field: a
            .get("field")
            .and_then(Value::as_str)
            .unwrap_or("items")
            .to_owned(),
        persist: a.get("persist") != Some(&Value::Bool(false)),
        max_items: num("maxItems"),
        chunk_size: num("chunkSize"),
        require_author_signature: a.get("requireAuthorSignature") != Some(&Value::Bool(false)),
        allow_full: a.get("allowFull") != Some(&Value::Bool(false)),
        max_pull_limit: num("maxPullLimit"),
        max_checkpoint_age_ms: num("maxCheckpointAgeMs"),
    }
}

fn bucket_of(v: Option<&Value>) -> Option<Result<Bucket, String>> {
    match v? {
        Value::Null => None,
        Value::String(s) if s == "identity" => Some(Ok(Bucket::Identity)),
        Value::String(s) if s == "ip" => Some(Ok(Bucket::Ip)),
        Value::String(s) if s == "identity+ip" => Some(Ok(Bucket::IdentityIp)),
        Value::String(s) => Some(Err(s.clone())),
        other => Some(Err(other.to_string())),
    }
}

/// The bucket `v` names, or `identity` when it is missing or invalid (already reported).
fn bucket_or_identity(v: Option<&Value>) -> Bucket {
    bucket_of(v)
        .and_then(Result::ok)
        .unwrap_or(Bucket::Identity)
}

/// `<at>.bucket` is missing or a known bucket.
fn check_bucket(obj: &Map<String, Value>, at: &str, errors: &mut Vec<String>) {
    if let Some(Err(b)) = bucket_of(obj.get("bucket")) {
        errors.push(format!(
            "{at}.bucket must be \"identity\", \"ip\", or \"identity+ip\", got \"{b}\""
        ));
    }
}

/// `<at>.windowMs` and `<at>.maxRequests` are missing or positive integers.
fn check_window_fields(obj: &Map<String, Value>, at: &str, errors: &mut Vec<String>) {
    for f in ["windowMs", "maxRequests"] {
        if !is_pos_int(obj.get(f)) {
            errors.push(format!("{at}.{f} must be a positive integer"));
        }
    }
}

/// A collection's `rateLimit`: its own fields, then one rule per action.
fn rate_limits(
    v: Option<&Value>,
    p: &str,
    global: Option<RateFields>,
    errors: &mut Vec<String>,
) -> RateLimits {
    let empty = Map::new();
    let rl = match v {
        None | Some(Value::Null | Value::Bool(false)) => return RateLimits::default(),
        Some(Value::Bool(true)) => &empty,
        Some(Value::Object(o)) => o,
        Some(_) => {
            errors.push(format!("{p}rateLimit must be an object or a boolean"));
            return RateLimits::default();
        }
    };
    let at = format!("{p}rateLimit");
    check_window_fields(rl, &at, errors);
    check_bucket(rl, &at, errors);
    let inherited = global.unwrap_or_default().overridden_by(rl);
    let mut out = RateLimits::default();
    for action in RATE_ACTIONS {
        let resolved = match rl.get(action) {
            Some(Value::Object(rule)) => {
                rate_rule(rule, &format!("{at}.{action}"), inherited, errors)
            }
            None | Some(Value::Null) => {
                // The reference's implicit push rule: the flat fields, only with a global rateLimit.
                if action == "push" && global.is_some() {
                    out.push = inherited.window().map(|window| RateRule::Single {
                        window,
                        bucket: bucket_or_identity(rl.get("bucket")),
                    });
                }
                continue;
            }
            Some(_) => {
                errors.push(format!("{at}.{action} must be an object"));
                continue;
            }
        };
        match action {
            "push" => out.push = resolved,
            "pull" => out.pull = resolved,
            _ => out.list = resolved,
        }
    }
    out
}

/// One action's rule at `at` (`…rateLimit.<action>`): a single window or split sub-limits.
fn rate_rule(
    rule: &Map<String, Value>,
    at: &str,
    inherited: RateFields,
    errors: &mut Vec<String>,
) -> Option<RateRule> {
    check_window_fields(rule, at, errors);
    check_bucket(rule, at, errors);
    let split = present(rule.get("identity")) || present(rule.get("ip"));
    if split && present(rule.get("bucket")) {
        errors.push(format!(
            "{at} cannot set both \"bucket\" and an \"identity\"/\"ip\" sub-limit — use one form or the other"
        ));
    }
    let inherited = inherited.overridden_by(rule);
    if split {
        return Some(RateRule::Split {
            identity: rate_dimension(rule, "identity", at, inherited, errors),
            ip: rate_dimension(rule, "ip", at, inherited, errors),
        });
    }
    match inherited.window() {
        Some(window) => Some(RateRule::Single {
            window,
            bucket: bucket_or_identity(rule.get("bucket")),
        }),
        None => {
            errors.push(format!(
                "{at} must resolve both windowMs and maxRequests — set them on the rule, on the collection's rateLimit, or on the global rateLimit"
            ));
            None
        }
    }
}

/// One sub-limit (`identity` or `ip`) of a split rule, when it is set.
fn rate_dimension(
    rule: &Map<String, Value>,
    dim_name: &str,
    at: &str,
    inherited: RateFields,
    errors: &mut Vec<String>,
) -> Option<RateWindow> {
    let dim = rule.get(dim_name).filter(|d| present(Some(d)))?;
    let empty = Map::new();
    // A sub-limit that is not an object has no fields of its own.
    let dim = dim.as_object().unwrap_or(&empty);
    let at = format!("{at}.{dim_name}");
    check_window_fields(dim, &at, errors);
    let window = inherited.overridden_by(dim).window();
    if window.is_none() {
        errors.push(format!(
            "{at} must resolve both windowMs and maxRequests — set them on the dimension, the rule, the collection's rateLimit, or the global rateLimit"
        ));
    }
    window
}

fn restrictions(v: Option<&Value>, label: &str, errors: &mut Vec<String>) -> Vec<Restriction> {
    let items = match v {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.push(format!("{label}restrictions must be an array"));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (i, r) in items.iter().enumerate() {
        let before = errors.len();
        let mode = r.get("mode");
        let allow = match mode.and_then(Value::as_str) {
            Some("allow") => true,
            Some("deny") => false,
            _ => {
                let shown = match mode {
                    None => "undefined".to_owned(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                errors.push(format!(
                    "{label}restrictions[{i}]: mode must be \"deny\" or \"allow\", got \"{shown}\""
                ));
                false
            }
        };
        let identities: Vec<String> = match r.get("identities") {
            Some(Value::Array(ids)) if !ids.is_empty() => {
                if ids.iter().all(Value::is_string) {
                    ids.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                } else {
                    errors.push(format!(
                        "{label}restrictions[{i}]: identities must contain only strings"
                    ));
                    Vec::new()
                }
            }
            _ => {
                errors.push(format!(
                    "{label}restrictions[{i}]: identities must be a non-empty array"
                ));
                Vec::new()
            }
        };
        let mut actions = Vec::new();
        if let Some(Value::Array(list)) = r.get("actions") {
            for a in list {
                match a.as_str() {
                    Some("pull") => actions.push(RestrictedAction::Pull),
                    Some("push") => actions.push(RestrictedAction::Push),
                    Some("list") => actions.push(RestrictedAction::List),
                    _ => {
                        let shown = a.as_str().map_or_else(|| a.to_string(), str::to_owned);
                        errors.push(format!(
                            "{label}restrictions[{i}]: unknown action \"{shown}\" (expected \"pull\", \"push\", or \"list\")"
                        ));
                    }
                }
            }
        }
        if errors.len() == before {
            out.push(Restriction {
                allow,
                identities,
                actions,
            });
        }
    }
    out
}

/// In `shared` isolation namespaces do not prefix storage keys (as in the
/// reference): a collection whose template can resolve to the same key as one in
/// another shared scope (the root is one) shares its documents. That is sometimes
/// intended and often a tenant leak, so it is reported.
pub(super) fn shared_storage_warnings(config: &SyncConfig) -> Vec<String> {
    let scopes: Vec<(String, &[Arc<Collection>])> =
        std::iter::once(("root".to_owned(), config.collections.as_slice()))
            .chain(
                config
                    .namespaces
                    .iter()
                    .filter(|ns| config.isolation_of(ns) == Isolation::Shared)
                    .map(|ns| {
                        (
                            format!("namespace \"{}\"", ns.name),
                            ns.collections.as_slice(),
                        )
                    }),
            )
            .collect();
    let mut out = Vec::new();
    for (i, (scope_a, cols_a)) in scopes.iter().enumerate() {
        for (scope_b, cols_b) in &scopes[i + 1..] {
            for a in cols_a.iter() {
                for b in cols_b.iter() {
                    if keys_overlap(a, b) {
                        out.push(format!(
                            "Collection \"{}\" ({scope_a}) and collection \"{}\" ({scope_b}) can address the same objects (\"{}\" / \"{}\"): namespaces do not prefix storage keys in \"shared\" isolation (set \"isolation\": \"prefixed\" to separate them)",
                            a.name, b.name, a.storage_path, b.storage_path
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The built-in role (`public`, `self`) `role` is one edit away from (a letter
/// added, dropped, changed or swapped with its neighbour, or another case), when it
/// is not that role itself.
fn near_builtin_role(role: &str) -> Option<&'static str> {
    ["public", "self"]
        .into_iter()
        .find(|builtin| role != *builtin && one_edit_apart(&role.to_lowercase(), builtin))
}

/// True when `a` becomes `b` by at most one insertion, deletion, substitution or
/// transposition of neighbours.
fn one_edit_apart(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a == b {
        return true;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (a, b) = (&a[prefix..], &b[prefix..]);
    match a.len().abs_diff(b.len()) {
        0 => a[1..] == b[1..] || (a.len() >= 2 && a[0] == b[1] && a[1] == b[0] && a[2..] == b[2..]),
        1 if a.len() > b.len() => a[1..] == *b,
        1 => b[1..] == *a,
        _ => false,
    }
}

fn collect_warnings(raws: &[RawCollection], scope: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in raws {
        let p = format!("{scope}Collection \"{}\": ", c.name);
        if c.write_roles.iter().any(|r| r == "public") {
            out.push(format!("{p}writeRoles contains \"public\" — anonymous clients can WRITE this collection. Remove it unless public writes are intended."));
        }
        for (label, roles) in [("readRoles", &c.read_roles), ("writeRoles", &c.write_roles)] {
            for r in roles {
                let mut parts = r.splitn(3, ':');
                if let (Some("cap"), Some(op @ ("read" | "write" | "list")), Some(target)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if !target.is_empty() && target != c.name && target != "*" {
                        out.push(format!("{p}{label} references \"{r}\", a cap role scoped to a different collection (\"{target}\"). A cap-cert for \"{target}\" would gain access here — did you mean \"cap:{op}:{}\"?", c.name));
                    }
                }
            }
        }
        for (label, roles) in [("readRoles", &c.read_roles), ("writeRoles", &c.write_roles)] {
            for r in roles {
                if let Some(meant) = near_builtin_role(r) {
                    out.push(format!("{p}{label} contains \"{r}\", one edit away from the built-in role \"{meant}\": a custom role of that name is granted to no one unless a hook grants it. Did you mean \"{meant}\"?"));
                }
            }
        }
        let uses_self = c
            .read_roles
            .iter()
            .chain(&c.write_roles)
            .any(|r| r == "self");
        if uses_self && !c.storage_path.contains("{identity}") {
            out.push(format!("{p}uses the \"self\" role but its storagePath has no \"{{identity}}\" segment. \"self\" is granted only when the \"{{identity}}\" path param equals the caller, so it can never be granted here — did you mean to use \"{{identity}}\" instead of another param name?"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_one_edit_away_from_public_or_self_are_named() {
        for typo in [
            "publik", "pubic", "pulbic", "Public", "PUBLIC", "publics", "sefl", "Self", "slf",
        ] {
            assert!(near_builtin_role(typo).is_some(), "{typo}");
        }
        for fine in [
            "public",
            "self",
            "editor",
            "pub",
            "selfie",
            "admins",
            "device:root",
        ] {
            assert_eq!(near_builtin_role(fine), None, "{fine}");
        }
        assert_eq!(near_builtin_role("publik"), Some("public"));
        assert_eq!(near_builtin_role("elf"), Some("self"));
    }
}
