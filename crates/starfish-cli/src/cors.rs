//! Flags for browser clients: CORS and response compression.

use starfish_server::{CorsSettings, SyncOptions};
use std::time::Duration;

/// Browser clients: CORS (off unless `--cors-origin` is given) and compression.
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
    cors_origins: Vec<String>,
    /// How long a browser may cache a preflight answer, in seconds.
    #[arg(long, env = "STARFISH_CORS_MAX_AGE", value_name = "SECONDS", default_value_t = CorsSettings::DEFAULT_MAX_AGE.as_secs())]
    cors_max_age: u64,
    /// Send `Access-Control-Allow-Credentials: true` (refused with `--cors-origin '*'`).
    #[arg(long, env = "STARFISH_CORS_CREDENTIALS")]
    cors_credentials: bool,
    /// Never gzip/brotli-encode JSON responses (blobs never are).
    #[arg(long, env = "STARFISH_NO_COMPRESSION")]
    no_compression: bool,
}

impl CorsArgs {
    /// `options` with these flags applied; the settings are checked when the router
    /// is built.
    pub(crate) fn apply(&self, options: SyncOptions) -> Result<SyncOptions, String> {
        let mut options = options.with_compression(!self.no_compression);
        if self.cors_origins.is_empty() {
            if self.cors_credentials {
                return Err("--cors-credentials needs --cors-origin".into());
            }
            return Ok(options);
        }
        options = options.with_cors(
            CorsSettings::origins(self.cors_origins.iter().map(|o| o.trim()))
                .with_max_age(Duration::from_secs(self.cors_max_age))
                .with_credentials(self.cors_credentials),
        );
        Ok(options)
    }
}
