//! `starfish`: serve a Starfish sync config, or check one.
//!
//! ```text
//! starfish serve --config starfish.yaml [--host 127.0.0.1] [--port 8080] [--data ./data]
//!                [--store fs|memory|s3] [--base-path /v1]
//! starfish check-config starfish.yaml
//! ```

mod cors;

use clap::{Parser, Subcommand, ValueEnum};
use starfish_server::auth::{CapAuthOptions, InMemoryRevocationStore, NonceCacheLimits};
use starfish_server::store::DocStore;
use starfish_server::{ConfigEndpoint, ConfigError, SyncConfig, SyncOptions, create_sync_router};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "starfish", version, about = "Starfish document-sync server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the collections of a config file (YAML or JSON).
    Serve(ServeArgs),
    /// Validate a config file and print its warnings, without serving.
    CheckConfig {
        /// The config file (`.json` is read as JSON, anything else as YAML).
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// The config file (`.json` is read as JSON, anything else as YAML).
    #[arg(long, short)]
    config: PathBuf,
    /// Address to listen on. Loopback unless told otherwise.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0 picks a free one).
    #[arg(long, short, default_value_t = 8080)]
    port: u16,
    /// Directory of the filesystem store.
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Where documents are stored.
    #[arg(long, value_enum, default_value_t = StoreKind::Fs)]
    store: StoreKind,
    /// Mount the routes under this prefix (e.g. `/v1`) instead of the root. Repeat it
    /// to mount at several prefixes (`--base-path / --base-path /v1`).
    #[arg(long)]
    base_path: Vec<String>,
    /// Signed revocation lists to honour (a JSON file holding one list or an array).
    #[arg(long)]
    revocations: Option<PathBuf>,
    /// Serve `GET /config`: to anyone (`public`), or filtered by the caller's roles.
    #[arg(long, value_enum)]
    config_endpoint: Option<ConfigEndpointArg>,
    /// Reverse proxies in front of the server; the client IP for rate limits is the
    /// N-th `X-Forwarded-For` entry from the right. 0: the socket address.
    #[arg(long, default_value_t = 0)]
    trusted_proxy_hops: usize,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    cors: Box<cors::CorsArgs>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConfigEndpointArg {
    /// Every collection, to anyone.
    Public,
    /// Only collections whose roles the caller holds.
    RoleFiltered,
}

/// Cap-cert authentication; the defaults are the reference server's.
#[derive(clap::Args)]
struct AuthArgs {
    /// Refuse requests without `Authorization: Cap` (401) instead of treating them as
    /// anonymous callers with the `public` role.
    #[arg(long)]
    no_anonymous: bool,
    /// Largest signed write body read before its signature is checked.
    #[arg(long, default_value_t = 64 * 1024)]
    max_signed_body_bytes: u64,
    /// Largest `Authorization` header.
    #[arg(long, default_value_t = 8 * 1024)]
    max_cap_header_bytes: usize,
    /// Allowed difference between a request's timestamp and the server clock, in ms.
    #[arg(long, default_value_t = 300_000)]
    max_skew_ms: u64,
    /// How long a request nonce is remembered, in ms.
    #[arg(long, default_value_t = 600_000)]
    nonce_window_ms: u64,
    /// Live nonces remembered in total; when full, signed requests are refused.
    #[arg(long, default_value_t = 100_000)]
    nonce_max_entries: usize,
    /// Live nonces remembered per signing key.
    #[arg(long, default_value_t = 4096)]
    nonce_per_signer: usize,
    /// Verify signatures against this host instead of the `Host` header (behind a
    /// proxy that rewrites it).
    #[arg(long)]
    public_host: Option<String>,
}

impl AuthArgs {
    fn options(&self) -> CapAuthOptions {
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

#[derive(Clone, Copy, ValueEnum)]
enum StoreKind {
    /// Files under `--data`, in the reference server's layout.
    Fs,
    /// In memory; lost on exit.
    Memory,
    /// An S3-compatible bucket from the `AWS_*` environment variables.
    S3,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("starfish: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// One line for a config error: the reference's text with its line breaks folded.
fn one_line(e: &ConfigError) -> String {
    match e {
        ConfigError::Invalid(errors) => format!("Invalid sync config: {}", errors.join("; ")),
        other => other.to_string(),
    }
}

fn load_config(path: &Path) -> Result<SyncConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    let parsed = if is_json {
        SyncConfig::from_json_str(&text)
    } else {
        SyncConfig::from_yaml_str(&text)
    };
    parsed.map_err(|e| format!("{}: {}", path.display(), one_line(&e)))
}

fn check_config(path: &Path) -> Result<(), String> {
    // Route conflicts and overlapping templates are load errors: no router needed.
    let config = load_config(path)?;
    for w in config.warnings() {
        println!("warning: {w}");
    }
    let (count, in_namespaces) = config
        .namespaces()
        .fold((0, 0), |(n, c), (_, cols)| (n + 1, c + cols));
    println!(
        "{}: ok ({} root collections, {count} namespaces with {in_namespaces} collections)",
        path.display(),
        config.root_collections(),
    );
    Ok(())
}

/// Reads signed revocation lists; each must verify against its issuer.
fn load_revocations(path: &Path) -> Result<InMemoryRevocationStore, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read revocations {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let lists = match value {
        serde_json::Value::Array(lists) => lists,
        one => vec![one],
    };
    let store = InMemoryRevocationStore::new();
    for (i, list) in lists.iter().enumerate() {
        store
            .accept_list(list)
            .map_err(|e| format!("{}: revocation list {i}: {e}", path.display()))?;
    }
    Ok(store)
}

fn open_store(args: &ServeArgs) -> Result<DocStore, String> {
    match args.store {
        StoreKind::Memory => Ok(DocStore::memory()),
        #[cfg(feature = "fs")]
        StoreKind::Fs => DocStore::local(&args.data)
            .map_err(|e| format!("cannot open data directory {}: {e}", args.data.display())),
        #[cfg(feature = "aws")]
        StoreKind::S3 => DocStore::s3_from_env().map_err(|e| format!("cannot open S3 store: {e}")),
        #[cfg(not(all(feature = "fs", feature = "aws")))]
        #[allow(unreachable_patterns)]
        other => {
            let feature = match other {
                StoreKind::S3 => "aws",
                _ => "fs",
            };
            Err(format!("this build lacks the `{feature}` feature"))
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = load_config(&args.config)?;
    for w in config.warnings() {
        tracing::warn!("config warning: {w}");
    }
    let store = open_store(&args)?;
    let mut cap_auth = args.auth.options();
    if let Some(path) = &args.revocations {
        cap_auth.revocations = Arc::new(load_revocations(path)?);
    }
    let mut options = SyncOptions::new(config, store).with_cap_auth(cap_auth);
    options.trusted_proxy_hops = args.trusted_proxy_hops;
    if let Some(endpoint) = args.config_endpoint {
        options = options.with_config_endpoint(match endpoint {
            ConfigEndpointArg::Public => ConfigEndpoint::Public,
            ConfigEndpointArg::RoleFiltered => ConfigEndpoint::RoleFiltered,
        });
    }
    let options = args.cors.apply(options)?;
    let sync = create_sync_router(options).map_err(|e| one_line(&e))?;
    let mut app = axum::Router::new();
    let prefixes = if args.base_path.is_empty() {
        vec!["/".to_owned()]
    } else {
        args.base_path.clone()
    };
    for prefix in &prefixes {
        app = match prefix.as_str() {
            "" | "/" => app.merge(sync.clone()),
            p if p.starts_with('/') && !p.ends_with('/') => app.nest(p, sync.clone()),
            p => {
                return Err(format!(
                    "--base-path must start with / and not end with one, got {p:?}"
                ));
            }
        };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        tracing::info!(
            "starfish listening on http://{local} (mounted at {})",
            prefixes.join(", ")
        );
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))?;
        tracing::info!("starfish stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, finishing in-flight requests");
}
