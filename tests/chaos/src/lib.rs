//! The fault campaign's history and its checker (docs/reliability.md).
//!
//! The runner (`main.rs`) records every operation it sends as an [`Op`]: when it was
//! invoked and when it completed (microseconds on one monotonic clock), the node it
//! went to, what it asked and what came back, and its [`Outcome`]: `Ok` (the server
//! acknowledged it), `Fail` (it certainly had no effect) or `Unknown` (it may or may
//! not have taken effect: a timeout, a reset connection, a `503` after the store may
//! have written). [`check`] then reads the whole history and reports every violation
//! of what the server promises, per property ([`Verdict`]).

// A test harness, not an API: its fields are named for what they hold.
#![allow(missing_docs)]

pub mod rng;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What became of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Acknowledged: it took effect.
    Ok,
    /// Refused: it certainly took no effect.
    Fail,
    /// Perhaps: no answer, or an answer that does not say (a `503` from a write).
    Unknown,
}

/// What an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A push of `{"w": write}` to `doc` on top of `base` (`None`: a create), whose
    /// hash is `hash` (known before it is sent: the hash of its data).
    DocWrite {
        doc: String,
        write: u64,
        base: Option<String>,
        hash: String,
    },
    /// A pull of `doc` that answered `hash` (`""`: no document yet).
    DocRead { doc: String, hash: String },
    /// A pull of `doc` from one node after the faults, once everything is healed.
    DocFinal { doc: String, hash: String },
    /// A create of a new document in `namespace`, whose quota is `quota` documents.
    Create { namespace: String, quota: u64 },
    /// What `namespace` holds after the faults: documents counted in the store, and
    /// in its usage record.
    NamespaceFinal {
        namespace: String,
        quota: u64,
        stored: u64,
        recorded: u64,
    },
    /// An append of element `element` to `log`.
    Append { log: String, element: u64 },
    /// The whole of `log` after the faults, in its order (`None`: unreadable).
    LogFinal {
        log: String,
        elements: Option<Vec<u64>>,
    },
    /// A signed request accepted once (operation `original`) sent again, byte for
    /// byte, to a node.
    Replay { original: u64 },
    /// A fault the runner injected, from `invoke` to `complete` (`node`: the node it
    /// hit, when it hit one).
    Fault { kind: String },
    /// An admin change to a runtime namespace or an API key: `revoke` (the key),
    /// `suspend` or `delete` (the namespace).
    Change { target: String, change: String },
    /// A request made to see a change (operation `change`) take effect: with the key
    /// (`revoke`), anonymous (`suspend`, `delete`), or, after a deleted namespace was
    /// created again under its name, for the old generation's document
    /// (`recreated-data`: `stale` tells whether it came back) or with its old key
    /// (`recreated-key`: refused, `401` or `403`).
    Probe {
        change: u64,
        what: String,
        stale: bool,
    },
    /// A live-changes stream (`GET /events`) on `docs`, open from `invoke` (its
    /// first comment) to `complete`: the changes it heard, as (document, hash), and
    /// whether the server ended it (`false`: it stayed open until the client closed it).
    Stream {
        docs: Vec<String>,
        heard: Vec<(String, String)>,
        ended: bool,
    },
    /// An upload of blob `blob`'s content number `upload` ([`blob_bytes`]).
    BlobWrite { blob: String, upload: u64 },
    /// A read of `blob`: the upload whose bytes it returned whole (`None`: no blob;
    /// `Some(TORN)`: bytes that are no upload's, whole).
    BlobRead { blob: String, upload: Option<u64> },
    /// A read of `blob` from one node after the faults.
    BlobFinal { blob: String, upload: Option<u64> },
}

/// A blob read whose bytes are no upload's whole bytes.
pub const TORN: u64 = u64::MAX;

/// The bytes of upload `n`: a header naming it, then a filler whose length and byte
/// it decides, so that a read tells which upload it returned and whether whole.
pub fn blob_bytes(n: u64) -> Vec<u8> {
    let mut out = format!("upload:{n:>12}\n").into_bytes();
    let filler = 1_000 + (n * 7_919) % 30_000;
    out.resize(out.len() + filler as usize, (n % 251) as u8);
    out
}

