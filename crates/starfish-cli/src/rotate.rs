//! `starfish admin rotate-keys NAMESPACE`: a new data key for a namespace with
//! `encryptAtRest`, and its objects sealed again under it, while servers run
//! (docs/namespaces.md). It reads the same settings as `serve` (flags, `STARFISH_*`,
//! the `server:` section, the master key), so it finds the same store and keys.

use crate::settings::ServeArgs;
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
    #[arg(long, default_value_t = 10.0, value_parser = crate::grace_seconds)]
    grace: f64,
    /// No server is running on this store: needed on a store without conditional
    /// writes (the filesystem).
    #[arg(long)]
    offline: bool,
    /// The server's settings (the store is found as `serve` finds it).
    #[command(flatten)]
    serve: ServeArgs,
}

pub(crate) fn run(args: RotateArgs) -> Result<(), String> {
    let (config, settings, store) = crate::as_serve_finds_it(args.serve)?;
    let audit = settings.audit.clone();
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
    let result = runtime.block_on(async {
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
    });
    audit.record_offline("rotate-keys", &namespace, &result);
    result
}
