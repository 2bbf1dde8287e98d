//! Flags for browser clients: CORS and response compression.

use clap::builder::BoolishValueParser;
use serde::Serialize;
use starfish_server::{CorsSettings, SyncOptions};
use std::time::Duration;

/// Browser clients: CORS (off unless `--cors-origin` is given) and compression. Like
/// every `serve` option, each is also a `STARFISH_*` variable and a `server:` key
/// (`cors.origin`, `cors.maxAge`, `cors.credentials`, `noCompression`).
#[derive(clap::Args)]
#[command(next_help_heading = "Browsers")]
pub(crate) struct CorsArgs {
    /// Allow browser pages from this origin (`https://app.example.com`, no path) to
    /// call the server. Repeat it for several origins (or separate them with commas);
    /// `*` allows any origin. Without it, no CORS headers are sent.
    #[arg(
        long = "cors-origin",
        env = "STARFISH_CORS_ORIGIN",
        value_delimiter = ','
    )]
    pub(crate) cors_origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds [default: 86400].
    #[arg(long, env = "STARFISH_CORS_MAX_AGE", value_name = "SECONDS")]
    pub(crate) cors_max_age: Option<u64>,
    /// Send `Access-Control-Allow-Credentials: true` (refused with `--cors-origin '*'`)
    /// [default: false].
    #[arg(long, env = "STARFISH_CORS_CREDENTIALS", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    pub(crate) cors_credentials: Option<bool>,
    /// Never gzip/brotli-encode JSON responses (blobs never are) [default: false].
    #[arg(long, env = "STARFISH_NO_COMPRESSION", num_args = 0..=1,
          default_missing_value = "true", value_parser = BoolishValueParser::new(),
          value_name = "BOOL")]
    pub(crate) no_compression: Option<bool>,
}

/// The effective CORS settings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Cors {
    /// Allowed origins; empty: no CORS headers.
    pub(crate) origin: Vec<String>,
    /// Preflight cache lifetime, in seconds.
    pub(crate) max_age: u64,
    /// `Access-Control-Allow-Credentials: true`.
    pub(crate) credentials: bool,
}

/// The default `cors.maxAge`, in seconds.
pub(crate) const DEFAULT_MAX_AGE_SECS: u64 = CorsSettings::DEFAULT_MAX_AGE.as_secs();

impl Cors {
    /// `options` with these settings and compression (unless `no_compression`)
    /// applied; the settings are checked when the router is built.
    pub(crate) fn apply(
        &self,
        options: SyncOptions,
        no_compression: bool,
    ) -> Result<SyncOptions, String> {
        let options = options.with_compression(!no_compression);
        if self.origin.is_empty() {
            if self.credentials {
                return Err("--cors-credentials needs --cors-origin".into());
            }
            return Ok(options);
        }
        Ok(options.with_cors(
            CorsSettings::origins(self.origin.iter().map(|o| o.trim()))
                .with_max_age(Duration::from_secs(self.max_age))
                .with_credentials(self.credentials),
        ))
    }
}