/// The upload `bytes` are, whole: `Some(n)`, or `Some(TORN)` when they are no
/// upload's bytes.
pub fn which_upload(bytes: &[u8]) -> Option<u64> {
    let n = std::str::from_utf8(bytes.get(7..19)?)
        .ok()?
        .trim()
        .parse()
        .ok();
    Some(n.filter(|n| blob_bytes(*n) == bytes).unwrap_or(TORN))
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    /// The client that sent it.
    pub client: u32,
    /// The node it was sent to.
    pub node: usize,
    /// Microseconds since the run began, on one monotonic clock.
    pub invoke: u64,
    pub complete: u64,
    pub outcome: Outcome,
    /// The HTTP status; 0 when there was no answer.
    pub status: u16,
    pub event: Event,
}

/// The checker's findings for one property.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Operations the property looked at.
    pub checked: u64,
    /// What broke it, one line each.
    pub violations: Vec<String>,
}

/// The checker's findings, per property, in a fixed order.
pub type Report = BTreeMap<&'static str, Verdict>;

/// The properties, in the order the table prints them.
pub const PROPERTIES: [&str; 9] = [
    "documents: one chain",
    "documents: no lost write",
    "documents: linearizable reads",
    "quotas",
    "logs",
    "replays",
    "tenants and keys",
    "live changes",
    "blobs",
];

/// How long a change may take to reach a subscriber on any node (NATS between
/// nodes), in microseconds.
pub const DELIVERY_US: u64 = 2_000_000;

/// How soon every node refuses after a revocation, a suspension or a deletion
/// (docs/namespaces.md: the tenant and key caches' refresh), in microseconds.
pub const CHANGE_BOUND_US: u64 = 1_000_000;

/// The property answers are filed under.
pub const ANSWERS: &str = "answers";

/// Checks `history`. `lease_slack`: how far a namespace's usage record may be from
/// the store's own count after the faults (documents), as docs/namespaces.md bounds it.
pub fn check(history: &[Op], lease_slack: u64) -> Report {
    let mut report = Report::new();
    for p in PROPERTIES.into_iter().chain([ANSWERS]) {
        report.insert(p, Verdict::default());
    }
    documents(history, &mut report);
    quotas(history, lease_slack, &mut report);
    logs(history, &mut report);
    replays(history, &mut report);
    changes(history, &mut report);
    live(history, &mut report);
    blobs(history, &mut report);
    answers(history, &mut report);
    report
}

fn verdict<'a>(report: &'a mut Report, property: &'static str) -> &'a mut Verdict {
    report.entry(property).or_default()
}

/// One document's writes and reads.
#[derive(Default)]
struct Doc<'a> {
    writes: Vec<&'a Op>,
    reads: Vec<&'a Op>,
    finals: Vec<&'a Op>,
}

fn documents(history: &[Op], report: &mut Report) {
    let mut docs: BTreeMap<&str, Doc<'_>> = BTreeMap::new();
    for op in history {
        match &op.event {
            Event::DocWrite { doc, .. } => docs.entry(doc).or_default().writes.push(op),
            Event::DocRead { doc, .. } if op.outcome == Outcome::Ok => {
                docs.entry(doc).or_default().reads.push(op);
            }
            Event::DocFinal { doc, .. } => docs.entry(doc).or_default().finals.push(op),
            _ => {}
        }
    }
    for (name, doc) in docs {
        document(name, &doc, report);
    }
}

fn write_parts(op: &Op) -> (Option<&str>, &str) {
    match &op.event {
        Event::DocWrite { base, hash, .. } => (base.as_deref(), hash.as_str()),
        _ => unreachable!("only writes"),
    }
}

fn read_hash(op: &Op) -> &str {
    match &op.event {
        Event::DocRead { hash, .. } | Event::DocFinal { hash, .. } => hash,
        _ => unreachable!("only reads"),
    }
}

