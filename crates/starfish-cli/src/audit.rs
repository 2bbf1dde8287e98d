//! `starfish serve`'s audit settings: where the audit trail goes.
//!
//! ```yaml
//! server:
//!   audit:
//!     log: /var/log/starfish/audit.jsonl   # --audit-log (`-`: stdout)
//!     nats: nats://127.0.0.1:4222          # --audit-nats: starfish.audit.<namespace>
//!     readSample: 1                        # --audit-read-sample: one successful read in N
//!     tenantRetentionDays: 30              # --audit-tenant-retention-days: each namespace
//!                                          # keeps its own trail, read by its admin
//! ```

use serde::{Deserialize, Serialize};
use starfish_server::SyncOptions;
use starfish_server::audit::{AuditOptions, AuditSink, JsonLines};
use std::path::PathBuf;
use std::sync::Arc;

/// The `server: audit:` section, and its flags.
#[derive(Debug, Default, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuditSection {
    /// JSON lines to this file, or `-` for stdout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) log: Option<PathBuf>,
    /// One successful read in this many is recorded (1: every one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) read_sample: Option<u32>,
    /// Records also on this NATS server, under `starfish.audit.<namespace>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nats: Option<String>,
    /// Each namespace keeps its own trail this many days.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tenant_retention_days: Option<u32>,
}

impl AuditSection {
    /// The flags over the section.
    pub(crate) fn with_flags(
        mut self,
        log: Option<PathBuf>,
        read_sample: Option<u32>,
        tenant_retention_days: Option<u32>,
        nats: Option<String>,
    ) -> Self {
        if nats.is_some() {
            self.nats = nats;
        }
        if log.is_some() {
            self.log = log;
        }
        if read_sample.is_some() {
            self.read_sample = read_sample;
        }
        if tenant_retention_days.is_some() {
            self.tenant_retention_days = tenant_retention_days;
        }
        self
    }

    /// `options` auditing to the log and NATS, when they are set.
    ///
    /// # Errors
    /// The log file cannot be opened, or NATS cannot be reached.
    pub(crate) fn apply(
        &self,
        options: SyncOptions,
        runtime: &tokio::runtime::Runtime,
    ) -> Result<SyncOptions, String> {
        let mut sinks: Vec<Arc<dyn AuditSink>> = Vec::new();
        if let Some(log) = &self.log {
            let sink = if log.as_os_str() == "-" {
                JsonLines::new(Box::new(std::io::stdout()))
            } else {
                JsonLines::file(log).map_err(|e| format!("--audit-log {}: {e}", log.display()))?
            };
            sinks.push(Arc::new(sink));
        }
        if let Some(url) = &self.nats {
            sinks.push(runtime.block_on(nats_sink(url))?);
        }
        if sinks.is_empty() {
            return Ok(options);
        }
        let mut audit = AuditOptions::new(Arc::new(sinks), hostname())
            .with_read_sample(self.read_sample.unwrap_or(1));
        if let Some(days) = self.tenant_retention_days {
            audit =
                audit.with_tenant_trails(std::time::Duration::from_secs(u64::from(days) * 86_400));
        }
        Ok(options.with_audit(audit))
    }
}

/// The audit trail on NATS at `url`.
#[cfg(feature = "nats")]
async fn nats_sink(url: &str) -> Result<Arc<dyn AuditSink>, String> {
    let sink = starfish_server::audit::NatsAudit::connect(url, None)
        .await
        .map_err(|e| format!("cannot reach NATS (--audit-nats): {e}"))?;
    Ok(Arc::new(sink))
}

#[cfg(not(feature = "nats"))]
async fn nats_sink(_url: &str) -> Result<Arc<dyn AuditSink>, String> {
    Err("this build lacks the `nats` feature (--audit-nats)".into())
}

/// This machine's name, for the records' `node` (the process id when unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

impl AuditSection {
    /// Records an admin action run by the binary itself (`migrate`, `rotate-keys`)
    /// in the audit log, when one is set: written before the command exits.
    pub(crate) fn record_offline(&self, action: &str, target: &str, result: &Result<(), String>) {
        let Some(log) = &self.log else {
            return;
        };
        let mut record = starfish_server::audit::AuditRecord::default();
        record.timestamp = now_ms();
        record.action = format!("admin.{action}");
        record.identity = Some("operator".into());
        record.success = result.is_ok();
        record.status_code = if result.is_ok() { 200 } else { 500 };
        record.node = hostname();
        record.target = Some(target.to_owned());
        record.reason = result.as_ref().err().cloned();
        let mut line = serde_json::to_vec(&record).unwrap_or_default();
        line.push(b'\n');
        let written = if log.as_os_str() == "-" {
            std::io::Write::write_all(&mut std::io::stdout(), &line)
        } else {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut file| std::io::Write::write_all(&mut file, &line))
        };
        if let Err(e) = written {
            eprintln!("starfish: the audit record of {action} was not written: {e}");
        }
    }
}

/// Milliseconds since the epoch, by the system clock.
fn now_ms() -> u64 {
    use starfish_server::auth::Clock as _;
    starfish_server::auth::SystemClock.now_ms()
}
