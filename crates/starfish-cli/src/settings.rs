//! The server's settings, from four layers: flags, then `STARFISH_*` environment
//! variables (clap reads both), then the config file's `server:` section, then the
//! defaults. S3 settings start one layer lower still, from the standard `AWS_*`
//! environment.

use crate::cors::{Cors, CorsArgs, DEFAULT_MAX_AGE_SECS};
use crate::limits::{Limits, LimitsArgs, LimitsSection};
use crate::mask::mask;
use clap::ValueEnum;
use clap::builder::BoolishValueParser;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use starfish_server::auth::{CapAuthOptions, NonceCacheLimits};
use std::path::{Component, Path, PathBuf};

/// Where `serve` listens by default: loopback only.
const DEFAULT_HOST: &str = "127.0.0.1";
/// The port `serve` listens on by default.
const DEFAULT_PORT: u16 = 8080;
/// The filesystem store's default directory.
const DEFAULT_DATA: &str = "./data";
/// The read cache's default size: 64 MiB.
const DEFAULT_READ_CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// The largest signed body read before its signature is checked, by default (the
/// cap-cert defaults below are the reference server's).
const DEFAULT_MAX_SIGNED_BODY_BYTES: u64 = 64 * 1024;
/// The largest `Authorization` header, by default.
const DEFAULT_MAX_CAP_HEADER_BYTES: usize = 8 * 1024;
/// The clock skew allowed between a request and the server, by default.
const DEFAULT_MAX_SKEW_MS: u64 = 300_000;
/// How long a nonce is remembered, by default.
const DEFAULT_NONCE_WINDOW_MS: u64 = 600_000;
/// How many nonces are remembered in total, by default.
const DEFAULT_NONCE_MAX_ENTRIES: usize = 100_000;
/// How many nonces are remembered per signing key, by default.
const DEFAULT_NONCE_PER_SIGNER: usize = 4096;

