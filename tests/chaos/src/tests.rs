//! The checker against histories known to be good or bad: each kind of violation it
//! must catch, fed to it on purpose.

use super::*;

struct H {
    ops: Vec<Op>,
}

impl H {
    fn new() -> Self {
        Self { ops: Vec::new() }
    }

    fn op(
        &mut self,
        node: usize,
        span: (u64, u64),
        outcome: Outcome,
        status: u16,
        event: Event,
    ) -> u64 {
        let id = self.ops.len() as u64 + 1;
        self.ops.push(Op {
            id,
            client: 0,
            node,
            invoke: span.0,
            complete: span.1,
            outcome,
            status,
            event,
        });
        id
    }

    fn write(&mut self, span: (u64, u64), w: u64, base: Option<u64>, outcome: Outcome) {
        let status = match outcome {
            Outcome::Ok => 200,
            Outcome::Fail => 409,
            Outcome::Unknown => 0,
        };
        self.op(
            0,
            span,
            outcome,
            status,
            Event::DocWrite {
                doc: "d".into(),
                write: w,
                base: base.map(write_hash),
                hash: write_hash(w),
            },
        );
    }

    fn read(&mut self, span: (u64, u64), w: Option<u64>) {
        let hash = w.map(write_hash).unwrap_or_default();
        self.op(
            1,
            span,
            Outcome::Ok,
            200,
            Event::DocRead {
                doc: "d".into(),
                hash,
            },
        );
    }

    fn last(&mut self, w: Option<u64>) {
        let hash = w.map(write_hash).unwrap_or_default();
        for node in 0..3 {
            self.op(
                node,
                (1000, 1001),
                Outcome::Ok,
                200,
                Event::DocFinal {
                    doc: "d".into(),
                    hash: hash.clone(),
                },
            );
        }
    }

    fn report(&self) -> Report {
        check(&self.ops, 1)
    }
}

fn violations(report: &Report, property: &str) -> Vec<String> {
    report[property].violations.clone()
}

fn clean(report: &Report) {
    for (p, v) in report {
        assert!(v.violations.is_empty(), "{p}: {:?}", v.violations);
    }
}

/// Three writes in a chain, reads that each see a state current during the read,
/// a refused write, an unknown one that never showed up.
fn good() -> H {
    let mut h = H::new();
    h.read((0, 5), None);
    h.write((10, 20), 1, None, Outcome::Ok);
    h.read((15, 25), Some(1)); // concurrent with write 1: may see it
    h.read((12, 18), None); // concurrent with write 1: may miss it
    h.write((30, 40), 2, Some(1), Outcome::Ok);
    h.write((31, 41), 9, Some(1), Outcome::Fail); // lost the race: 409
    h.write((32, 60), 8, Some(1), Outcome::Unknown); // never took effect
    h.read((45, 50), Some(2));
    h.write((70, 80), 3, Some(2), Outcome::Unknown); // took effect: read below
    h.read((85, 90), Some(3));
    h.last(Some(3));
    h
}

#[test]
fn a_good_history_passes() {
    let h = good();
    let report = h.report();
    clean(&report);
    assert!(report["documents: linearizable reads"].checked >= 5);
}

#[test]
fn a_lost_write_is_caught() {
    let mut h = good();
    // An acknowledged write 4 on top of write 3 that the final state does not hold.
    h.ops.retain(|o| !matches!(o.event, Event::DocFinal { .. }));
    h.write((95, 99), 4, Some(3), Outcome::Ok);
    h.last(Some(3));
    let lost = violations(&h.report(), "documents: no lost write");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(lost[0].contains("acknowledged write"), "{lost:?}");
}

#[test]
fn nodes_that_disagree_at_the_end_are_caught() {
    let mut h = good();
    h.op(
        2,
        (1000, 1001),
        Outcome::Ok,
        200,
        Event::DocFinal {
            doc: "d".into(),
            hash: write_hash(2),
        },
    );
    let lost = violations(&h.report(), "documents: no lost write");
    assert!(lost.iter().any(|v| v.contains("disagree")), "{lost:?}");
}

