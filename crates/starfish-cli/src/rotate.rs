//! `starfish admin rotate-keys NAMESPACE`: a new data key for a namespace with
//! `encryptAtRest`, and its objects sealed again under it, while servers run
//! (docs/namespaces.md). It reads the same settings as `serve` (flags, `STARFISH_*`,
//! the `server:` section, the master key), so it finds the same store and keys.

use crate::settings::{ServeArgs, Settings};
use starfish_server::SyncOptions;
use starfish_server::rotate::{RotateOptions, rotate_keys};
use std::sync::Arc;
use std::time::Duration;

/// How often the pass prints where it is, in objects.
const REPORT_EVERY: u64 = 1000;

#[derive(clap::Args)]
pub(crate) struct RotateArgs {
    /// The config namespace (with `encryptAtRest`) whose key to rotate.
    namespace: String,
    /// Seconds to wait after adding the key, before re-sealing: more than the
    /// servers' keyring refresh (5 s) plus their longest write.
    #[arg(long, default_value_t = 10.0, value_parser = grace)]
    grace: f64,
    /// No server is running on this store: needed on a store without conditional
    /// writes (the filesystem).
    #[arg(long)]
    offline: bool,
    /// The server's settings (the store is found as `serve` finds it).
    #[command(flatten)]
    serve: ServeArgs,
}

fn grace(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=3600.0).contains(&s) => Ok(s),
        _ => Err("a number of seconds from 0 to 3600".into()),
    }
}

pub(crate) fn run(args: RotateArgs) -> Result<(), String> {
    let (text, is_json) = crate::read_config(&args.serve.config)?;
    let config = crate::load_config(&args.serve.config, &text, is_json)?;
    let section = crate::load_section(&args.serve.config, &text, is_json)?;
    let settings = Settings::resolve(args.serve, section)?;
    let config = settings.tenancy.isolate(config);
    let store = crate::open_store(&settings)?;
    let mut options = settings.tenancy.apply(SyncOptions::new(config, store))?;
    let master = crate::master_key()?
        .ok_or("give the master key: STARFISH_MASTER_KEY or STARFISH_MASTER_KEY_FILE")?;
    options = options.with_key_wrap(Arc::new(master));
    let how = RotateOptions {
        grace: Duration::from_secs_f64(args.grace),
        offline: args.offline,
    };
    let namespace = args.namespace;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let mut seen = 0u64;
        let report = rotate_keys(&options, &namespace, how, |r| {
            seen += 1;
            if seen % REPORT_EVERY == 0 {
                eprintln!(
                    "starfish: {namespace:?}: pass {}, {} objects re-sealed",
                    r.passes, r.resealed
                );
            }
        })
        .await
        .map_err(|e| format!("{namespace:?}: {e}"))?;
        eprintln!(
            "starfish: {namespace:?}: every object is sealed under key version {}{} \
             ({} re-sealed, {} already current, {} not sealed (delegated), {} passes)",
            report.version,
            if report.resumed { " (resumed)" } else { "" },
            report.resealed,
            report.current,
            report.plain,
            report.passes
        );
        if report.unopenable > 0 {
            eprintln!(
                "starfish: {namespace:?}: {} objects look sealed but do not open and were left as they are: {}",
                report.unopenable,
                report.unopenable_keys.join(", ")
            );
        }
        Ok(())
    })
}