/// `starfish serve`. Every option is also read from the `STARFISH_*` variable named
/// beside it, and (but `--config` and `--print-config`) from the config file's
/// `server:` section; a flag beats the variable, which beats the section.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// The config file (`.json` is read as JSON, anything else as YAML).
    #[arg(long, short, env = "STARFISH_CONFIG")]
    pub(crate) config: PathBuf,
    /// Print the effective settings (secrets masked) and exit without serving.
    #[arg(
        long,
        env = "STARFISH_PRINT_CONFIG",
        value_enum,
        num_args = 0..=1,
        default_missing_value = "yaml",
        value_name = "FORMAT"
    )]
    pub(crate) print_config: Option<PrintFormat>,
    /// Address to listen on [default: 127.0.0.1, loopback].
    #[arg(long, env = "STARFISH_HOST")]
    host: Option<String>,
    /// Port to listen on; 0 picks a free one [default: 8080].
    #[arg(long, short, env = "STARFISH_PORT")]
    port: Option<u16>,
    /// Directory of the filesystem store [default: ./data].
    #[arg(long, env = "STARFISH_DATA")]
    data: Option<PathBuf>,
    /// With `--store fs`: fsync every written file and its directory before answering
    /// a write, so an acknowledged write survives a power loss; slower writes
    /// [default: false].
    #[arg(long, env = "STARFISH_FSYNC", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    fsync: Option<bool>,
    /// Bytes of the write-through cache of documents (pulls answered from memory,
    /// never older than the last acknowledged write); 0 turns it off. With s3 (other
    /// nodes write too) every hit is confirmed with a conditional read, answered
    /// without the bytes when unchanged [default: 67108864; 0 with s3].
    #[arg(long, env = "STARFISH_READ_CACHE_BYTES", value_name = "BYTES")]
    read_cache_bytes: Option<u64>,
    /// Redis for the replay cache and rate limits shared by several nodes
    /// (`redis://host:6379/0`): a request accepted by one node is refused by all, a
    /// limit of N is N for all nodes together; signed requests get 503 while Redis
    /// does not answer (limits are then counted per node).
    #[arg(long, env = "STARFISH_REDIS_URL", value_name = "URL")]
    redis: Option<String>,
    /// NATS for live changes shared by several nodes (`nats://host:4222`): a
    /// `GET /events` subscriber on any node hears of writes accepted by any node.
    #[arg(long, env = "STARFISH_NATS_URL", value_name = "URL")]
    nats: Option<String>,
    /// Where documents are stored [default: fs].
    #[arg(long, value_enum, env = "STARFISH_STORE")]
    store: Option<StoreKind>,
    #[command(flatten)]
    s3: S3Args,
    /// Mount the routes under this prefix (e.g. `/v1`) instead of the root. Repeat it
    /// (or separate with commas) to mount at several prefixes.
    #[arg(long, env = "STARFISH_BASE_PATH", value_delimiter = ',')]
    base_path: Vec<String>,
    /// Signed revocation lists to honour (a JSON file holding one list or an array).
    #[arg(long, env = "STARFISH_REVOCATIONS")]
    revocations: Option<PathBuf>,
    /// Serve `GET /config`: to anyone (`public`), or filtered by the caller's roles.
    #[arg(long, value_enum, env = "STARFISH_CONFIG_ENDPOINT")]
    config_endpoint: Option<ConfigEndpointArg>,
    /// Serve `GET /openapi.json`: the OpenAPI 3.1 document of the config's routes
    /// [default: off].
    #[arg(long, env = "STARFISH_OPENAPI_ENDPOINT", num_args = 0..=1, default_missing_value = "true")]
    openapi_endpoint: Option<bool>,
    /// Accept member certificates and public links (audience certificates): the
    /// sharing plugin's validators; the enrichers are set in `server: sharing:`
    /// [default: off].
    #[arg(long, env = "STARFISH_SHARING", num_args = 0..=1, default_missing_value = "true")]
    sharing: Option<bool>,
    /// Publish the queue messages of collections with a `queue` setting on this
    /// NATS server (the reference's queuing plugin) [default: off].
    #[arg(long, env = "STARFISH_QUEUE_NATS")]
    queue_nats: Option<String>,
    /// Publish them into this JetStream stream (created when missing),
    /// acknowledged and de-duplicated, instead of on core NATS.
    #[arg(long, env = "STARFISH_QUEUE_STREAM")]
    queue_stream: Option<String>,
    /// Write the audit trail (every pull, push and list, allowed or denied, and
    /// every admin action) as JSON lines to this file, or `-` for stdout
    /// [default: off].
    #[arg(long, env = "STARFISH_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// Record one successful read in this many (denials, writes and admin actions
    /// always) [default: 1].
    #[arg(long, env = "STARFISH_AUDIT_READ_SAMPLE")]
    audit_read_sample: Option<u32>,
    /// Each namespace also keeps its own trail, this many days, in its part of the
    /// store, for its admin to read (`GET /_starfish/admin/namespaces/<name>/audit`)
    /// [default: off].
    #[arg(long, env = "STARFISH_AUDIT_TENANT_RETENTION_DAYS")]
    audit_tenant_retention_days: Option<u32>,
    /// Publish the audit trail on this NATS server too, one subject per namespace
    /// (`starfish.audit.<namespace>`, `~` for the root) [default: off].
    #[arg(long, env = "STARFISH_AUDIT_NATS")]
    audit_nats: Option<String>,
    /// Reverse proxies in front of the server; the client IP for rate limits is the
    /// N-th `X-Forwarded-For` entry from the right. 0: the socket address [default: 0].
    #[arg(long, env = "STARFISH_TRUSTED_PROXY_HOPS")]
    trusted_proxy_hops: Option<usize>,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    cors: Box<CorsArgs>,
    #[command(flatten)]
    tenancy: crate::tenancy::TenancyArgs,
    #[command(flatten)]
    limits: Box<LimitsArgs>,
    #[command(flatten)]
    observe: crate::observe::ObserveArgs,
}

