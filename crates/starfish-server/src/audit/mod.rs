//! The audit trail: one [`AuditRecord`] per decision, the reference's `AuditEntry`
//! (`timestamp`, `action`, `collection`, `identity`, `documentKey`, `success`,
//! `statusCode`, `params`) plus what an operator of many tenants needs
//! (`namespace`, `requestId`, `apiKeyId`, `node`, `reason`, `target`): every pull,
//! push and list, allowed or denied, and every admin action. Never a document's
//! data, a token or a secret: a record holds names, keys, identities and statuses.
//!
//! Records go to an [`AuditSink`]: [`JsonLines`] (stdout or a file), `NatsAudit`
//! (feature `nats`: a subject per namespace), or one of your own. Successful reads may be sampled ([`AuditOptions::read_sample`]); denials,
//! writes and admin actions never are.

mod line;
#[cfg(feature = "nats")]
mod nats;
mod tenant;
mod trail;

#[cfg(feature = "nats")]
pub use nats::NatsAudit;

pub(crate) use tenant::TenantTrails;

pub(crate) use trail::{TRAIL, Trail, note};

use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One audited decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct AuditRecord {
    /// When it was decided, ms since the epoch.
    pub timestamp: u64,
    /// `pull`, `push`, `list`, or an admin action (`admin.namespace.create`, …).
    pub action: String,
    /// The collection (`""` when none: a batch, an admin action).
    pub collection: String,
    /// Who asked, when known (`null` for an anonymous or unverified caller).
    pub identity: Option<String>,
    /// The object key read or written (`""` when none).
    pub document_key: String,
    /// The request succeeded (2xx or 304).
    pub success: bool,
    /// The status answered.
    pub status_code: u16,
    /// The route's path parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, String>>,
    /// The namespace (`None` at the root).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The request's `x-request-id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The API key used, by id (never its token).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_id: Option<String>,
    /// The node that decided.
    pub node: String,
    /// Why it was refused (the server's own words; never the client's input).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What an admin action acted on (a namespace, a key id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// An [`AuditRecord`] as the router holds it, borrowed from the request: what a
/// sink that writes records out at once (a JSON line) takes without copying them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditEntry<'a> {
    /// When it was decided, ms since the epoch.
    pub timestamp: u64,
    /// See [`AuditRecord::action`].
    pub action: &'a str,
    /// See [`AuditRecord::collection`].
    pub collection: &'a str,
    /// See [`AuditRecord::identity`].
    pub identity: Option<&'a str>,
    /// See [`AuditRecord::document_key`].
    pub document_key: &'a str,
    /// See [`AuditRecord::success`].
    pub success: bool,
    /// See [`AuditRecord::status_code`].
    pub status_code: u16,
    /// The route's path parameters, sorted by name.
    pub params: Option<&'a [(&'a str, &'a str)]>,
    /// See [`AuditRecord::namespace`].
    pub namespace: Option<&'a str>,
    /// See [`AuditRecord::request_id`].
    pub request_id: Option<&'a str>,
    /// See [`AuditRecord::api_key_id`].
    pub api_key_id: Option<&'a str>,
    /// See [`AuditRecord::node`].
    pub node: &'a str,
    /// See [`AuditRecord::reason`].
    pub reason: Option<&'a str>,
    /// See [`AuditRecord::target`].
    pub target: Option<&'a str>,
}

impl AuditEntry<'_> {
    /// The same, owned.
    pub fn to_record(&self) -> AuditRecord {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        AuditRecord {
            timestamp: self.timestamp,
            action: self.action.to_owned(),
            collection: self.collection.to_owned(),
            identity: owned(self.identity),
            document_key: self.document_key.to_owned(),
            success: self.success,
            status_code: self.status_code,
            params: self.params.map(|p| {
                p.iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect()
            }),
            namespace: owned(self.namespace),
            request_id: owned(self.request_id),
            api_key_id: owned(self.api_key_id),
            node: self.node.to_owned(),
            reason: owned(self.reason),
            target: owned(self.target),
        }
    }
}