/// One document: its acknowledged writes form one chain from the empty document
/// (each one's base the hash of the one before); nothing acknowledged is missing from
/// the chain the final state stands on; every read returns a state that was current
/// at some moment between its invoke and its completion.
fn document(name: &str, doc: &Doc<'_>, report: &mut Report) {
    let by_hash: HashMap<&str, &Op> = doc.writes.iter().map(|w| (write_parts(w).1, *w)).collect();
    let applied = applied_states(doc, &by_hash);
    let next = one_chain(
        name,
        &applied,
        &by_hash,
        verdict(report, "documents: one chain"),
    );
    let chain = Chain::along(&next);
    no_lost_write(
        name,
        doc,
        &by_hash,
        verdict(report, "documents: no lost write"),
    );
    linearizable_reads(
        name,
        doc,
        &by_hash,
        &chain,
        verdict(report, "documents: linearizable reads"),
    );
}

/// The states of a document that took effect: the acknowledged writes', those a read
/// returned, and every state a write that took effect stands on.
fn applied_states<'a>(doc: &Doc<'a>, by_hash: &HashMap<&'a str, &'a Op>) -> BTreeSet<&'a str> {
    let seen: BTreeSet<&str> = doc
        .reads
        .iter()
        .chain(&doc.finals)
        .map(|r| read_hash(r))
        .filter(|h| !h.is_empty())
        .collect();
    // A write took effect if it was acknowledged, or if something shows it: a read
    // returned it, or a write that took effect stands on it.
    let mut applied: BTreeSet<&str> = doc
        .writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .map(|w| write_parts(w).1)
        .chain(seen.iter().copied())
        .collect();
    let mut grew = true;
    while grew {
        grew = false;
        let bases: Vec<&str> = applied
            .iter()
            .filter_map(|h| by_hash.get(h).and_then(|w| write_parts(w).0))
            .filter(|b| !b.is_empty())
            .collect();
        for b in bases {
            grew |= applied.insert(b);
        }
    }
    applied
}

/// One chain: no two writes that took effect stand on the same state, and each
/// stands on a state that was written. Returns the state each state is followed by
/// (`""`: the empty document).
fn one_chain<'a>(
    name: &str,
    applied: &BTreeSet<&'a str>,
    by_hash: &HashMap<&'a str, &'a Op>,
    chain_check: &mut Verdict,
) -> HashMap<&'a str, &'a str> {
    let mut next: HashMap<&str, &str> = HashMap::new();
    for &hash in applied {
        chain_check.checked += 1;
        let Some(write) = by_hash.get(hash) else {
            chain_check.violations.push(format!(
                "{name}: state {hash:.12} was read but never written"
            ));
            continue;
        };
        if write.outcome == Outcome::Fail {
            chain_check.violations.push(format!(
                "{name}: write {} was refused ({}) yet took effect",
                write.id, write.status
            ));
        }
        let base = write_parts(write).0.unwrap_or("");
        if !base.is_empty() && !by_hash.contains_key(base) {
            chain_check.violations.push(format!(
                "{name}: write {} stands on {base:.12}, never written",
                write.id
            ));
        }
        if let Some(other) = next.insert(base, hash) {
            chain_check.violations.push(format!(
                "{name}: writes {} and {} both stand on {:.12} (a fork: one of them was accepted against a stale state)",
                by_hash[other].id,
                write.id,
                if base.is_empty() { "the empty document" } else { base }
            ));
        }
    }
    next
}

/// A document's chain of states, in order: position 0 is the empty document.
struct Chain<'a> {
    order: Vec<&'a str>,
    position: HashMap<&'a str, usize>,
}

impl<'a> Chain<'a> {
    /// Follows `next` from the empty document until it ends or comes back to a state
    /// already in the chain.
    fn along(next: &HashMap<&'a str, &'a str>) -> Self {
        let mut order: Vec<&str> = vec![""];
        let mut position: HashMap<&str, usize> = HashMap::from([("", 0)]);
        while let Some(&h) = next.get(order[order.len() - 1]) {
            if position.contains_key(h) {
                break; // a cycle: reported as a fork or a missing base above
            }
            position.insert(h, order.len());
            order.push(h);
        }
        Self { order, position }
    }
}