/// The S3 store (`--store s3`), on top of the standard `AWS_*` variables and the AWS
/// credential chain.
#[derive(clap::Args)]
struct S3Args {
    /// The bucket [default: AWS_BUCKET_NAME].
    #[arg(long, env = "STARFISH_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// An S3-compatible endpoint (MinIO, ...); `http://` allows plain HTTP
    /// [default: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT, else AWS].
    #[arg(long, env = "STARFISH_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The region [default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, env = "STARFISH_S3_REGION")]
    s3_region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`); `false` for virtual-hosted style
    /// [default: true].
    #[arg(long, env = "STARFISH_S3_PATH_STYLE", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    s3_path_style: Option<bool>,
    /// Allow plain HTTP to the endpoint (implied by an `http://` endpoint)
    /// [default: AWS_ALLOW_HTTP, else false].
    #[arg(long, env = "STARFISH_S3_ALLOW_HTTP", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    s3_allow_http: Option<bool>,
}

/// Cap-cert authentication; the defaults are the reference server's.
#[derive(clap::Args)]
struct AuthArgs {
    /// Refuse requests without `Authorization: Cap` (401) instead of treating them as
    /// anonymous callers with the `public` role [default: false].
    #[arg(long, env = "STARFISH_NO_ANONYMOUS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    no_anonymous: Option<bool>,
    /// Largest signed write body read before its signature is checked [default: 65536].
    #[arg(long, env = "STARFISH_MAX_SIGNED_BODY_BYTES")]
    max_signed_body_bytes: Option<u64>,
    /// Largest `Authorization` header [default: 8192].
    #[arg(long, env = "STARFISH_MAX_CAP_HEADER_BYTES")]
    max_cap_header_bytes: Option<usize>,
    /// Allowed difference between a request's timestamp and the server clock, in ms
    /// [default: 300000].
    #[arg(long, env = "STARFISH_MAX_SKEW_MS")]
    max_skew_ms: Option<u64>,
    /// How long a request nonce is remembered, in ms [default: 600000].
    #[arg(long, env = "STARFISH_NONCE_WINDOW_MS")]
    nonce_window_ms: Option<u64>,
    /// Live nonces remembered in total; when full, the oldest are evicted and older
    /// request timestamps refused, so no replay gets through [default: 100000].
    #[arg(long, env = "STARFISH_NONCE_MAX_ENTRIES")]
    nonce_max_entries: Option<usize>,
    /// Live nonces remembered per signing key [default: 4096].
    #[arg(long, env = "STARFISH_NONCE_PER_SIGNER")]
    nonce_per_signer: Option<usize>,
    /// Verify signatures against this host instead of the `Host` header (behind a
    /// proxy that rewrites it).
    #[arg(long, env = "STARFISH_PUBLIC_HOST")]
    public_host: Option<String>,
}

/// How `--print-config` prints.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum PrintFormat {
    /// YAML, shaped like the `server:` section.
    Yaml,
    /// JSON, the same fields.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StoreKind {
    /// Files under `--data`, in the reference server's layout.
    Fs,
    /// In memory; lost on exit.
    Memory,
    /// An S3-compatible bucket (`--s3-*`, then the `AWS_*` variables).
    S3,
}

impl StoreKind {
    /// The name flags and the config use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Fs => "fs",
            Self::Memory => "memory",
            Self::S3 => "s3",
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ConfigEndpointArg {
    /// Every collection, to anyone.
    Public,
    /// Only collections whose roles the caller holds.
    RoleFiltered,
}

/// The config file's `server:` section: the binary's own settings, which the
/// reference ignores (it drops unknown top-level fields). Keys are the flags'
/// names in camelCase; S3 and auth settings are grouped.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ServerSection {
    host: Option<String>,
    port: Option<u16>,
    /// Relative to the config file's directory.
    data: Option<PathBuf>,
    fsync: Option<bool>,
    read_cache_bytes: Option<u64>,
    redis: Option<String>,
    nats: Option<String>,
    store: Option<StoreKind>,
    s3: S3Section,
    base_path: Option<OneOrMany>,
    /// Relative to the config file's directory.
    revocations: Option<PathBuf>,
    config_endpoint: Option<ConfigEndpointArg>,
    openapi_endpoint: Option<bool>,
    trusted_proxy_hops: Option<usize>,
    sharing: crate::sharing::SharingSection,
    webhooks: crate::webhooks::WebhooksSection,
    projections: Vec<crate::projections::ProjectionSection>,
    queue: crate::queue::QueueSection,
    audit: crate::audit::AuditSection,
    auth: AuthSection,
    cors: CorsSection,
    no_compression: Option<bool>,
    tenancy: crate::tenancy::TenancySection,
    limits: LimitsSection,
    observe: crate::observe::ObserveSection,
}