impl AuditRecord {
    /// Calls `f` with this record borrowed.
    pub fn with_entry<R>(&self, f: impl FnOnce(&AuditEntry<'_>) -> R) -> R {
        let params: Option<Vec<(&str, &str)>> = self
            .params
            .as_ref()
            .map(|p| p.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect());
        f(&AuditEntry {
            timestamp: self.timestamp,
            action: &self.action,
            collection: &self.collection,
            identity: self.identity.as_deref(),
            document_key: &self.document_key,
            success: self.success,
            status_code: self.status_code,
            params: params.as_deref(),
            namespace: self.namespace.as_deref(),
            request_id: self.request_id.as_deref(),
            api_key_id: self.api_key_id.as_deref(),
            node: &self.node,
            reason: self.reason.as_deref(),
            target: self.target.as_deref(),
        })
    }
}

/// Where audit records go. Called on the request's task: hand the record on (a
/// channel, a buffer), never wait.
pub trait AuditSink: Send + Sync + 'static {
    /// One decision.
    fn record(&self, record: &AuditRecord);

    /// One decision, borrowed: the router calls this. By default it makes an
    /// [`AuditRecord`] of it for [`Self::record`]; a sink that writes the record
    /// out at once overrides it to skip the copy ([`JsonLines`] does).
    fn record_entry(&self, entry: &AuditEntry<'_>) {
        self.record(&entry.to_record());
    }
}

/// Several sinks: each record to every one, in order.
impl AuditSink for Vec<Arc<dyn AuditSink>> {
    fn record(&self, record: &AuditRecord) {
        for sink in self {
            sink.record(record);
        }
    }

    fn record_entry(&self, entry: &AuditEntry<'_>) {
        for sink in self {
            sink.record_entry(entry);
        }
    }
}

/// How a router audits.
#[derive(Clone)]
pub struct AuditOptions {
    /// Where the records go.
    pub sink: Arc<dyn AuditSink>,
    /// One successful read (pull, list) in this many is recorded; 1: all. Denials,
    /// writes and admin actions are always recorded.
    pub read_sample: u32,
    /// This node's name in the records.
    pub node: String,
    /// Keep each namespace's records in its own part of the store too, for its
    /// admin to read (`GET /_starfish/admin/namespaces/<name>/audit`), this long
    /// (ms); `None`: not kept.
    pub tenant_retention_ms: Option<u64>,
}

