//! Canonical JSON (`stableStringify`) and the document hash. Must never panic, and:
//!
//! - the canonical text is JSON, and canonicalising it again gives the same text
//!   (`stringify(parse(stringify(x))) == stringify(x)`), so a hash survives a store
//!   round trip;
//! - the text does not depend on the order keys were inserted in;
//! - `compute_hash(x) == sha256_hex(stringify(x))`;
//! - every finite double prints as JavaScript prints it, which reads back as the
//!   same double.
//!
//! Input: JSON text; its bytes are also read as doubles, 8 at a time.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use starfish_protocol::{compute_hash, sha256_hex, stable_stringify};

fuzz_target!(|data: &[u8]| {
    for chunk in data.chunks_exact(8) {
        let x = f64::from_bits(u64::from_le_bytes(chunk.try_into().unwrap()));
        check_number(x);
    }
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let text = stable_stringify(&value);
    assert_eq!(compute_hash(&value), sha256_hex(text.as_bytes()));
    let reparsed: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("canonical text is not JSON ({e}): {text:?}"),
    };
    assert_eq!(
        stable_stringify(&reparsed),
        text,
        "canonicalising twice changed the text"
    );
    assert_eq!(
        stable_stringify(&reversed(&value)),
        text,
        "key order changed the text"
    );
});

/// `value` with every object's keys inserted in reverse order.
fn reversed(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .rev()
                .map(|(k, v)| (k.clone(), reversed(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
        other => other.clone(),
    }
}

/// A double prints as a JavaScript number that reads back as itself (`-0` as `0`).
fn check_number(x: f64) {
    let Some(n) = serde_json::Number::from_f64(x) else {
        return; // NaN and infinities are not JSON numbers
    };
    let text = stable_stringify(&Value::Number(n));
    let back: f64 = match text.parse() {
        Ok(b) => b,
        Err(e) => panic!("{x:e} printed as {text:?}, which is not a number ({e})"),
    };
    if x == 0.0 {
        assert_eq!(text, "0");
        return;
    }
    assert_eq!(back.to_bits(), x.to_bits(), "{x:e} printed as {text:?}");
    // JavaScript's form: an exponent only from 1e21 up or under 1e-6.
    let abs = x.abs();
    assert_eq!(
        text.contains('e'),
        !(1e-6..1e21).contains(&abs),
        "{x:e} printed as {text:?}"
    );
}