/// A section value that is one string or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    /// `basePath: /v1`.
    One(String),
    /// `basePath: [/v1, /v2]`.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, as a list.
    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct S3Section {
    bucket: Option<String>,
    endpoint: Option<String>,
    region: Option<String>,
    path_style: Option<bool>,
    allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct CorsSection {
    origin: Option<OneOrMany>,
    max_age: Option<u64>,
    credentials: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
struct AuthSection {
    no_anonymous: Option<bool>,
    max_signed_body_bytes: Option<u64>,
    max_cap_header_bytes: Option<usize>,
    max_skew_ms: Option<u64>,
    nonce_window_ms: Option<u64>,
    nonce_max_entries: Option<usize>,
    nonce_per_signer: Option<usize>,
    public_host: Option<String>,
}

impl ServerSection {
    /// The `server:` section of a parsed config document (empty when absent).
    pub(crate) fn from_document(doc: &Value) -> Result<Self, String> {
        match doc.get("server") {
            None | Some(Value::Null) => Ok(Self::default()),
            Some(section) => serde_path_to_error::deserialize(section)
                .map_err(|e| format!("server.{}: {}", e.path(), e.inner())),
        }
    }
}

/// The effective settings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Settings {
    /// The config file (printed beside the `server:` section, not in it).
    #[serde(skip)]
    pub(crate) config: PathBuf,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) store: StoreKind,
    /// The filesystem store's directory (shown with `store: fs` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<PathBuf>,
    /// fsync after writes (shown with `store: fs` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) fsync: Option<bool>,
    /// Bytes of the read cache (0: off).
    pub(crate) read_cache_bytes: u64,
    /// Redis for the shared replay cache (not shown: it may hold a password).
    #[serde(skip)]
    pub(crate) redis: Option<String>,
    /// NATS for live changes between nodes (not shown: it may hold credentials).
    #[serde(skip)]
    pub(crate) nats: Option<String>,
    /// The S3 layers above the `AWS_*` environment (shown with `store: s3`, resolved).
    #[serde(skip)]
    pub(crate) s3: S3Layer,
    pub(crate) base_path: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) revocations: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) config_endpoint: Option<ConfigEndpointArg>,
    pub(crate) openapi_endpoint: bool,
    #[serde(skip_serializing_if = "is_default")]
    pub(crate) sharing: crate::sharing::SharingSection,
    #[serde(skip_serializing_if = "is_default")]
    pub(crate) webhooks: crate::webhooks::WebhooksSection,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) projections: Vec<crate::projections::ProjectionSection>,
    #[serde(skip_serializing_if = "is_default")]
    pub(crate) queue: crate::queue::QueueSection,
    #[serde(skip_serializing_if = "is_default")]
    pub(crate) audit: crate::audit::AuditSection,
    pub(crate) trusted_proxy_hops: usize,
    pub(crate) auth: AuthSettings,
    pub(crate) cors: Cors,
    pub(crate) no_compression: bool,
    pub(crate) tenancy: crate::tenancy::TenancySettings,
    pub(crate) limits: Limits,
    pub(crate) observe: crate::observe::ObserveSettings,
}

/// S3 settings from flags, environment and section; `None` defers to `AWS_*`.
#[derive(Default)]
pub(crate) struct S3Layer {
    pub(crate) bucket: Option<String>,
    pub(crate) endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) path_style: Option<bool>,
    pub(crate) allow_http: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthSettings {
    no_anonymous: bool,
    max_signed_body_bytes: u64,
    max_cap_header_bytes: usize,
    max_skew_ms: u64,
    nonce_window_ms: u64,
    nonce_max_entries: usize,
    nonce_per_signer: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_host: Option<String>,
}