/// No lost write: every node answers the same final state, and the chain up to it
/// holds every acknowledged write.
fn no_lost_write(name: &str, doc: &Doc<'_>, by_hash: &HashMap<&str, &Op>, lost: &mut Verdict) {
    let finals: BTreeSet<&str> = doc.finals.iter().map(|r| read_hash(r)).collect();
    lost.checked += doc.writes.len() as u64;
    if finals.len() > 1 {
        lost.violations.push(format!(
            "{name}: nodes disagree on the final state after the faults: {finals:?}"
        ));
    }
    if let Some(&last) = finals.iter().next() {
        let mut standing: BTreeSet<&str> = BTreeSet::new();
        let mut at = last;
        while !at.is_empty() && standing.insert(at) {
            at = by_hash.get(at).and_then(|w| write_parts(w).0).unwrap_or("");
        }
        for w in doc.writes.iter().filter(|w| w.outcome == Outcome::Ok) {
            if !standing.contains(write_parts(w).1) {
                lost.violations.push(format!(
                    "{name}: acknowledged write {} is not in the final state's history",
                    w.id
                ));
            }
        }
    }
}

/// Linearizable reads (the order of the states is the chain's): each read returns a
/// state of the chain, not one sent after it ended nor one a write acknowledged
/// before it began replaced, and reads in real-time order never go back.
fn linearizable_reads<'a>(
    name: &str,
    doc: &Doc<'a>,
    by_hash: &HashMap<&'a str, &'a Op>,
    chain: &Chain<'a>,
    lin: &mut Verdict,
) {
    let completed_after = completed_after(chain, by_hash);
    let reads = read_positions(name, doc, by_hash, chain, &completed_after, lin);
    reads_never_go_back(name, reads, lin);
}

/// The earliest completion of an acknowledged write at each position of the chain or
/// after it (`u64::MAX`: none).
fn completed_after(chain: &Chain<'_>, by_hash: &HashMap<&str, &Op>) -> Vec<u64> {
    let order = &chain.order;
    let mut completed_after = vec![u64::MAX; order.len() + 1];
    for i in (1..order.len()).rev() {
        let w = by_hash[order[i]];
        let done = if w.outcome == Outcome::Ok {
            w.complete
        } else {
            u64::MAX
        };
        completed_after[i] = completed_after[i + 1].min(done);
    }
    completed_after
}

/// Checks each read on its own against the chain: a state of it, not sent after the
/// read ended, not stale when the read began. Returns the reads with the position
/// they returned, those that returned no state of the chain left out.
fn read_positions<'a>(
    name: &str,
    doc: &Doc<'a>,
    by_hash: &HashMap<&'a str, &'a Op>,
    chain: &Chain<'a>,
    completed_after: &[u64],
    lin: &mut Verdict,
) -> Vec<(&'a Op, usize)> {
    let mut reads: Vec<(&Op, usize)> = Vec::new();
    for r in &doc.reads {
        lin.checked += 1;
        let hash = read_hash(r);
        let Some(&at) = chain.position.get(hash) else {
            lin.violations.push(format!(
                "{name}: read {} returned {hash:.12}, not a state of the chain",
                r.id
            ));
            continue;
        };
        if at > 0 && by_hash[hash].invoke > r.complete {
            lin.violations.push(format!(
                "{name}: read {} returned write {} before it was sent",
                r.id, by_hash[hash].id
            ));
        }
        if completed_after[at + 1] < r.invoke {
            lin.violations.push(format!(
                "{name}: read {} returned a stale state (position {at}): a later write was acknowledged before the read began",
                r.id
            ));
        }
        reads.push((r, at));
    }
    reads
}