#[test]
fn a_stale_read_is_caught() {
    let mut h = good();
    // Write 2 was acknowledged at 40; a read begun at 42 still returns write 1.
    h.read((42, 44), Some(1));
    let lin = violations(&h.report(), "documents: linearizable reads");
    assert_eq!(lin.len(), 1, "{lin:?}");
    assert!(lin[0].contains("stale"), "{lin:?}");
}

#[test]
fn a_read_that_goes_back_in_time_is_caught() {
    let mut h = H::new();
    h.write((0, 100), 1, None, Outcome::Ok);
    h.read((10, 20), Some(1)); // sees write 1 while it is under way: fine
    h.read((30, 40), None); // then a later read misses it: not linearizable
    h.last(Some(1));
    let lin = violations(&h.report(), "documents: linearizable reads");
    assert_eq!(lin.len(), 1, "{lin:?}");
    assert!(lin[0].contains("after read"), "{lin:?}");
}

#[test]
fn a_read_of_the_future_or_of_nothing_is_caught() {
    let mut h = H::new();
    h.read((0, 5), Some(1)); // write 1 is sent at 10
    h.write((10, 20), 1, None, Outcome::Ok);
    h.op(
        1,
        (30, 31),
        Outcome::Ok,
        200,
        Event::DocRead {
            doc: "d".into(),
            hash: "ab".repeat(32),
        },
    );
    h.last(Some(1));
    let report = h.report();
    let lin = violations(&report, "documents: linearizable reads");
    assert!(
        lin.iter().any(|v| v.contains("before it was sent")),
        "{lin:?}"
    );
    let chain = violations(&report, "documents: one chain");
    assert!(
        chain.iter().any(|v| v.contains("never written")),
        "{chain:?}"
    );
}

#[test]
fn a_fork_is_caught() {
    let mut h = H::new();
    h.write((0, 10), 1, None, Outcome::Ok);
    h.write((20, 30), 2, Some(1), Outcome::Ok);
    h.write((21, 31), 3, Some(1), Outcome::Ok); // both accepted on write 1
    h.last(Some(3));
    let report = h.report();
    let chain = violations(&report, "documents: one chain");
    assert!(chain.iter().any(|v| v.contains("fork")), "{chain:?}");
    assert!(!violations(&report, "documents: no lost write").is_empty());
}

#[test]
fn a_refused_write_that_took_effect_is_caught() {
    let mut h = H::new();
    h.write((0, 10), 1, None, Outcome::Fail);
    h.read((20, 30), Some(1));
    h.last(Some(1));
    let chain = violations(&h.report(), "documents: one chain");
    assert!(chain.iter().any(|v| v.contains("refused")), "{chain:?}");
}

fn create(h: &mut H, ns: &str, outcome: Outcome, status: u16) {
    h.op(
        0,
        (0, 1),
        outcome,
        status,
        Event::Create {
            namespace: ns.into(),
            quota: 3,
        },
    );
}

fn usage(h: &mut H, ns: &str, stored: u64, recorded: u64) {
    h.op(
        0,
        (9, 10),
        Outcome::Ok,
        200,
        Event::NamespaceFinal {
            namespace: ns.into(),
            quota: 3,
            stored,
            recorded,
        },
    );
}

#[test]
fn a_quota_overshoot_is_caught() {
    let mut h = H::new();
    for _ in 0..3 {
        create(&mut h, "ok", Outcome::Ok, 200);
    }
    create(&mut h, "ok", Outcome::Fail, 507);
    usage(&mut h, "ok", 3, 3);
    clean(&h.report());
    for _ in 0..4 {
        create(&mut h, "over", Outcome::Ok, 200);
    }
    usage(&mut h, "over", 4, 2);
    let q = violations(&h.report(), "quotas");
    assert!(
        q.iter().any(|v| v.contains("4 creates acknowledged")),
        "{q:?}"
    );
    assert!(q.iter().any(|v| v.contains("4 documents stored")), "{q:?}");
    assert!(q.iter().any(|v| v.contains("usage record")), "{q:?}");
}

#[test]
fn a_lost_create_is_caught() {
    let mut h = H::new();
    create(&mut h, "ns", Outcome::Ok, 200);
    create(&mut h, "ns", Outcome::Ok, 200);
    usage(&mut h, "ns", 1, 1);
    let q = violations(&h.report(), "quotas");
    assert!(
        q.iter()
            .any(|v| v.contains("2 creates acknowledged, 1 stored")),
        "{q:?}"
    );
}