impl AuthSettings {
    pub(crate) fn options(&self) -> CapAuthOptions {
        CapAuthOptions {
            allow_anonymous: !self.no_anonymous,
            max_cap_header_bytes: self.max_cap_header_bytes,
            max_signed_body_bytes: self.max_signed_body_bytes,
            max_skew_ms: self.max_skew_ms,
            nonce_limits: NonceCacheLimits {
                window_ms: self.nonce_window_ms,
                max_entries: self.nonce_max_entries,
                per_signer: self.nonce_per_signer,
            },
            host_override: self.public_host.clone(),
            ..CapAuthOptions::default()
        }
    }
}

impl ServerSection {
    /// Its webhooks, their files taken beside the config file at `config`.
    pub(crate) fn webhooks_beside(&self, config: &Path) -> crate::webhooks::WebhooksSection {
        self.webhooks.clone().with_paths(|p| beside(config, p))
    }
}

/// `path` from the section, relative to the config file's directory.
fn beside(config: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        return path;
    }
    let dir = config.parent().unwrap_or_else(|| Path::new(""));
    let joined: PathBuf = dir
        .join(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if joined.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        joined
    }
}

impl Settings {
    /// Flags and environment (`args`) over the config file's section over defaults.
    pub(crate) fn resolve(args: ServeArgs, section: ServerSection) -> Result<Self, String> {
        let config = args.config;
        let observe = crate::observe::ObserveSettings::resolve(args.observe, section.observe);
        let tenancy =
            crate::tenancy::TenancySettings::resolve(args.tenancy, section.tenancy, |p| {
                beside(&config, p)
            });
        let store = args.store.or(section.store).unwrap_or(StoreKind::Fs);
        let (redis, nats) = (args.redis.or(section.redis), args.nats.or(section.nats));
        check_several_nodes(store, redis.is_some() || nats.is_some())?;
        let data = args
            .data
            .or_else(|| section.data.map(|d| beside(&config, d)))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA));
        let base_path = base_paths(args.base_path, section.base_path)?;
        let fsync = args.fsync.or(section.fsync).unwrap_or(false);
        check_fsync(fsync, store)?;
        let read_cache_bytes = match (args.read_cache_bytes.or(section.read_cache_bytes), store) {
            (Some(n), _) => n,
            (None, StoreKind::S3) => 0,
            (None, _) => DEFAULT_READ_CACHE_BYTES,
        };
        let limits = Limits::resolve(*args.limits, section.limits)?;
        let no_compression = args
            .cors
            .no_compression
            .or(section.no_compression)
            .unwrap_or(false);
        Ok(Self {
            host: args
                .host
                .or(section.host)
                .unwrap_or_else(|| DEFAULT_HOST.to_owned()),
            port: args.port.or(section.port).unwrap_or(DEFAULT_PORT),
            store,
            data: (store == StoreKind::Fs).then_some(data),
            fsync: (store == StoreKind::Fs).then_some(fsync),
            read_cache_bytes,
            redis,
            nats,
            s3: S3Layer::resolve(args.s3, section.s3),
            base_path,
            revocations: args
                .revocations
                .or_else(|| section.revocations.map(|r| beside(&config, r))),
            config_endpoint: args.config_endpoint.or(section.config_endpoint),
            openapi_endpoint: args
                .openapi_endpoint
                .or(section.openapi_endpoint)
                .unwrap_or(false),
            sharing: section.sharing.with_flag(args.sharing),
            webhooks: section.webhooks.with_paths(|p| beside(&config, p)),
            projections: section.projections,
            queue: section.queue.with_flags(args.queue_nats, args.queue_stream),
            audit: section.audit.with_flags(
                args.audit_log,
                args.audit_read_sample,
                args.audit_tenant_retention_days,
                args.audit_nats,
            ),
            trusted_proxy_hops: args
                .trusted_proxy_hops
                .or(section.trusted_proxy_hops)
                .unwrap_or(0),
            auth: AuthSettings::resolve(args.auth, section.auth),
            cors: resolve_cors(*args.cors, section.cors),
            no_compression,
            tenancy,
            limits,
            observe,
            config,
        })
    }

    /// The S3 settings the store is opened with: the `AWS_*` environment, then the
    /// layers above it.
    #[cfg(feature = "aws")]
    pub(crate) fn s3_settings(&self) -> starfish_server::store::S3Settings {
        let mut s = starfish_server::store::S3Settings::from_env();
        let layer = &self.s3;
        if let Some(v) = &layer.bucket {
            s.bucket = Some(v.clone());
        }
        if let Some(v) = &layer.endpoint {
            s.endpoint = Some(v.clone());
        }
        if let Some(v) = &layer.region {
            s.region = Some(v.clone());
        }
        if let Some(v) = layer.path_style {
            s.path_style = v;
        }
        if let Some(v) = layer.allow_http {
            s.allow_http = v;
        }
        s
    }

    /// The S3 part of `--print-config`.
    #[cfg(feature = "aws")]
    fn s3_view(&self) -> Value {
        let s = self.s3_settings();
        let mut view = serde_json::Map::new();
        view.insert("bucket".into(), s.bucket.clone().into());
        view.insert("endpoint".into(), s.endpoint.clone().into());
        let region = s.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
        view.insert("region".into(), region.into());
        view.insert("pathStyle".into(), s.path_style.into());
        view.insert("allowHttp".into(), s.http_allowed().into());
        if let Some(id) = &s.access_key_id {
            view.insert("accessKeyId".into(), id.clone().into());
            view.insert("secretAccessKey".into(), s.secret_access_key.clone().into());
            if let Some(token) = &s.session_token {
                view.insert("sessionToken".into(), token.clone().into());
            }
        } else {
            view.insert(
                "credentialsFrom".into(),
                "the AWS chain (web identity, container, instance metadata)".into(),
            );
        }
        Value::Object(view)
    }

    #[cfg(not(feature = "aws"))]
    fn s3_view(&self) -> Value {
        let l = &self.s3;
        serde_json::json!({
            "bucket": l.bucket,
            "endpoint": l.endpoint,
            "region": l.region,
            "pathStyle": l.path_style,
            "allowHttp": l.allow_http,
            "note": "this build lacks the `aws` feature",
        })
    }

    /// The effective settings as printed: the config file, and a `server:` section
    /// with every credential-like value masked (S3 credentials are shown for what
    /// they are, never accepted in the section).
    pub(crate) fn printable(&self) -> Value {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if self.store == StoreKind::S3 {
            if let Value::Object(map) = &mut value {
                map.insert("s3".into(), self.s3_view());
            }
        }
        mask(&mut value);
        serde_json::json!({ "configFile": self.config, "server": value })
    }
}