/// Reads in real-time order never go back: sorted by completion, the furthest
/// position any read completed before `r` began must not be past `r`'s.
fn reads_never_go_back(name: &str, mut reads: Vec<(&Op, usize)>, lin: &mut Verdict) {
    reads.sort_by_key(|(r, _)| r.complete);
    let mut furthest: Vec<(u64, usize, u64)> = Vec::with_capacity(reads.len());
    let mut best = (0usize, 0u64);
    for (r, at) in &reads {
        if *at >= best.0 {
            best = (*at, r.id);
        }
        furthest.push((r.complete, best.0, best.1));
    }
    for (r, at) in &reads {
        let before = furthest.partition_point(|(c, _, _)| *c < r.invoke);
        if before > 0 {
            let (_, max, id) = furthest[before - 1];
            if max > *at {
                lin.violations.push(format!(
                    "{name}: read {} returned position {at} after read {id} had returned position {max}",
                    r.id
                ));
            }
        }
    }
}

fn quotas(history: &[Op], lease_slack: u64, report: &mut Report) {
    let v = verdict(report, "quotas");
    let mut acked: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for op in history {
        if let Event::Create { namespace, quota } = &op.event {
            v.checked += 1;
            let entry = acked.entry(namespace).or_insert((0, *quota));
            if op.outcome == Outcome::Ok {
                entry.0 += 1;
            }
        }
    }
    for (ns, (n, quota)) in &acked {
        if n > quota {
            v.violations
                .push(format!("{ns}: {n} creates acknowledged, quota {quota}"));
        }
    }
    for op in history {
        if let Event::NamespaceFinal {
            namespace,
            quota,
            stored,
            recorded,
        } = &op.event
        {
            let acknowledged = acked.get(namespace.as_str()).map_or(0, |a| a.0);
            if stored > quota {
                v.violations.push(format!(
                    "{namespace}: {stored} documents stored, quota {quota}"
                ));
            }
            if *stored < acknowledged {
                v.violations.push(format!(
                    "{namespace}: {acknowledged} creates acknowledged, {stored} stored"
                ));
            }
            if stored.abs_diff(*recorded) > lease_slack {
                v.violations.push(format!(
                    "{namespace}: the usage record says {recorded}, the store holds {stored} (bound {lease_slack})"
                ));
            }
        }
    }
}

fn logs(history: &[Op], report: &mut Report) {
    let v = verdict(report, "logs");
    let mut appends: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        if let Event::Append { log, .. } = &op.event {
            appends.entry(log).or_default().push(op);
        }
    }
    let element = |op: &Op| match op.event {
        Event::Append { element, .. } => element,
        _ => unreachable!("only appends"),
    };
    for op in history {
        let Event::LogFinal { log, elements } = &op.event else {
            continue;
        };
        let Some(elements) = elements else {
            v.violations
                .push(format!("{log}: unreadable after the faults"));
            continue;
        };
        let ours = appends.get(log.as_str()).cloned().unwrap_or_default();
        v.checked += ours.len() as u64;
        let mut at: HashMap<u64, usize> = HashMap::new();
        for (i, e) in elements.iter().enumerate() {
            if at.insert(*e, i).is_some() {
                v.violations
                    .push(format!("{log}: element {e} appears more than once"));
            }
        }
        let by_element: HashMap<u64, &Op> = ours.iter().map(|o| (element(o), *o)).collect();
        for e in elements {
            match by_element.get(e) {
                None => v
                    .violations
                    .push(format!("{log}: element {e} was never appended")),
                Some(o) if o.outcome == Outcome::Fail => v.violations.push(format!(
                    "{log}: element {e} was refused ({}) yet is there",
                    o.status
                )),
                Some(_) => {}
            }
        }
        let mut present: Vec<&Op> = Vec::new();
        for o in &ours {
            match at.get(&element(o)) {
                Some(_) => present.push(o),
                None if o.outcome == Outcome::Ok => v.violations.push(format!(
                    "{log}: acknowledged element {} is missing",
                    element(o)
                )),
                None => {}
            }
        }
        // In order: an append acknowledged before another was sent comes first.
        present.sort_by_key(|o| o.complete);
        let mut furthest: Vec<(u64, usize, u64)> = Vec::new();
        let mut best = (0usize, 0u64, false);
        for o in &present {
            let p = at[&element(o)];
            if !best.2 || p >= best.0 {
                best = (p, element(o), true);
            }
            furthest.push((o.complete, best.0, best.1));
        }
        for o in &present {
            let p = at[&element(o)];
            let before = furthest.partition_point(|(c, _, _)| *c < o.invoke);
            if before > 0 {
                let (_, max, e) = furthest[before - 1];
                if max > p {
                    v.violations.push(format!(
                        "{log}: element {} stands before element {e}, which was acknowledged before it was sent",
                        element(o)
                    ));
                }
            }
        }
    }
}

