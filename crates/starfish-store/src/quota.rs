//! Per-namespace quotas: bytes stored and documents, checked before anything is
//! written (docs/namespaces.md, "Quotas").
//!
//! A namespace's usage is one record, `_starfish/usage/<name>`, changed only by
//! compare-and-swap: the bytes and documents written so far, and one **lease** per node.
//! A node takes a lease (a share of what is left under the quota) and spends it on
//! writes without touching the record; when it runs out, or once per
//! [`FLUSH_MS`], it writes back what it spent and takes a new lease. Leases
//! never add up to more than is left, so while nodes live the quota is never
//! exceeded, however many nodes write at once. A node's lease covers its writes in
//! flight as well as what it may still spend. A node that dies may have spent its
//! whole lease without writing it back: when the lease lapses (after [`LEASE_MS`])
//! the node that finds it counts all of it as spent, so the quota holds through
//! deaths too, and the record overcounts by at most the dead node's unspent lease
//! (`GET /_starfish/admin/namespaces/{name}?usage=1` shows the store's own count
//! beside the record's). A node that only slept finds its lapsed lease and replaces
//! it with its own count.

use super::{NsStore, ObjectKey, StoreError};
use crate::clock::Clock;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The records' area of the store: `_starfish/usage/<name>`.
pub(crate) const USAGE_AREA: &str = "usage";
/// A lease not renewed for this long is dropped by the other nodes.
pub(crate) const LEASE_MS: u64 = 30_000;
/// A node writes back what it spent at least this often (while it writes).
pub(crate) const FLUSH_MS: u64 = 1_000;
/// A node stops using its lease this long before it lapses.
const LEASE_MARGIN_MS: u64 = 5_000;
/// A lapsed lease's entry is kept this long for its node to come back to.
const LAPSED_KEEP_MS: u64 = 24 * 3600 * 1000;

/// A namespace's quota (`quota: {maxBytes, maxDocuments}`, an extension): bytes
/// stored (every object, bookkeeping included) and documents (documents, logs and
/// blobs). An absent limit is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quota {
    /// Most bytes the namespace may hold.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// Most documents the namespace may hold.
    #[serde(default)]
    pub max_documents: Option<u64>,
}

/// One node's lease in the record.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Lease {
    bytes: u64,
    documents: u64,
    expires: u64,
}

/// A namespace's usage record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageRecord {
    /// Bytes written back by the nodes (every object, bookkeeping included).
    bytes: u64,
    /// Documents written back (documents, logs and blobs; not their chunks and
    /// sidecars).
    documents: u64,
    /// Limits set through the admin API (over the config's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_documents: Option<u64>,
    #[serde(default)]
    leases: BTreeMap<String, Lease>,
    /// Leases that lapsed, counted as spent: their node may have written all of it
    /// without writing back (it died, or it sleeps). A node that comes back finds
    /// its entry and puts its own count in place of it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lapsed: BTreeMap<String, Lease>,
}

/// What a namespace uses and may use, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// Bytes stored (every object, bookkeeping included).
    pub bytes: u64,
    /// Documents stored (documents, logs and blobs).
    pub documents: u64,
    /// The quota's byte limit, when it has one.
    pub max_bytes: Option<u64>,
    /// The quota's document limit, when it has one.
    pub max_documents: Option<u64>,
}

/// This node's side of a namespace's quota.
#[derive(Debug)]
struct Local {
    /// Left of this node's lease.
    bytes: u64,
    documents: u64,
    /// Set aside by writes under way (taken from the lease, not yet settled). Part of
    /// this node's claim on the record until they settle: a renewal grants a new lease
    /// on top of them, never in place of them.
    in_flight_bytes: u64,
    in_flight_documents: u64,
    /// Spent (or freed, when negative) since the last write-back.
    spent_bytes: i64,
    spent_documents: i64,
    /// When the lease lapses for this node (with the margin taken off).
    usable_until: u64,
    flushed_at: u64,
}

/// Bytes and documents set aside for one write; handed back by [`Ledger::settle`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Reservation {
    bytes: u64,
    documents: u64,
}

/// A namespace's quota on one node. Shared by every store handle of the namespace.
#[derive(Debug)]
pub struct Ledger {
    record: NsStore,
    key: ObjectKey,
    /// The namespace's own handle (no quota), to count what it held before.
    own: NsStore,
    configured: Quota,
    node: String,
    clock: Arc<dyn Clock>,
    local: tokio::sync::Mutex<Local>,
    /// The record is known to exist (no read to check it).
    recorded: std::sync::atomic::AtomicBool,
}

