//! The pure hot parts of a request: canonical JSON and the document hash of 1 KB and
//! 64 KB documents, and resolving a storage path template.
//!
//! `cargo bench -p starfish-server --bench hot`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use starfish_protocol::{compute_hash, stable_stringify};
use starfish_server::internals::PathTemplate;
use std::hint::black_box;

/// A document of about `bytes` bytes: nested objects, arrays, strings and numbers,
/// keys out of order (canonical JSON sorts them).
fn document(bytes: usize) -> Value {
    let mut items = Vec::new();
    let mut size = 0;
    let mut i = 0u64;
    while size < bytes {
        let item = json!({
            "zeta": format!("item {i} with some text"),
            "alpha": i,
            "mid": {"b": [1, 2, 3], "a": i as f64 / 3.0, "flag": i % 2 == 0},
        });
        size += item.to_string().len();
        items.push(item);
        i += 1;
    }
    let mut doc = Map::new();
    doc.insert("title".into(), json!("a document"));
    doc.insert("items".into(), Value::Array(items));
    Value::Object(doc)
}

fn canonical(c: &mut Criterion) {
    let mut group = c.benchmark_group("canonical");
    for kb in [1usize, 64] {
        let doc = document(kb * 1024);
        group.throughput(Throughput::Bytes((kb * 1024) as u64));
        group.bench_with_input(BenchmarkId::new("stable_stringify", kb), &doc, |b, d| {
            b.iter(|| stable_stringify(black_box(d)));
        });
        group.bench_with_input(BenchmarkId::new("compute_hash", kb), &doc, |b, d| {
            b.iter(|| compute_hash(black_box(d)));
        });
    }
    group.finish();
}

fn templates(c: &mut Criterion) {
    let template = PathTemplate::parse("orgs/{org}/users/{identity}/notes/{doc}").unwrap();
    let params = [
        ("org", "acme"),
        ("identity", "9f86d081884c7d659a2feaa0c55ad015"),
        ("doc", "groceries"),
    ];
    c.bench_function("template_resolve", |b| {
        b.iter(|| {
            template.resolve(|name| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
        });
    });
}

criterion_group!(benches, canonical, templates);
criterion_main!(benches);