/// A replay is refused by the replay cache: `401`, or `503` while the cache cannot
/// vouch for it. Any other answer means it got past the nonce check.
fn replays(history: &[Op], report: &mut Report) {
    let v = verdict(report, "replays");
    for op in history {
        if let Event::Replay { original } = op.event {
            v.checked += 1;
            if !matches!(op.status, 0 | 401 | 503) {
                v.violations.push(format!(
                    "request {original} accepted again: its replay {} got {}",
                    op.id, op.status
                ));
            }
        }
    }
}

/// Revoked keys, suspended and deleted namespaces: refused by every node once the
/// bound has passed after the change was acknowledged; a deleted namespace's data
/// and keys never come back in a namespace created later under its name.
fn changes(history: &[Op], report: &mut Report) {
    let v = verdict(report, "tenants and keys");
    let acked: HashMap<u64, (&str, u64)> = history
        .iter()
        .filter_map(|o| match &o.event {
            Event::Change { change, .. } if o.outcome == Outcome::Ok => {
                Some((o.id, (change.as_str(), o.complete)))
            }
            _ => None,
        })
        .collect();
    for op in history {
        let Event::Probe {
            change,
            what,
            stale,
        } = &op.event
        else {
            continue;
        };
        let Some(&(kind, at)) = acked.get(change) else {
            continue;
        };
        if matches!(op.status, 0 | 503) {
            continue; // no answer, or the store or Redis was down: says nothing
        }
        v.checked += 1;
        let refused = match what.as_str() {
            "recreated-data" => !stale && op.status == 200,
            // Void in the new generation: the key names no rights there (403), or
            // is gone (401).
            "recreated-key" => matches!(op.status, 401 | 403),
            _ => match kind {
                "revoke" => op.status == 401,
                "suspend" => op.status == 403,
                "delete" => op.status == 404,
                _ => true,
            },
        };
        let late = op.invoke > at + CHANGE_BOUND_US || what.starts_with("recreated");
        if late && !refused {
            v.violations.push(format!(
                "probe {} ({what}) of change {change} ({kind}) got {}{} {} ms after it was acknowledged",
                op.id,
                op.status,
                if *stale { " with the old data" } else { "" },
                op.invoke.saturating_sub(at) / 1000
            ));
        }
    }
}

/// A stream that stayed open hears every acknowledged write of its documents made
/// while it was open (sent after it opened, acknowledged at least
/// [`DELIVERY_US`] before it closed). A stream the server ended may have missed
/// some: its client pulls when it reconnects; what must never happen is a gap in a
/// stream that stays open.
fn live(history: &[Op], report: &mut Report) {
    let v = verdict(report, "live changes");
    let mut writes: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in history {
        if let (Event::DocWrite { doc, .. }, Outcome::Ok) = (&op.event, op.outcome) {
            writes.entry(doc).or_default().push(op);
        }
    }
    for op in history {
        let Event::Stream { docs, heard, ended } = &op.event else {
            continue;
        };
        if *ended {
            continue;
        }
        let heard: BTreeSet<(&str, &str)> = heard
            .iter()
            .map(|(d, h)| (d.as_str(), h.as_str()))
            .collect();
        for doc in docs {
            for w in writes.get(doc.as_str()).into_iter().flatten() {
                if w.invoke < op.invoke || w.complete + DELIVERY_US > op.complete {
                    continue;
                }
                v.checked += 1;
                let hash = write_parts(w).1;
                if !heard.contains(&(doc.as_str(), hash)) {
                    v.violations.push(format!(
                        "stream {} on node {} stayed open and never heard write {} of {doc}",
                        op.id, op.node, w.id
                    ));
                }
            }
        }
    }
}