#[test]
fn a_double_accepted_replay_is_caught() {
    let mut h = H::new();
    h.op(
        0,
        (0, 1),
        Outcome::Unknown,
        0,
        Event::Fault {
            kind: "redis-restart".into(),
        },
    );
    h.op(1, (0, 1), Outcome::Fail, 401, Event::Replay { original: 7 });
    h.op(2, (0, 1), Outcome::Fail, 503, Event::Replay { original: 7 });
    clean(&h.report());
    h.op(2, (2, 3), Outcome::Ok, 200, Event::Replay { original: 7 });
    h.op(0, (2, 3), Outcome::Fail, 409, Event::Replay { original: 8 });
    let r = violations(&h.report(), "replays");
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(r[0].contains("request 7 accepted again"), "{r:?}");
}

fn append(h: &mut H, span: (u64, u64), e: u64, outcome: Outcome) {
    let status = if outcome == Outcome::Ok { 200 } else { 0 };
    h.op(
        0,
        span,
        outcome,
        status,
        Event::Append {
            log: "l".into(),
            element: e,
        },
    );
}

fn log_final(h: &mut H, elements: &[u64]) {
    h.op(
        0,
        (100, 101),
        Outcome::Ok,
        200,
        Event::LogFinal {
            log: "l".into(),
            elements: Some(elements.to_vec()),
        },
    );
}

#[test]
fn logs_lost_doubled_or_reordered_elements_are_caught() {
    let base = || {
        let mut h = H::new();
        append(&mut h, (0, 10), 1, Outcome::Ok);
        append(&mut h, (5, 15), 2, Outcome::Ok); // concurrent with 1: either order
        append(&mut h, (20, 30), 3, Outcome::Ok);
        append(&mut h, (21, 40), 4, Outcome::Unknown);
        h
    };
    for good in [&[1, 2, 3][..], &[2, 1, 3, 4], &[1, 2, 3, 4]] {
        let mut h = base();
        log_final(&mut h, good);
        clean(&h.report());
    }
    let cases: [(&[u64], &str); 4] = [
        (&[1, 3], "acknowledged element 2 is missing"),
        (&[1, 2, 2, 3], "more than once"),
        (&[1, 3, 2], "acknowledged before it was sent"),
        (&[1, 2, 3, 5], "never appended"),
    ];
    for (elements, finding) in cases {
        let mut h = base();
        log_final(&mut h, elements);
        let l = violations(&h.report(), "logs");
        assert!(l.iter().any(|v| v.contains(finding)), "{elements:?}: {l:?}");
    }
}

#[test]
fn an_undocumented_answer_is_caught() {
    let mut h = good();
    h.op(
        0,
        (0, 1),
        Outcome::Fail,
        500,
        Event::DocRead {
            doc: "d".into(),
            hash: String::new(),
        },
    );
    h.op(
        0,
        (0, 1),
        Outcome::Unknown,
        408,
        Event::DocWrite {
            doc: "x".into(),
            write: 77,
            base: None,
            hash: write_hash(77),
        },
    );
    let a = violations(&h.report(), ANSWERS);
    assert_eq!(a.len(), 2, "{a:?}");
}

#[test]
fn a_503_is_documented_only_while_the_store_or_redis_is_down() {
    let mut h = good();
    h.op(
        0,
        (5_000_000, 6_000_000),
        Outcome::Unknown,
        0,
        Event::Fault {
            kind: "store-5xx".into(),
        },
    );
    h.op(
        1,
        (20_000_000, 21_000_000),
        Outcome::Unknown,
        0,
        Event::Fault {
            kind: "node-kill".into(),
        },
    );
    // During the store's outage, and just after it: documented.
    h.op(
        0,
        (5_500_000, 5_600_000),
        Outcome::Unknown,
        503,
        Event::DocRead {
            doc: "d".into(),
            hash: String::new(),
        },
    );
    h.op(
        0,
        (7_000_000, 7_100_000),
        Outcome::Unknown,
        503,
        Event::DocRead {
            doc: "d".into(),
            hash: String::new(),
        },
    );
    clean(&h.report());
    // While only a node was down: the store and Redis were up.
    h.op(
        0,
        (20_500_000, 20_600_000),
        Outcome::Unknown,
        503,
        Event::DocRead {
            doc: "d".into(),
            hash: String::new(),
        },
    );
    let a = violations(&h.report(), ANSWERS);
    assert_eq!(a.len(), 1, "{a:?}");
    assert!(a[0].contains("were up"), "{a:?}");
    // A node's own pause: its requests may get 503 (its timeouts ran on), other
    // nodes' may not.
    let mut h = good();
    h.op(
        1,
        (30_000_000, 32_000_000),
        Outcome::Unknown,
        0,
        Event::Fault {
            kind: "node-pause".into(),
        },
    );
    h.op(
        1,
        (30_000_100, 32_000_100),
        Outcome::Unknown,
        503,
        Event::DocRead {
            doc: "d".into(),
            hash: String::new(),
        },
    );
    clean(&h.report());
    h.op(
        0,
        (30_000_100, 30_000_200),
        Outcome::Unknown,
        503,
        Event::DocRead {
            doc: "d".into(),
            hash: String::new(),
        },
    );
    assert_eq!(violations(&h.report(), ANSWERS).len(), 1);
}

