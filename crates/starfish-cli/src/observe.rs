//! `starfish serve`'s observability settings: Prometheus metrics on a listener of
//! their own, the log format, and a request id on every request and log line.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use starfish_server::{Metrics, SyncOptions};

/// `serve` flags; each also a `STARFISH_*` variable and a key of `server.observe`.
#[derive(clap::Args)]
pub(crate) struct ObserveArgs {
    /// Serve Prometheus metrics at `http://ADDR/metrics`, apart from the sync routes
    /// (namespace names never reach the public port) [default: off].
    #[arg(long, env = "STARFISH_METRICS_ADDR", value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Log lines as text or as JSON objects (one per line) [default: text].
    #[arg(long, value_enum, env = "STARFISH_LOG_FORMAT")]
    log_format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, ValueEnum, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Text,
    Json,
}

/// `server.observe` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ObserveSection {
    metrics_addr: Option<String>,
    log_format: Option<LogFormat>,
}

/// The effective observability settings.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ObserveSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metrics_addr: Option<String>,
    pub(crate) log_format: LogFormat,
}

impl ObserveSettings {
    /// Flags and environment over the section.
    pub(crate) fn resolve(args: ObserveArgs, section: ObserveSection) -> Self {
        Self {
            metrics_addr: args.metrics_addr.or(section.metrics_addr),
            log_format: args.log_format.or(section.log_format).unwrap_or_default(),
        }
    }

    /// The metrics to count into, when they are served.
    pub(crate) fn metrics(&self) -> Option<Metrics> {
        self.metrics_addr.as_ref().map(|_| Metrics::new())
    }

    /// `options` counting into `metrics`.
    pub(crate) fn apply(options: SyncOptions, metrics: Option<&Metrics>) -> SyncOptions {
        match metrics {
            Some(m) => options.with_metrics(m.clone()),
            None => options,
        }
    }

    /// Starts the log subscriber in the chosen format.
    pub(crate) fn init_logs(&self) {
        let filter =
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
        // Colours only for a terminal: escape codes cost time and clutter log files.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi);
        match self.log_format {
            LogFormat::Text => builder.init(),
            LogFormat::Json => builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .init(),
        }
    }
}

/// Every request gets an `x-request-id` (the client's, if it sent a sane one, else a
/// fresh random one), echoed in the response, and a `request` span carrying it, its
/// method and its path, so every log line of the request names it.
pub(crate) fn request_layers(app: axum::Router) -> impl crate::serve::App {
    use tower_http::request_id::{
        MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
    };
    /// A random prefix drawn once per process, then a counter: unique ids without a
    /// system call per request.
    #[derive(Clone)]
    struct Sequential {
        prefix: u64,
        next: std::sync::Arc<std::sync::atomic::AtomicU32>,
    }
    impl MakeRequestId for Sequential {
        fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
            let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let id = format!("{:016x}{n:08x}", self.prefix);
            axum::http::HeaderValue::from_str(&id)
                .ok()
                .map(RequestId::new)
        }
    }
    let mut seed = [0u8; 8];
    // Without randomness the ids are still unique within the process.
    let _ = getrandom::fill(&mut seed);
    let ids = Sequential {
        prefix: u64::from_le_bytes(seed),
        next: std::sync::Arc::default(),
    };
    let header = axum::http::HeaderName::from_static("x-request-id");
    let trace = tower_http::trace::TraceLayer::new_for_http().make_span_with(
        |request: &axum::http::Request<axum::body::Body>| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                "request",
                id,
                method = %request.method(),
                path = request.uri().path(),
            )
        },
    );
    // Around the whole router as one service (`Router::layer` would box each layer per
    // request): the id is set, then the span made with it, and the id is copied to
    // the response.
    tower::ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(header.clone(), ids))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(header))
        .service(app)
}

/// Serves `metrics` at `http://addr/metrics` until the process ends.
///
/// # Errors
/// When `addr` cannot be bound.
pub(crate) async fn serve_metrics(addr: &str, metrics: &Metrics) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot read the metrics address: {e}"))?;
    tracing::info!("metrics on http://{local}/metrics");
    let app = metrics.router();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