/// Blobs are replaced whole (last writer wins): a read returns one upload's bytes,
/// whole, sent before the read ended, and not one an acknowledged upload replaced
/// before the read began; after the faults every node returns the same upload, and
/// no acknowledged upload begun after it ended was lost.
fn blobs(history: &[Op], report: &mut Report) {
    let v = verdict(report, "blobs");
    let uploads = Uploads::of(history);
    let mut finals: BTreeMap<&str, BTreeSet<Option<u64>>> = BTreeMap::new();
    for op in history {
        let (blob, upload, last) = match &op.event {
            Event::BlobRead { blob, upload } if op.outcome == Outcome::Ok => (blob, upload, false),
            Event::BlobFinal { blob, upload } => (blob, upload, true),
            _ => continue,
        };
        v.checked += 1;
        if last {
            finals.entry(blob).or_default().insert(*upload);
        }
        uploads.check_read(op, blob, *upload, v);
    }
    for (blob, seen) in finals {
        if seen.len() > 1 {
            v.violations.push(format!(
                "{blob}: nodes disagree on the final blob after the faults: {seen:?}"
            ));
        }
    }
}

/// Every upload of the history, by blob and content number, and the acknowledged
/// ones per blob in the history's order.
struct Uploads<'a> {
    sent: HashMap<(&'a str, u64), &'a Op>,
    acked: HashMap<&'a str, Vec<&'a Op>>,
}

impl<'a> Uploads<'a> {
    /// The uploads `history` holds.
    fn of(history: &'a [Op]) -> Self {
        let mut sent: HashMap<(&str, u64), &Op> = HashMap::new();
        let mut acked: HashMap<&str, Vec<&Op>> = HashMap::new();
        for op in history {
            if let Event::BlobWrite { blob, upload } = &op.event {
                sent.insert((blob, *upload), op);
                if op.outcome == Outcome::Ok {
                    acked.entry(blob).or_default().push(op);
                }
            }
        }
        Self { sent, acked }
    }

    /// Checks one read `op` of `blob` that returned `upload`: no blob only if none
    /// was acknowledged before the read began; otherwise one upload's bytes, whole,
    /// not refused, sent before the read ended and not replaced before it began.
    fn check_read(&self, op: &Op, blob: &str, upload: Option<u64>, v: &mut Verdict) {
        let Some(n) = upload else {
            // No blob yet: none may have been acknowledged before the read began.
            if let Some(w) = self
                .acked
                .get(blob)
                .and_then(|a| a.iter().find(|w| w.complete < op.invoke))
            {
                v.violations.push(format!(
                    "{blob}: read {} found no blob after upload {} was acknowledged",
                    op.id, w.id
                ));
            }
            return;
        };
        if n == TORN {
            v.violations.push(format!(
                "{blob}: read {} returned bytes of no upload, whole",
                op.id
            ));
            return;
        }
        let Some(w) = self.sent.get(&(blob, n)) else {
            v.violations.push(format!(
                "{blob}: read {} returned upload {n}, never sent",
                op.id
            ));
            return;
        };
        if w.outcome == Outcome::Fail {
            v.violations.push(format!(
                "{blob}: read {} returned upload {n}, which was refused ({})",
                op.id, w.status
            ));
        }
        if w.invoke > op.complete {
            v.violations.push(format!(
                "{blob}: read {} returned upload {n} before it was sent",
                op.id
            ));
        }
        // Replaced before the read began by an upload sent after this one ended.
        if let Some(newer) = self.acked.get(blob).and_then(|a| {
            a.iter()
                .find(|x| x.invoke > w.complete && x.complete < op.invoke)
        }) {
            v.violations.push(format!(
                "{blob}: read {} returned upload {n}, replaced by acknowledged upload {} before the read began",
                op.id, newer.id
            ));
        }
    }
}