impl std::fmt::Debug for AuditOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditOptions")
            .field("read_sample", &self.read_sample)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl AuditOptions {
    /// Every decision to `sink`, from node `node`.
    pub fn new(sink: Arc<dyn AuditSink>, node: impl Into<String>) -> Self {
        Self {
            sink,
            read_sample: 1,
            node: node.into(),
            tenant_retention_ms: None,
        }
    }

    /// Keeps each namespace's records in its part of the store for `retention`,
    /// readable by its admin.
    #[must_use]
    pub fn with_tenant_trails(mut self, retention: std::time::Duration) -> Self {
        self.tenant_retention_ms = Some(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// One successful read in `n` (at least 1).
    #[must_use]
    pub fn with_read_sample(mut self, n: u32) -> Self {
        self.read_sample = n.max(1);
        self
    }
}

/// The router's auditor: the options, the sampling counter, the tenants' trails.
pub(crate) struct Auditor {
    options: AuditOptions,
    reads: AtomicU64,
    pub(crate) tenants: Option<Arc<TenantTrails>>,
}

impl Auditor {
    pub(crate) fn new(options: AuditOptions) -> Self {
        let tenants = options
            .tenant_retention_ms
            .map(|retention| Arc::new(TenantTrails::new(&options.node, retention)));
        Self {
            options,
            reads: AtomicU64::new(0),
            tenants,
        }
    }

    /// False for a successful read (`action` pull or list) the sampling leaves
    /// out: then nothing is built for it.
    pub(crate) fn keeps(&self, action: &str, success: bool) -> bool {
        let read = action == "pull" || action == "list";
        if !(read && success && self.options.read_sample > 1) {
            return true;
        }
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        n % u64::from(self.options.read_sample) == 0
    }

    /// True when namespaces keep trails of their own.
    pub(crate) fn keeps_tenant_trails(&self) -> bool {
        self.tenants.is_some()
    }

    /// Records `record` (its node filled in; [`Self::keeps`] said so); a
    /// namespace's record goes to its own trail too, through `tenants` (each
    /// namespace's name and its part of the store).
    pub(crate) fn record(
        &self,
        record: &AuditRecord,
        tenants: &[(
            starfish_protocol::names::NamespaceName,
            crate::store::NsStore,
        )],
    ) {
        record.with_entry(|entry| self.record_entry(*entry, tenants));
    }

    /// [`Self::record`], borrowed: what the router's requests are recorded with.
    pub(crate) fn record_entry<'a>(
        &'a self,
        mut entry: AuditEntry<'a>,
        tenants: &[(
            starfish_protocol::names::NamespaceName,
            crate::store::NsStore,
        )],
    ) {
        entry.node = &self.options.node;
        self.options.sink.record_entry(&entry);
        if let Some(trails) = &self.tenants {
            for (name, store) in tenants {
                trails.push(name, store, &entry);
            }
        }
    }
}

/// Records as JSON lines. A record is written into a buffer on the request's task
/// (no allocation, no wake-up of another thread); a thread of its own writes the
/// buffers out every 100 ms, a system call each, so a slow disk never holds a
/// request. Each worker thread writes into a buffer of its own (one of eight), so
/// two threads recording at once do not pass one buffer to and fro: a file's lines
/// are in order per thread, and lines of different threads written in the same
/// 100 ms may be out of order by as much. Past 16 MiB waiting, records are dropped
/// and counted. Dropping the sink writes what is left.
pub struct JsonLines {
    shared: Arc<Lines>,
}

/// What the request tasks and the writer thread share.
struct Lines {
    shards: [std::sync::Mutex<Vec<u8>>; SHARDS],
    dropped: AtomicU64,
    out: std::sync::Mutex<Out>,
}

/// Where the lines go, and the writer's spare buffer (swapped with a full one).
struct Out {
    to: Box<dyn std::io::Write + Send>,
    spare: Vec<u8>,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// Bytes of records waiting to be written; past it, new ones are dropped.
const MAX_BUFFERED_BYTES: usize = 16 << 20;
/// How many buffers the threads that record share (a thread keeps to one).
const SHARDS: usize = 8;
/// How often the buffer is written out.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl JsonLines {
    /// Writes to `out` (stdout, a file opened for appending, …).
    pub fn new(out: Box<dyn std::io::Write + Send>) -> Self {
        let shared = Arc::new(Lines {
            shards: std::array::from_fn(|_| std::sync::Mutex::new(Vec::new())),
            dropped: AtomicU64::new(0),
            out: std::sync::Mutex::new(Out {
                to: out,
                spare: Vec::new(),
            }),
        });
        let lines = Arc::downgrade(&shared);
        std::thread::spawn(move || write_lines(&lines));
        Self { shared }
    }

    /// Appends to the file at `path` (created when missing).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn file(path: &std::path::Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::new(Box::new(file)))
    }

    /// Records dropped so far, the buffer full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

/// Locks, whatever a thread that panicked holding the lock left.
fn lock<T>(shard: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The writer thread of [`JsonLines`]: the buffers out every [`WRITE_EVERY`], until
/// the sink is gone (then [`Lines`]'s drop writes what is left).
fn write_lines(lines: &std::sync::Weak<Lines>) {
    loop {
        // A thread of its own, not the async runtime's: sleeping holds nothing.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(WRITE_EVERY);
        let Some(shared) = lines.upgrade() else {
            return;
        };
        shared.write_out();
    }
}

impl Lines {
    /// Writes every buffer out, one system call each (at most [`SHARDS`]).
    fn write_out(&self) {
        let mut out = lock(&self.out);
        let out = &mut *out;
        for shard in &self.shards {
            std::mem::swap(&mut *lock(shard), &mut out.spare);
            if !out.spare.is_empty() {
                let _ = out.to.write_all(&out.spare);
                out.spare.clear();
                // What a burst grew is given back.
                out.spare.shrink_to(1 << 20);
            }
        }
        let _ = out.to.flush();
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.write_out();
    }
}

/// Which of [`SHARDS`] buffers a thread records into, given at its first record.
fn shard_of_thread() -> usize {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl AuditSink for JsonLines {
    fn record(&self, record: &AuditRecord) {
        record.with_entry(|entry| self.record_entry(entry));
    }

    fn record_entry(&self, entry: &AuditEntry<'_>) {
        let mut buffer = lock(&self.shared.shards[shard_of_thread()]);
        if buffer.len() >= MAX_BUFFERED_BYTES / SHARDS {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        line::write(entry, &mut buffer);
        buffer.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Kept(Mutex<Vec<AuditRecord>>);
    impl AuditSink for Kept {
        fn record(&self, record: &AuditRecord) {
            self.0.lock().unwrap().push(record.clone());
        }
    }

    fn read(success: bool) -> AuditRecord {
        AuditRecord {
            action: "pull".into(),
            success,
            status_code: if success { 200 } else { 403 },
            ..AuditRecord::default()
        }
    }

    #[test]
    fn successful_reads_are_sampled_and_nothing_else_is() {
        let kept = Arc::new(Kept::default());
        let auditor = Auditor::new(AuditOptions::new(kept.clone(), "n1").with_read_sample(10));
        for _ in 0..100 {
            for success in [true, false] {
                let record = read(success);
                if auditor.keeps(&record.action, record.success) {
                    auditor.record(&record, &[]);
                }
            }
        }
        let records = kept.0.lock().unwrap();
        assert_eq!(records.iter().filter(|r| r.success).count(), 10);
        assert_eq!(records.iter().filter(|r| !r.success).count(), 100);
        assert!(records.iter().all(|r| r.node == "n1"));
    }

    /// What a [`JsonLines`] wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Written(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Written {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_recorded_by_many_threads_at_once_are_all_written_in_order_per_thread() {
        let written = Written::default();
        let sink = JsonLines::new(Box::new(written.clone()));
        std::thread::scope(|threads| {
            for thread in 0..12 {
                let sink = &sink;
                threads.spawn(move || {
                    let node = format!("t{thread}");
                    for n in 0..2_000 {
                        let entry = AuditEntry {
                            timestamp: n,
                            action: "pull",
                            node: &node,
                            ..AuditEntry::default()
                        };
                        sink.record_entry(&entry);
                    }
                });
            }
        });
        // Dropped at once, well within the writer's 100 ms: what is left is written.
        drop(sink);
        let written = written.0.lock().unwrap();
        let mut next = BTreeMap::<String, u64>::new();
        for line in written.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record: serde_json::Value = serde_json::from_slice(line).unwrap();
            let thread = record["node"].as_str().unwrap().to_owned();
            let expected = next.entry(thread).or_default();
            assert_eq!(record["timestamp"].as_u64(), Some(*expected), "{record}");
            *expected += 1;
        }
        assert_eq!(next.len(), 12);
        assert!(next.values().all(|&n| n == 2_000), "{next:?}");
    }

    #[test]
    fn a_record_reads_as_the_references_entry_with_our_fields() {
        let record = AuditRecord {
            timestamp: 7,
            action: "push".into(),
            collection: "notes".into(),
            identity: None,
            document_key: "users/a/notes".into(),
            success: false,
            status_code: 403,
            params: Some(BTreeMap::from([("identity".into(), "a".into())])),
            node: "n1".into(),
            reason: Some("missing role".into()),
            ..AuditRecord::default()
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"timestamp": 7, "action": "push", "collection": "notes",
                "identity": null, "documentKey": "users/a/notes", "success": false,
                "statusCode": 403, "params": {"identity": "a"}, "node": "n1",
                "reason": "missing role"})
        );
    }
}
