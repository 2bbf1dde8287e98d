//! `starfish`: serve a Starfish sync config, check one, or write a starter one.
//!
//! ```text
//! starfish serve --config starfish.yaml [--host 127.0.0.1] [--port 8080] [--data ./data]
//!                [--store fs|memory|s3] [--s3-bucket B] [--base-path /v1] [--print-config]
//! starfish check-config starfish.yaml
//! starfish init [starfish.yaml]
//! starfish migrate NAMESPACE --config starfish.yaml [store options as for serve]
//! starfish identity new me.json
//! starfish pull|push|append|watch PATH [DATA] --identity me.json [--url URL] [--namespace NS]
//! ```
//!
//! Every `serve` option is also read from a `STARFISH_*` environment variable and from
//! the config file's `server:` section: flag > environment > section > default.

mod admin;
mod audit;
mod client;
mod cors;
mod init;
mod limits;
mod mask;
mod migrate;
mod observe;
mod openapi;
mod projections;
mod queue;
mod rotate;
mod serve;
mod settings;
mod sharing;
mod tenancy;
mod webhooks;

use clap::{Parser, Subcommand};
use serde_json::Value;
use settings::{ConfigEndpointArg, PrintFormat, ServeArgs, ServerSection, Settings, StoreKind};
use starfish_server::auth::{CapAuthOptions, InMemoryRevocationStore};
use starfish_server::store::DocStore;
use starfish_server::{
    ConfigEndpoint, ConfigError, Metrics, SyncConfig, SyncOptions, SyncService, create_sync_service,
};
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
    Serve(Box<ServeArgs>),
    /// Validate a config file (its collections and its `server:` section) and print its
    /// warnings, without serving.
    CheckConfig {
        /// The config file (`.json` is read as JSON, anything else as YAML).
        #[arg(env = "STARFISH_CONFIG")]
        file: PathBuf,
    },
    /// Write a commented starter config (YAML); never overwrites a file.
    Init {
        /// Where to write it.
        #[arg(default_value = "starfish.yaml")]
        path: PathBuf,
    },
    /// Print the OpenAPI 3.1 document of the routes a config produces.
    Openapi(openapi::OpenapiArgs),
    /// Manage namespaces and API keys of a running server (its admin API).
    Admin(Box<admin::AdminArgs>),
    /// Move a `shared` config namespace to `prefixed` keys while servers run
    /// (resumable; see docs/namespaces.md).
    Migrate(Box<migrate::MigrateArgs>),
    /// Make or show an identity: the keys and certificate that sign requests.
    #[command(subcommand)]
    Identity(client::IdentityCommand),
    #[command(flatten)]
    Doc(client::DocCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Admin(args) => admin::run(*args),
        Command::Migrate(args) => migrate::run(*args),
        Command::Serve(args) => serve(*args),
        Command::Init { path } => init::init(&path),
        Command::Openapi(args) => openapi::run(&args),
        Command::Identity(command) => client::identity(command),
        Command::Doc(command) => client::run(command),
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

/// A config file's text, and whether it is JSON (by its extension).
fn read_config(path: &Path) -> Result<(String, bool), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    Ok((text, is_json))
}

/// The sync config (collections, namespaces), validated with the reference's messages.
fn load_config(path: &Path, text: &str, is_json: bool) -> Result<SyncConfig, String> {
    let parsed = if is_json {
        SyncConfig::from_json_str(text)
    } else {
        SyncConfig::from_yaml_str(text)
    };
    parsed.map_err(|e| format!("{}: {}", path.display(), one_line(&e)))
}