/// The statuses each kind of operation may get; 0 is no answer (a timeout, a reset).
fn allowed(event: &Event) -> &'static [u16] {
    match event {
        Event::DocWrite { .. } => &[0, 200, 409, 503],
        Event::DocRead { .. } => &[0, 200, 503],
        Event::Create { .. } => &[0, 200, 507, 503],
        Event::Append { .. } => &[0, 200, 503],
        Event::Replay { .. } => &[0, 401, 503],
        Event::DocFinal { .. } | Event::NamespaceFinal { .. } | Event::LogFinal { .. } => &[200],
        Event::Fault { .. } => &[0],
        Event::Change { .. } => &[0, 200, 503],
        Event::Probe { .. } => &[0, 200, 401, 403, 404, 503],
        Event::Stream { .. } => &[0, 200, 503],
        Event::BlobWrite { .. } => &[0, 200, 503],
        Event::BlobRead { .. } => &[0, 200, 404, 503],
        Event::BlobFinal { .. } => &[200, 404],
    }
}

/// How long after a fault of the store or of Redis ends a `503` may still come (a
/// request that began during it, a connection coming back), in microseconds.
pub const RECOVERY_US: u64 = 3_000_000;

/// True for faults during which `503` is the documented answer.
fn store_or_redis(kind: &str) -> bool {
    kind.starts_with("store") || kind.starts_with("redis")
}

fn answers(history: &[Op], report: &mut Report) {
    let v = verdict(report, ANSWERS);
    // Outages: the store's and Redis's, for every node; a node's own pause, for the
    // requests it held (its clock ran on while it slept: its timeouts for Redis and
    // the store expired without either being down).
    let outages: Vec<(Option<usize>, u64, u64)> = history
        .iter()
        .filter_map(|o| {
            match &o.event {
                Event::Fault { kind } if store_or_redis(kind) => Some(None),
                Event::Fault { kind } if kind == "node-pause" => Some(Some(o.node)),
                _ => None,
            }
            .map(|node| (node, o.invoke, o.complete + RECOVERY_US))
        })
        .collect();
    for op in history {
        if matches!(op.event, Event::Fault { .. }) {
            continue;
        }
        v.checked += 1;
        // A replay's own rules are the replay property's: a request signed before the
        // replay cache lost its memory is refused with 503 for as long as it is fresh.
        let replay = matches!(op.event, Event::Replay { .. });
        if op.status == 503
            && !replay
            && !outages.iter().any(|(node, s, e)| {
                node.is_none_or(|n| n == op.node) && op.complete >= *s && op.invoke <= *e
            })
        {
            v.violations.push(format!(
                "operation {} ({}) got 503 while the store, Redis and its node were up",
                op.id,
                kind(&op.event)
            ));
            continue;
        }
        if !allowed(&op.event).contains(&op.status) && !matches!(op.event, Event::Replay { .. }) {
            v.violations.push(format!(
                "operation {} ({:?}) got {}",
                op.id,
                kind(&op.event),
                op.status
            ));
        }
    }
}

fn kind(event: &Event) -> &'static str {
    match event {
        Event::DocWrite { .. } => "push",
        Event::DocRead { .. } => "pull",
        Event::DocFinal { .. } => "final pull",
        Event::Create { .. } => "create",
        Event::NamespaceFinal { .. } => "usage",
        Event::Append { .. } => "append",
        Event::LogFinal { .. } => "final log pull",
        Event::Replay { .. } => "replay",
        Event::Fault { .. } => "fault",
        Event::Change { .. } => "change",
        Event::Probe { .. } => "probe",
        Event::Stream { .. } => "stream",
        Event::BlobWrite { .. } => "upload",
        Event::BlobRead { .. } => "blob pull",
        Event::BlobFinal { .. } => "final blob pull",
    }
}

/// The hash the server gives `{"w": write}`: SHA-256 of its canonical JSON.
pub fn write_hash(write: u64) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(format!("{{\"w\":{write}}}")))
}

#[cfg(test)]
mod tests;