#[test]
fn the_write_hash_is_the_servers() {
    // `{"w":1}`, hashed as the protocol's canonical JSON.
    let canonical = starfish_protocol::stable_stringify(&serde_json::json!({"w": 1}));
    assert_eq!(canonical, "{\"w\":1}");
    use sha2::Digest;
    assert_eq!(write_hash(1), hex::encode(sha2::Sha256::digest(canonical)));
}

#[test]
fn a_revoked_key_or_a_suspended_or_deleted_namespace_served_late_is_caught() {
    for (kind, refusal) in [("revoke", 401), ("suspend", 403), ("delete", 404)] {
        let mut h = H::new();
        let change = h.op(
            0,
            (0, 1_000),
            Outcome::Ok,
            200,
            Event::Change {
                target: "t".into(),
                change: kind.into(),
            },
        );
        let probe = |h: &mut H, at: u64, status: u16| {
            h.op(
                1,
                (at, at + 10),
                Outcome::Ok,
                status,
                Event::Probe {
                    change,
                    what: kind.into(),
                    stale: false,
                },
            );
        };
        // Within the bound anything goes; past it only the refusal (or no answer).
        probe(&mut h, 500_000, 200);
        probe(&mut h, 1_500_000, refusal);
        probe(&mut h, 1_700_000, 0);
        clean(&h.report());
        probe(&mut h, 1_800_000, 200);
        let v = violations(&h.report(), "tenants and keys");
        assert_eq!(v.len(), 1, "{kind}: {v:?}");
    }
}

#[test]
fn a_deleted_namespace_whose_data_or_key_comes_back_is_caught() {
    let mut h = H::new();
    let change = h.op(
        0,
        (0, 1_000),
        Outcome::Ok,
        200,
        Event::Change {
            target: "t".into(),
            change: "delete".into(),
        },
    );
    h.op(
        1,
        (5_000, 5_010),
        Outcome::Ok,
        200,
        Event::Probe {
            change,
            what: "recreated-data".into(),
            stale: false,
        },
    );
    h.op(
        1,
        (5_000, 5_010),
        Outcome::Ok,
        401,
        Event::Probe {
            change,
            what: "recreated-key".into(),
            stale: false,
        },
    );
    // Void in the new generation: no rights there.
    h.op(
        1,
        (5_000, 5_010),
        Outcome::Ok,
        403,
        Event::Probe {
            change,
            what: "recreated-key".into(),
            stale: false,
        },
    );
    clean(&h.report());
    h.op(
        1,
        (6_000, 6_010),
        Outcome::Ok,
        200,
        Event::Probe {
            change,
            what: "recreated-data".into(),
            stale: true,
        },
    );
    h.op(
        1,
        (6_000, 6_010),
        Outcome::Ok,
        200,
        Event::Probe {
            change,
            what: "recreated-key".into(),
            stale: false,
        },
    );
    let v = violations(&h.report(), "tenants and keys");
    assert_eq!(v.len(), 2, "{v:?}");
}

fn stream(h: &mut H, span: (u64, u64), heard: &[u64], ended: bool) {
    h.op(
        2,
        span,
        Outcome::Ok,
        200,
        Event::Stream {
            docs: vec!["d".into()],
            heard: heard
                .iter()
                .map(|w| ("d".to_owned(), write_hash(*w)))
                .collect(),
            ended,
        },
    );
}