/// The binary's own `server:` section of the file.
fn load_section(path: &Path, text: &str, is_json: bool) -> Result<ServerSection, String> {
    let doc: Value = if is_json {
        serde_json::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_str(text).map_err(|e| e.to_string())
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    ServerSection::from_document(&doc).map_err(|e| format!("{}: {e}", path.display()))
}

fn check_config(path: &Path) -> Result<(), String> {
    // Route conflicts and overlapping templates are load errors: no router needed.
    let (text, is_json) = read_config(path)?;
    let config = load_config(path, &text, is_json)?;
    let section = load_section(path, &text, is_json)?;
    let (webhooks, webhook_warnings) = section
        .webhooks_beside(path)
        .check()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for w in config.warnings().iter().chain(&webhook_warnings) {
        println!("warning: {w}");
    }
    let (count, in_namespaces) = config
        .namespaces()
        .fold((0, 0), |(n, c), (_, cols)| (n + 1, c + cols));
    println!(
        "{}: ok ({} root collections, {count} namespaces with {in_namespaces} collections, {webhooks} webhooks)",
        path.display(),
        config.root_collections(),
    );
    Ok(())
}

/// Reads signed revocation lists; each must verify against its issuer.
fn load_revocations(path: &Path) -> Result<InMemoryRevocationStore, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read revocations {}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let lists = match value {
        Value::Array(lists) => lists,
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

fn open_store(settings: &Settings) -> Result<DocStore, String> {
    match settings.store {
        StoreKind::Memory => Ok(DocStore::memory()),
        #[cfg(feature = "fs")]
        StoreKind::Fs => {
            let dir = settings.data.as_deref().unwrap_or(Path::new("./data"));
            if settings.fsync == Some(true) {
                DocStore::local_durable(dir)
            } else {
                DocStore::local(dir)
            }
            .map_err(|e| format!("cannot open data directory {}: {e}", dir.display()))
        }
        #[cfg(feature = "aws")]
        StoreKind::S3 => {
            let s3 = settings.s3_settings();
            if s3.bucket.is_none() {
                return Err(
                    "--store s3 needs a bucket: --s3-bucket, STARFISH_S3_BUCKET, \
                            server.s3.bucket in the config, or AWS_BUCKET_NAME"
                        .into(),
                );
            }
            DocStore::s3(s3).map_err(|e| format!("cannot open S3 store: {e}"))
        }
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

fn print_settings(settings: &Settings, format: PrintFormat) -> Result<(), String> {
    let value = settings.printable();
    let text = match format {
        PrintFormat::Yaml => serde_yaml::to_string(&value).map_err(|e| e.to_string())?,
        PrintFormat::Json => {
            serde_json::to_string_pretty(&value).map_err(|e| e.to_string())? + "\n"
        }
    };
    print!("{text}");
    Ok(())
}

/// Runs `starfish serve`: the settings, the store, the options of the sync routes,
/// the app around them, then the accept loop until a stop signal.
fn serve(args: ServeArgs) -> Result<(), String> {
    let (text, is_json) = read_config(&args.config)?;
    if let Some(format) = args.print_config {
        // Only the settings: the collections are check-config's business.
        let section = load_section(&args.config, &text, is_json)?;
        return print_settings(&Settings::resolve(args, section)?, format);
    }
    let config = load_config(&args.config, &text, is_json)?;
    let section = load_section(&args.config, &text, is_json)?;
    let settings = Settings::resolve(args, section)?;
    let config = settings.tenancy.isolate(config);
    let span_fields = settings.observe.init_logs();
    for w in config.warnings() {
        tracing::warn!("config warning: {w}");
    }
    let store = cached_store(&settings)?;
    let cap_auth = cap_auth_options(&settings)?;
    let runtime = serving_runtime()?;
    let streams = streams_runtime(settings.limits.streams_nice())?;
    // Flipped when the shutdown signal arrives: live-change streams end then.
    let (stopping, stop_streams) = tokio::sync::watch::channel(false);
    let options = SyncOptions::new(config, store)
        .with_shutdown(stop_streams)
        .with_streams_runtime(streams.handle().clone());
    let options = with_other_nodes(options, cap_auth, &settings, &runtime)?;
    let options = with_settings(options, &settings)?;
    let metrics = settings.observe.metrics();
    let options = observe::ObserveSettings::apply(options, metrics.as_ref());
    // The sync routes as one service (no route table to match per request).
    // Made inside the runtime: the router's bus then ends its streams itself at
    // shutdown (a task waits for the signal), and no stream watches it alone.
    let sync = {
        let _in_runtime = runtime.enter();
        create_sync_service(options).map_err(|e| one_line(&e))?
    };
    let app = observe::request_layers(mounted(sync, &settings.base_path), span_fields);
    let served = runtime.block_on(listen_and_serve(
        settings,
        app,
        metrics,
        (stopping, streams.handle().clone()),
    ));
    // Every stream ended with the server (the accept loop waited for them).
    drop(streams);
    served
}

/// The runtime open live-change streams are written on, threads of its own beside
/// the serving runtime's (`serve::ServeLimits::streams`), at `nice` (`--streams-nice`):
/// a fan-out's writes and the requests that arrive meanwhile are then scheduled by
/// the kernel side by side (requests first when `nice` is above 0), not queued one
/// behind the other.
fn streams_runtime(nice: u8) -> Result<tokio::runtime::Runtime, String> {
    // The same `nice` for every thread, whichever thread starts it.
    let nice = lowered_priority(nice);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("starfish-streams")
        .max_blocking_threads(1)
        .on_thread_start(move || set_this_threads_priority(nice))
        .build()
        .map_err(|e| format!("cannot start the streams' runtime: {e}"))
}

/// The `nice` `by` steps lower than the calling thread's (at most 19); `None`
/// for no change, or where a thread's priority is not set (not Linux).
fn lowered_priority(by: u8) -> Option<i32> {
    if by == 0 {
        return None;
    }
    #[cfg(target_os = "linux")]
    match rustix::process::getpriority_process(Some(rustix::thread::gettid())) {
        Ok(now) => return Some((now + i32::from(by)).min(19)),
        Err(e) => tracing::warn!("cannot read this thread's priority: {e}"),
    }
    None
}

/// Sets the calling thread's `nice` (Linux: a thread's own; lowering needs no
/// privilege). A refusal is logged and the thread runs as others do.
fn set_this_threads_priority(nice: Option<i32>) {
    #[cfg(target_os = "linux")]
    if let Some(nice) = nice {
        let this = Some(rustix::thread::gettid());
        if let Err(e) = rustix::process::setpriority_process(this, nice) {
            tracing::warn!("cannot lower a stream thread's priority: {e}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The store `serve` serves, with its read cache.
fn cached_store(settings: &Settings) -> Result<DocStore, String> {
    let store = open_store(settings)?;
    Ok(match settings.store {
        // Other nodes write the bucket too: every hit is confirmed with the store.
        StoreKind::S3 => store.with_revalidated_read_cache(settings.read_cache_bytes),
        _ => store.with_read_cache(settings.read_cache_bytes),
    })
}

/// Cap-cert authentication as the settings say, with the revocation lists they name.
fn cap_auth_options(settings: &Settings) -> Result<CapAuthOptions, String> {
    let mut cap_auth = settings.auth.options();
    if let Some(path) = &settings.revocations {
        cap_auth.revocations = Arc::new(load_revocations(path)?);
    }
    Ok(cap_auth)
}

/// The runtime `serve` runs on.
fn serving_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // File work (the filesystem store's reads, journal appends, fsyncs) is
        // short: 16 threads keep up with 32 clients, and each thread more costs its
        // stack and allocator arena, about 70 KiB (measured: 45 threads under the
        // bench's storm with tokio's default of 512, 2.7 MiB more peak RSS than 8).
        .max_blocking_threads(16)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))
}

/// `options` with `cap_auth` and what several nodes share: the replay cache and rate
/// limits in Redis (`--redis`), live changes through NATS (`--nats`), each connected
/// now and checked by `/health/ready`.
fn with_other_nodes(
    mut options: SyncOptions,
    mut cap_auth: CapAuthOptions,
    settings: &Settings,
    runtime: &tokio::runtime::Runtime,
) -> Result<SyncOptions, String> {
    let (replay, limits) = match &settings.redis {
        Some(url) => {
            let (replay, limits) = runtime.block_on(shared_state(url))?;
            (Some(replay), Some(limits))
        }
        None => (None, None),
    };
    cap_auth.shared_replay = replay.clone();
    options = options.with_cap_auth(cap_auth);
    if let Some(replay) = replay {
        options = options.with_readiness_check("redis", Arc::new(ReplayReady(replay)));
    }
    if let Some(limits) = limits {
        options = options.with_shared_limits(limits);
    }
    if let Some(url) = &settings.nats {
        let (feed, ready) = runtime.block_on(change_feed(url))?;
        options = options
            .with_change_feed(feed)
            .with_readiness_check("nats", ready);
    }
    let options = settings.queue.apply(options, runtime)?;
    settings.audit.apply(options, runtime)
}

/// `options` with the rest of the settings: the master key of encryption at rest,
/// proxies, `GET /config` and `GET /openapi.json`, limits, browsers (CORS, compression) and tenancy.
fn with_settings(mut options: SyncOptions, settings: &Settings) -> Result<SyncOptions, String> {
    if let Some(master) = master_key()? {
        options = options.with_key_wrap(Arc::new(master));
    }
    options.trusted_proxy_hops = settings.trusted_proxy_hops;
    if let Some(endpoint) = settings.config_endpoint {
        options = options.with_config_endpoint(match endpoint {
            ConfigEndpointArg::Public => ConfigEndpoint::Public,
            ConfigEndpointArg::RoleFiltered => ConfigEndpoint::RoleFiltered,
        });
    }
    if settings.openapi_endpoint {
        options = options.with_openapi_endpoint();
    }
    let options = settings.limits.apply(options);
    let options = settings.cors.apply(options, settings.no_compression)?;
    let clock: Arc<dyn starfish_server::auth::Clock> = Arc::new(starfish_server::auth::SystemClock);
    let options = settings.sharing.apply(options, clock)?;
    let options = options.with_webhooks(settings.webhooks.build()?);
    let options = options.with_projections(projections::build(&settings.projections)?);

    settings.tenancy.apply(options)
}

/// The sync routes mounted at each of `base_path`'s prefixes.
fn mounted<S: SyncService>(sync: S, base_path: &[String]) -> tower::util::Either<S, axum::Router> {
    // Mounted at `/` alone (the default), the service is the whole app: an outer
    // router would only match a catch-all route and box the request on every call.
    if base_path == ["/"] {
        return tower::util::Either::Left(sync);
    }
    let mut app = axum::Router::new();
    for prefix in base_path {
        app = match prefix.as_str() {
            "/" => app.fallback_service(sync.clone()),
            p => app.nest_service(p, sync.clone()),
        };
    }
    tower::util::Either::Right(app)
}

/// Listens where the settings say (and serves metrics on their own port) and serves
/// `app` until a stop signal; then tells live-change streams (`stopping`) and
/// finishes the requests in flight.
async fn listen_and_serve(
    settings: Settings,
    app: impl serve::App,
    metrics: Option<Metrics>,
    (stopping, streams): (tokio::sync::watch::Sender<bool>, tokio::runtime::Handle),
) -> Result<(), String> {
    // Before anything listens: a SIGTERM the moment the server (or its metrics
    // port) is up stops it gracefully instead of killing it by the signal's
    // default action.
    let shutdown = shutdown_signal()?;
    if let (Some(addr), Some(metrics)) = (&settings.observe.metrics_addr, &metrics) {
        observe::serve_metrics(addr, metrics).await?;
    }
    let addr = format!("{}:{}", settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    tracing::info!(
        "starfish listening on http://{local} (mounted at {}, store {})",
        settings.base_path.join(", "),
        settings.store.name(),
    );
    serve::serve(
        listener,
        app,
        settings.limits.serve_limits(Some(streams)),
        async move {
            shutdown.await;
            let _ = stopping.send(true);
        },
    )
    .await;
    tracing::info!("starfish stopped");
    Ok(())
}

/// Installs the handlers of SIGINT and SIGTERM now, and returns the future that
/// completes on the first of them, saying so in the log.
fn shutdown_signal() -> Result<impl Future<Output = ()> + use<>, String> {
    let signals = stop_signals()?;
    Ok(async move {
        signals.await;
        tracing::info!("shutdown signal received, finishing in-flight requests");
    })
}

/// Installs the handlers of SIGINT and SIGTERM (Ctrl-C on Windows) now, and returns
/// the future that completes on the first of them. Inside a runtime.
pub(crate) fn stop_signals() -> Result<impl Future<Output = ()> + use<>, String> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let handler = |kind: SignalKind, name: &str| {
            signal(kind).map_err(|e| format!("cannot handle {name}: {e}"))
        };
        let mut interrupt = handler(SignalKind::interrupt(), "SIGINT")?;
        let mut terminate = handler(SignalKind::terminate(), "SIGTERM")?;
        async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
        }
    };
    #[cfg(windows)]
    let signals = {
        let mut ctrl_c =
            tokio::signal::windows::ctrl_c().map_err(|e| format!("cannot handle Ctrl-C: {e}"))?;
        async move {
            ctrl_c.recv().await;
        }
    };
    #[cfg(not(any(unix, windows)))]
    let signals = std::future::pending::<()>();
    Ok(signals)
}

/// The master key of encryption at rest: `STARFISH_MASTER_KEY` (64 hex digits or
/// base64 of 32 bytes), or the file `STARFISH_MASTER_KEY_FILE` names.
pub(crate) fn master_key() -> Result<Option<starfish_server::store::MasterKey>, String> {
    let text = match (
        std::env::var("STARFISH_MASTER_KEY"),
        std::env::var("STARFISH_MASTER_KEY_FILE"),
    ) {
        (Ok(key), _) => key,
        (Err(_), Ok(path)) => std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the master key file {path}: {e}"))?,
        _ => return Ok(None),
    };
    starfish_server::store::MasterKey::parse(&text).map(Some)
}

/// What nodes share in Redis.
type SharedState = (
    Arc<dyn starfish_server::auth::ReplayStore>,
    Arc<dyn starfish_server::access::SharedLimits>,
);

/// The replay cache and the rate-limit counters in Redis at `url`, connected once
/// before serving.
#[cfg(feature = "redis")]
async fn shared_state(url: &str) -> Result<SharedState, String> {
    let unreachable = |e: String| format!("cannot reach Redis (--redis): {e}");
    let replay = starfish_server::auth::RedisReplay::connect(url, None)
        .await
        .map_err(unreachable)?;
    // On a new Redis the cache's memory starts now, not at the first request (which
    // would be refused as signed before it).
    let now = starfish_server::auth::Clock::now_ms(&starfish_server::auth::SystemClock);
    replay.start_memory(now).await.map_err(unreachable)?;
    let limits = starfish_server::access::RedisLimits::connect(url, None)
        .await
        .map_err(unreachable)?;
    Ok((Arc::new(replay), Arc::new(limits)))
}

#[cfg(not(feature = "redis"))]
async fn shared_state(_url: &str) -> Result<SharedState, String> {
    Err("this build lacks the `redis` feature".into())
}

/// The change feed between nodes, and its readiness check.
type Feed = (
    Arc<dyn starfish_server::live::ChangeFeed>,
    Arc<dyn starfish_server::ReadinessCheck>,
);

/// Live changes between nodes through NATS at `url`, connected once before serving.
#[cfg(feature = "nats")]
async fn change_feed(url: &str) -> Result<Feed, String> {
    let feed = starfish_server::live::NatsFeed::connect(url, None)
        .await
        .map_err(|e| format!("cannot reach NATS (--nats): {e}"))?;
    Ok((Arc::new(feed.clone()), Arc::new(NatsReady(feed))))
}

#[cfg(not(feature = "nats"))]
async fn change_feed(_url: &str) -> Result<Feed, String> {
    Err("this build lacks the `nats` feature".into())
}

/// `/health/ready` asks whether the NATS connection is up.
#[cfg(feature = "nats")]
struct NatsReady(starfish_server::live::NatsFeed);

#[cfg(feature = "nats")]
#[async_trait::async_trait]
impl starfish_server::ReadinessCheck for NatsReady {
    async fn check(&self) -> Result<(), String> {
        if self.0.is_connected() {
            Ok(())
        } else {
            Err("NATS is not connected".into())
        }
    }
}

/// `/health/ready` asks Redis too.
struct ReplayReady(Arc<dyn starfish_server::auth::ReplayStore>);

#[async_trait::async_trait]
impl starfish_server::ReadinessCheck for ReplayReady {
    async fn check(&self) -> Result<(), String> {
        if self.0.ping().await {
            Ok(())
        } else {
            Err("Redis does not answer".into())
        }
    }
}

/// The config, settings and store `serve` would use with `args`: for the commands
/// that work on a server's store (`migrate`, `admin rotate-keys`).
pub(crate) fn as_serve_finds_it(
    args: ServeArgs,
) -> Result<(SyncConfig, Settings, DocStore), String> {
    let (text, is_json) = read_config(&args.config)?;
    let config = load_config(&args.config, &text, is_json)?;
    let section = load_section(&args.config, &text, is_json)?;
    let settings = Settings::resolve(args, section)?;
    let config = settings.tenancy.isolate(config);
    let store = open_store(&settings)?;
    Ok((config, settings, store))
}

/// A `--grace` value: seconds from 0 to 3600.
pub(crate) fn grace_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0 to 3600".into()),
    }
}

#[cfg(test)]
mod tests {
    /// The streams' threads run at the `nice` asked, those started later by one
    /// of them too (not lower again), and the thread that built the runtime as it
    /// was.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_streams_threads_run_at_the_nice_asked() {
        let nice_here = || rustix::process::getpriority_process(Some(rustix::thread::gettid()));
        let before = nice_here().unwrap();
        let streams = super::streams_runtime(7).unwrap();
        let (worker, later) = streams.block_on(async move {
            tokio::spawn(async move {
                let worker = nice_here().unwrap();
                let later = tokio::task::spawn_blocking(move || nice_here().unwrap());
                (worker, later.await.unwrap())
            })
            .await
            .unwrap()
        });
        assert_eq!(worker, (before + 7).min(19));
        assert_eq!(
            later, worker,
            "a thread a worker starts is not lowered again"
        );
        assert_eq!(
            nice_here().unwrap(),
            before,
            "this thread is left as it was"
        );
        let unchanged = super::streams_runtime(0).unwrap();
        let worker = unchanged.block_on(async move {
            tokio::spawn(async move { nice_here().unwrap() })
                .await
                .unwrap()
        });
        assert_eq!(worker, before);
    }
}