/// `--redis` and `--nats` (`several_nodes`) need a store several processes can share:
/// S3, not a directory or memory.
fn check_several_nodes(store: StoreKind, several_nodes: bool) -> Result<(), String> {
    if store == StoreKind::S3 || !several_nodes {
        return Ok(());
    }
    let why = match store {
        StoreKind::Memory => "each process has a memory store of its own",
        _ => {
            "a directory has no conditional writes between processes: two nodes \
             writing one document would lose updates"
        }
    };
    Err(format!(
        "--redis and --nats are for several nodes over one store, and --store {} \
         cannot be shared ({why}); use --store s3 (a bucket with conditional \
         writes: AWS S3, MinIO, R2...), or leave --redis and --nats out for one node",
        store.name()
    ))
}

/// The mount prefixes: the flags' (or environment's), else the section's, else `/`;
/// each `/` or starting with `/` and not ending with one (empty reads as `/`).
fn base_paths(args: Vec<String>, section: Option<OneOrMany>) -> Result<Vec<String>, String> {
    let mut base_path = if !args.is_empty() {
        args
    } else {
        section
            .map(OneOrMany::into_vec)
            .filter(|paths| !paths.is_empty())
            .unwrap_or_else(|| vec!["/".to_owned()])
    };
    for prefix in &mut base_path {
        if prefix.is_empty() {
            "/".clone_into(prefix);
        }
        if !(prefix == "/" || prefix.starts_with('/') && !prefix.ends_with('/')) {
            return Err(format!(
                "--base-path must be / or start with / and not end with one, got {prefix:?}"
            ));
        }
    }
    Ok(base_path)
}