fn added(value: u64, delta: i64) -> u64 {
    if delta >= 0 {
        value.saturating_add(delta.unsigned_abs())
    } else {
        value.saturating_sub(delta.unsigned_abs())
    }
}

impl Ledger {
    /// The ledger of config namespace `name`, whose handle is `own`
    /// (record `_starfish/usage/ns/<name>`).
    pub fn for_config(
        docs: &super::DocStore,
        name: &starfish_protocol::names::NamespaceName,
        own: NsStore,
        quota: Quota,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let key = ObjectKey::fixed("ns").derived(format_args!("/{name}"));
        Self::new(docs, key, own, quota, clock)
    }

    /// The ledger of runtime namespace `name` in `generation`, whose handle is `own`
    /// (record `_starfish/usage/t/<name>/<generation>`: a re-created namespace starts
    /// from nothing).
    pub fn for_runtime(
        docs: &super::DocStore,
        name: &starfish_protocol::names::NamespaceName,
        generation: &str,
        own: NsStore,
        quota: Quota,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let key = ObjectKey::fixed("t").derived(format_args!("/{name}/{generation}"));
        Self::new(docs, key, own, quota, clock)
    }

    fn new(
        docs: &super::DocStore,
        key: ObjectKey,
        own: NsStore,
        configured: Quota,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let mut random = [0u8; 8];
        // A node id collision only merges two nodes' leases (a smaller share each).
        let _ = getrandom::fill(&mut random);
        Self {
            record: NsStore::system(docs.clone(), USAGE_AREA),
            key,
            own,
            configured,
            node: hex::encode(random),
            clock,
            local: tokio::sync::Mutex::new(Local {
                bytes: 0,
                documents: 0,
                in_flight_bytes: 0,
                in_flight_documents: 0,
                spent_bytes: 0,
                spent_documents: 0,
                usable_until: 0,
                flushed_at: 0,
            }),
            recorded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The record's key (removed with a deleted namespace).
    pub fn record_key(&self) -> (&NsStore, &ObjectKey) {
        (&self.record, &self.key)
    }

    /// Sets aside `bytes` and `documents` for a write, or refuses with
    /// [`StoreError::QuotaExceeded`] (nothing is written then).
    ///
    /// # Errors
    /// [`StoreError::QuotaExceeded`], or a store failure reading the record.
    pub(crate) async fn reserve(
        &self,
        bytes: u64,
        documents: u64,
    ) -> Result<Reservation, StoreError> {
        let mut local = self.local.lock().await;
        let now = self.clock.now_ms();
        if now >= local.usable_until || local.bytes < bytes || local.documents < documents {
            self.renew(&mut local, bytes, documents, now).await?;
        }
        if local.bytes < bytes || local.documents < documents {
            return Err(StoreError::QuotaExceeded);
        }
        local.bytes -= bytes;
        local.documents -= documents;
        local.in_flight_bytes += bytes;
        local.in_flight_documents += documents;
        Ok(Reservation { bytes, documents })
    }

    /// Hands back `reservation` once its write is done: `bytes` and `documents` is what
    /// the write changed (negative when it freed space; zero when nothing was
    /// written). Writes back to the record when it is time.
    pub(crate) async fn settle(&self, reservation: Reservation, bytes: i64, documents: i64) {
        let mut local = self.local.lock().await;
        local.in_flight_bytes -= reservation.bytes;
        local.in_flight_documents -= reservation.documents;
        // What was set aside comes back, what was spent goes (a freeing write gives).
        local.bytes = added(
            local.bytes.saturating_add(reservation.bytes),
            bytes.saturating_neg(),
        );
        local.documents = added(
            local.documents.saturating_add(reservation.documents),
            documents.saturating_neg(),
        );
        local.spent_bytes = local.spent_bytes.saturating_add(bytes);
        local.spent_documents = local.spent_documents.saturating_add(documents);
        let now = self.clock.now_ms();
        if now.saturating_sub(local.flushed_at) >= FLUSH_MS {
            if let Err(e) = self.renew(&mut local, 0, 0, now).await {
                // Kept locally; the next write-back carries it.
                tracing::warn!(error = %e, "cannot write back quota usage");
            }
        }
    }

    /// After a write-back that failed: it may have taken effect all the same (its
    /// answer lost), and is sent again with the next one. Spending counted twice
    /// only overcounts; a free counted twice would undercount, so a free is dropped
    /// (the record then overcounts by it, on the safe side).
    fn after_failed_write_back(local: &mut Local) {
        local.spent_bytes = local.spent_bytes.max(0);
        local.spent_documents = local.spent_documents.max(0);
    }

    /// Writes back what this node spent and shows the namespace's usage.
    ///
    /// # Errors
    /// A store failure.
    pub async fn report(&self) -> Result<UsageReport, StoreError> {
        let mut local = self.local.lock().await;
        let now = self.clock.now_ms();
        let record = self.renew(&mut local, 0, 0, now).await?;
        Ok(UsageReport {
            bytes: record.bytes,
            documents: record.documents,
            max_bytes: record.max_bytes.or(self.configured.max_bytes),
            max_documents: record.max_documents.or(self.configured.max_documents),
        })
    }

    /// Sets the limits (over the config's); `None` keeps the config's.
    ///
    /// # Errors
    /// A store failure.
    pub async fn set_limits(&self, limits: Quota) -> Result<(), StoreError> {
        self.ensure_record().await?;
        self.record
            .compare_and_swap_uncounted(&self.key, |current| {
                let mut record = parse(current);
                record.max_bytes = limits.max_bytes;
                record.max_documents = limits.max_documents;
                Ok::<_, StoreError>((serialise(&record), ()))
            })
            .await
            .map_err(cas_error)
    }

    /// Creates the record, counting what the namespace already holds, if it has none.
    async fn ensure_record(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if self.recorded.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.record.get(&self.key).await?.is_some() {
            self.recorded.store(true, Ordering::Release);
            return Ok(());
        }
        let (bytes, documents) = self.own.counted_usage().await?;
        let record = UsageRecord {
            bytes,
            documents,
            ..UsageRecord::default()
        };
        // Another node may have created it meanwhile: then theirs stands. A store
        // failure leaves it to be tried again (a record created empty later would
        // not count what the namespace holds).
        match self
            .record
            .compare_and_swap_uncounted(&self.key, |current| match current {
                Some(_) => Err(()),
                None => Ok((serialise(&record), ())),
            })
            .await
        {
            Ok(()) | Err(super::CasError::Rejected(())) => {}
            Err(super::CasError::Store(e)) => return Err(e),
            Err(super::CasError::Contended) => return Err(StoreError::Contended),
        }
        self.recorded.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes back what was spent, drops lapsed leases, and takes a lease with room
    /// for `bytes` and `documents` if what is left allows; returns the record.
    async fn renew(
        &self,
        local: &mut Local,
        bytes: u64,
        documents: u64,
        now: u64,
    ) -> Result<UsageRecord, StoreError> {
        self.ensure_record().await?;
        let (spent_bytes, spent_documents) = (local.spent_bytes, local.spent_documents);
        let (held_bytes, held_documents) = if now < local.usable_until {
            (local.bytes, local.documents)
        } else {
            // Past its margin the lease may have been dropped: claim it anew.
            (0, 0)
        };
        let renewal = Renewal {
            spent: (spent_bytes, spent_documents),
            held: (held_bytes, held_documents),
            in_flight: (local.in_flight_bytes, local.in_flight_documents),
            need: (bytes, documents),
        };
        let configured = self.configured;
        let node = self.node.clone();
        let record = self
            .record
            .compare_and_swap_uncounted(&self.key, |current| {
                let mut record = parse(current);
                let (lease_bytes, lease_documents) =
                    record.renew_lease(&node, &renewal, configured, now);
                let out = (record.clone(), lease_bytes, lease_documents);
                Ok::<_, StoreError>((serialise(&record), out))
            })
            .await
            .map_err(cas_error);
        let (record, lease_bytes, lease_documents) = match record {
            Ok(record) => record,
            Err(e) => {
                Self::after_failed_write_back(local);
                return Err(e);
            }
        };
        local.bytes = lease_bytes;
        local.documents = lease_documents;
        local.spent_bytes -= spent_bytes;
        local.spent_documents -= spent_documents;
        local.usable_until = now + LEASE_MS - LEASE_MARGIN_MS;
        local.flushed_at = now;
        Ok(record)
    }
}

/// What a node brings to the renewal of its lease, as (bytes, documents): what it
/// spent since its last write-back, what its lease still holds, what it has in
/// flight, and what the write at hand needs.
struct Renewal {
    spent: (i64, i64),
    held: (u64, u64),
    in_flight: (u64, u64),
    need: (u64, u64),
}

impl UsageRecord {
    /// Renews `node`'s lease at `now`: its write-back counted, lapsed leases
    /// counted as spent, and a new lease within what the limits and the other
    /// leases leave. Returns what the node may still spend (bytes, documents).
    fn renew_lease(
        &mut self,
        node: &str,
        renewal: &Renewal,
        configured: Quota,
        now: u64,
    ) -> (u64, u64) {
        self.replace_own_lapse(node);
        self.bytes = added(self.bytes, renewal.spent.0);
        self.documents = added(self.documents, renewal.spent.1);
        self.lapse_others(node, now);
        let (lease_bytes, claim_bytes) = grant(
            self.max_bytes.or(configured.max_bytes),
            self.bytes,
            self.others(node, |l| l.bytes),
            renewal.held.0,
            renewal.need.0,
            renewal.in_flight.0,
        );
        let (lease_documents, claim_documents) = grant(
            self.max_documents.or(configured.max_documents),
            self.documents,
            self.others(node, |l| l.documents),
            renewal.held.1,
            renewal.need.1,
            renewal.in_flight.1,
        );
        self.leases.insert(
            node.to_owned(),
            Lease {
                bytes: claim_bytes,
                documents: claim_documents,
                expires: now + LEASE_MS,
            },
        );
        (lease_bytes, lease_documents)
    }

    /// This node's lease lapsed and was counted as spent: its own count (what it
    /// writes back now) replaces that.
    fn replace_own_lapse(&mut self, node: &str) {
        if self.leases.contains_key(node) {
            return;
        }
        if let Some(mine) = self.lapsed.remove(node) {
            self.bytes = self.bytes.saturating_sub(mine.bytes);
            self.documents = self.documents.saturating_sub(mine.documents);
        }
    }

    /// Another node's lease that lapsed may have been spent to the last byte
    /// without a write-back: counted as spent, never handed out again. Lapses older
    /// than a day are forgotten.
    fn lapse_others(&mut self, node: &str, now: u64) {
        let lapsed: Vec<String> = self
            .leases
            .iter()
            .filter(|(n, l)| *n != node && l.expires <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for n in lapsed {
            if let Some(l) = self.leases.remove(&n) {
                self.bytes = self.bytes.saturating_add(l.bytes);
                self.documents = self.documents.saturating_add(l.documents);
                self.lapsed.insert(n, Lease { expires: now, ..l });
            }
        }
        self.lapsed
            .retain(|_, l| now.saturating_sub(l.expires) < LAPSED_KEEP_MS);
    }

    /// What the other nodes' leases hold, by `amount`.
    fn others(&self, node: &str, amount: fn(&Lease) -> u64) -> u64 {
        self.leases
            .iter()
            .filter(|(n, _)| *n != node)
            .map(|(_, l)| amount(l))
            .fold(0u64, u64::saturating_add)
    }
}

/// A node's claim on one limit: what it has in flight plus what it may still
/// spend; both must fit in what the record (`used`) and the other leases leave.
/// Returns (what it may still spend, its lease in the record).
fn grant(
    limit: Option<u64>,
    used: u64,
    others: u64,
    held: u64,
    need: u64,
    in_flight: u64,
) -> (u64, u64) {
    let Some(limit) = limit else {
        return (u64::MAX, 0);
    };
    let free = limit.saturating_sub(used).saturating_sub(others);
    let room = free.saturating_sub(in_flight);
    // What the write needs, or a sixteenth of the limit: never more, however much
    // frees gave back to the node (a lease that lapses with its node is counted as
    // spent). A write-back alone (no need: a flush, the admin view) takes nothing
    // new.
    let chunk = (limit / 16).max(1);
    let wanted = if need == 0 {
        held.min(chunk)
    } else {
        need.max(chunk)
    };
    let spendable = wanted.min(room);
    (spendable, spendable.saturating_add(in_flight))
}

fn parse(current: Option<&[u8]>) -> UsageRecord {
    current
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default()
}

fn serialise(record: &UsageRecord) -> Vec<u8> {
    serde_json::to_vec(record).unwrap_or_default()
}

fn cas_error(e: super::CasError<StoreError>) -> StoreError {
    match e {
        super::CasError::Rejected(e) | super::CasError::Store(e) => e,
        super::CasError::Contended => StoreError::Contended,
    }
}

/// True for objects that count as documents: not a log's chunk, not a blob's sidecar.
pub(crate) fn is_document(key: &str) -> bool {
    !key.contains("__seg/") && !key.ends_with(super::blob::META_SUFFIX)
}

impl NsStore {
    /// The bytes of every object of this namespace and how many are documents.
    ///
    /// # Errors
    /// [`StoreError`].
    pub(crate) async fn counted_usage(&self) -> Result<(u64, u64), StoreError> {
        use futures::StreamExt;
        let mut listing = self.docs.inner.list(self.root.as_ref());
        let (mut bytes, mut documents) = (0u64, 0u64);
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            bytes += meta.size;
            if self.relative(&meta.location).is_some_and(is_document) {
                documents += 1;
            }
        }
        Ok((bytes, documents))
    }
}