#[test]
fn a_silent_gap_in_a_live_stream_is_caught() {
    let base = || {
        let mut h = H::new();
        h.write((10, 20), 1, None, Outcome::Ok);
        h.write((3_000_000, 3_000_100), 2, Some(1), Outcome::Ok);
        h.write((3_000_200, 3_000_300), 3, Some(2), Outcome::Unknown);
        h.last(Some(2));
        h
    };
    // Opened after write 1 was sent: only write 2 is owed; an unknown write is not.
    let mut h = base();
    stream(&mut h, (15, 10_000_000), &[2], false);
    clean(&h.report());
    // A stream the server ended owes nothing: its client pulls.
    let mut h = base();
    stream(&mut h, (15, 10_000_000), &[], true);
    clean(&h.report());
    // Closed too soon after write 2 for it to be owed.
    let mut h = base();
    stream(&mut h, (15, 4_000_000), &[], false);
    clean(&h.report());
    // Open all along, and write 2 never came: a silent gap.
    let mut h = base();
    stream(&mut h, (15, 10_000_000), &[], false);
    let v = violations(&h.report(), "live changes");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("never heard"), "{v:?}");
}

fn upload(h: &mut H, span: (u64, u64), n: u64, outcome: Outcome) {
    let status = match outcome {
        Outcome::Ok => 200,
        Outcome::Fail => 413,
        Outcome::Unknown => 0,
    };
    h.op(
        0,
        span,
        outcome,
        status,
        Event::BlobWrite {
            blob: "b".into(),
            upload: n,
        },
    );
}

fn blob_read(h: &mut H, span: (u64, u64), n: Option<u64>) {
    h.op(
        1,
        span,
        Outcome::Ok,
        200,
        Event::BlobRead {
            blob: "b".into(),
            upload: n,
        },
    );
}

#[test]
fn blob_contents_name_their_upload_and_a_torn_one_is_told() {
    let bytes = blob_bytes(42);
    assert_eq!(which_upload(&bytes), Some(42));
    assert_eq!(which_upload(&bytes[..bytes.len() - 1]), Some(TORN));
    let mut mixed = bytes;
    let at = mixed.len() / 2;
    mixed[at] ^= 1;
    assert_eq!(which_upload(&mixed), Some(TORN));
    assert_eq!(which_upload(b"short"), None);
}

#[test]
fn a_torn_stale_or_lost_blob_is_caught() {
    let base = || {
        let mut h = H::new();
        upload(&mut h, (0, 10), 1, Outcome::Ok);
        upload(&mut h, (20, 30), 2, Outcome::Ok);
        upload(&mut h, (25, 40), 3, Outcome::Unknown);
        h
    };
    let mut h = base();
    blob_read(&mut h, (5, 15), Some(1));
    blob_read(&mut h, (35, 50), Some(2)); // 3 may or may not have landed
    blob_read(&mut h, (35, 50), Some(3));
    for node in 0..3 {
        h.op(
            node,
            (100, 101),
            Outcome::Ok,
            200,
            Event::BlobFinal {
                blob: "b".into(),
                upload: Some(3),
            },
        );
    }
    clean(&h.report());
    let cases: [(Option<u64>, &str); 3] = [
        (Some(TORN), "no upload"),
        (Some(1), "replaced by acknowledged upload"),
        (None, "found no blob"),
    ];
    for (n, finding) in cases {
        let mut h = base();
        blob_read(&mut h, (45, 50), n);
        let v = violations(&h.report(), "blobs");
        assert!(v.iter().any(|x| x.contains(finding)), "{n:?}: {v:?}");
    }
    let mut h = base();
    h.op(
        0,
        (100, 101),
        Outcome::Ok,
        200,
        Event::BlobFinal {
            blob: "b".into(),
            upload: Some(2),
        },
    );
    h.op(
        1,
        (100, 101),
        Outcome::Ok,
        200,
        Event::BlobFinal {
            blob: "b".into(),
            upload: Some(3),
        },
    );
    let v = violations(&h.report(), "blobs");
    assert!(v.iter().any(|x| x.contains("disagree")), "{v:?}");
}
