//! `starfish migrate NAMESPACE`: moves a `shared` config namespace to `prefixed` keys
//! in the store the server uses, while servers run (docs/namespaces.md). It reads the
//! same settings as `serve` (flags, `STARFISH_*`, the `server:` section), so it finds
//! the same store.

use crate::settings::ServeArgs;
use starfish_server::migrate::{
    MigrateOptions, MigrateReport, Phase, abort_migration, migrate_to_prefixed, migration_status,
};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the copy prints where it is, in objects.
const REPORT_EVERY: u64 = 1000;

#[derive(clap::Args)]
pub(crate) struct MigrateArgs {
    /// The config namespace to move from `shared` to `prefixed` keys.
    #[arg(required_unless_present = "status")]
    namespace: Option<String>,
    /// Seconds writes stay frozen before the last pass: more than the servers'
    /// refresh (1 s) plus their longest write, plus the filesystem store's journal
    /// interval (1 s) for a data directory.
    #[arg(long, default_value_t = 5.0, value_parser = crate::grace_seconds)]
    grace: f64,
    /// Abandon the namespace's migration: servers go back to its shared keys.
    #[arg(long, conflicts_with = "status")]
    abort: bool,
    /// Print every migration's state and exit.
    #[arg(long)]
    status: bool,
    /// The server's settings (the store is found as `serve` finds it).
    #[command(flatten)]
    serve: ServeArgs,
}

pub(crate) fn run(args: MigrateArgs) -> Result<(), String> {
    let (config, settings, store) = crate::as_serve_finds_it(args.serve)?;
    let audit = settings.audit;
    let target = args.namespace.clone().unwrap_or_default();
    let action = if args.abort {
        Some("namespace.migrate-abort")
    } else if args.status {
        None
    } else {
        Some("namespace.migrate")
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(async move {
        if args.status {
            let all = migration_status(&store).await.map_err(|e| e.to_string())?;
            let text = serde_json::to_string_pretty(&all).map_err(|e| e.to_string())?;
            println!("{text}");
            return Ok(());
        }
        let namespace = args.namespace.unwrap_or_default();
        if args.abort {
            abort_migration(&store, &namespace)
                .await
                .map_err(|e| e.to_string())?;
            eprintln!("starfish: migration of {namespace:?} aborted; its shared keys are served");
            return Ok(());
        }
        // Ctrl-C or SIGTERM stops between two objects, with the position saved
        // (handled from before the first object: not killed where it stands).
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let signals = crate::stop_signals()?;
        tokio::spawn(async move {
            signals.await;
            flag.store(true, Ordering::Relaxed);
        });
        let options = MigrateOptions::default().with_grace(Duration::from_secs_f64(args.grace));
        let mut phase = None;
        let report = migrate_to_prefixed(&config, &store, &namespace, &options, |r| {
            tell(&namespace, r, &mut phase);
            if stop.load(Ordering::Relaxed) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await
        .map_err(|e| format!("{namespace:?}: {e}"))?;
        eprintln!(
            "starfish: {namespace:?} now lives under _starfish/ns/{namespace}/ ({} objects copied, \
             {} unchanged); set `isolation: prefixed` on it in the config at the next restart",
            report.copied, report.unchanged
        );
        Ok(())
    });
    if let Some(action) = action {
        audit.record_offline(action, &target, &result);
    }
    result
}

/// Prints phase changes, and the count every [`REPORT_EVERY`] objects.
fn tell(namespace: &str, report: &MigrateReport, last: &mut Option<Phase>) {
    if *last != Some(report.phase) {
        *last = Some(report.phase);
        let what = match report.phase {
            Phase::Copying => "copying (served from the shared keys)",
            Phase::Frozen => "frozen: writes wait while the last pass copies what changed",
            Phase::Done => "done: served from the prefixed keys",
        };
        eprintln!("starfish: {namespace:?}: {what}");
    } else if report.examined % REPORT_EVERY == 0 {
        eprintln!(
            "starfish: {namespace:?}: {} objects examined, {} copied",
            report.examined, report.copied
        );
    }
}