/// `--fsync` is for the filesystem store only.
fn check_fsync(fsync: bool, store: StoreKind) -> Result<(), String> {
    if fsync && store != StoreKind::Fs {
        return Err(format!(
            "--fsync applies to the filesystem store only, not --store {}",
            store.name()
        ));
    }
    Ok(())
}

/// The CORS settings: flags and environment over `server.cors` over defaults.
fn resolve_cors(args: CorsArgs, section: CorsSection) -> Cors {
    Cors {
        origin: if !args.cors_origins.is_empty() {
            args.cors_origins
        } else {
            section.origin.map(OneOrMany::into_vec).unwrap_or_default()
        },
        max_age: args
            .cors_max_age
            .or(section.max_age)
            .unwrap_or(DEFAULT_MAX_AGE_SECS),
        credentials: args
            .cors_credentials
            .or(section.credentials)
            .unwrap_or(false),
    }
}

impl S3Layer {
    /// Flags and environment over `server.s3`; what neither sets defers to `AWS_*`.
    fn resolve(args: S3Args, section: S3Section) -> Self {
        Self {
            bucket: args.s3_bucket.or(section.bucket),
            endpoint: args.s3_endpoint.or(section.endpoint),
            region: args.s3_region.or(section.region),
            path_style: args.s3_path_style.or(section.path_style),
            allow_http: args.s3_allow_http.or(section.allow_http),
        }
    }
}

impl AuthSettings {
    /// Flags and environment over `server.auth` over the reference server's defaults.
    fn resolve(args: AuthArgs, section: AuthSection) -> Self {
        Self {
            no_anonymous: args.no_anonymous.or(section.no_anonymous).unwrap_or(false),
            max_signed_body_bytes: args
                .max_signed_body_bytes
                .or(section.max_signed_body_bytes)
                .unwrap_or(DEFAULT_MAX_SIGNED_BODY_BYTES),
            max_cap_header_bytes: args
                .max_cap_header_bytes
                .or(section.max_cap_header_bytes)
                .unwrap_or(DEFAULT_MAX_CAP_HEADER_BYTES),
            max_skew_ms: args
                .max_skew_ms
                .or(section.max_skew_ms)
                .unwrap_or(DEFAULT_MAX_SKEW_MS),
            nonce_window_ms: args
                .nonce_window_ms
                .or(section.nonce_window_ms)
                .unwrap_or(DEFAULT_NONCE_WINDOW_MS),
            nonce_max_entries: args
                .nonce_max_entries
                .or(section.nonce_max_entries)
                .unwrap_or(DEFAULT_NONCE_MAX_ENTRIES),
            nonce_per_signer: args
                .nonce_per_signer
                .or(section.nonce_per_signer)
                .unwrap_or(DEFAULT_NONCE_PER_SIGNER),
            public_host: args.public_host.or(section.public_host),
        }
    }
}

/// True for a value equal to its type's default (left out of `--print-config`).
fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_paths_are_beside_the_config() {
        let cfg = Path::new("/etc/starfish/starfish.yaml");
        assert_eq!(
            beside(cfg, "./data".into()),
            PathBuf::from("/etc/starfish/data")
        );
        assert_eq!(beside(cfg, "/srv/d".into()), PathBuf::from("/srv/d"));
        assert_eq!(
            beside(Path::new("starfish.yaml"), "./data".into()),
            PathBuf::from("data")
        );
        assert_eq!(
            beside(Path::new("starfish.yaml"), ".".into()),
            PathBuf::from(".")
        );
    }
}
