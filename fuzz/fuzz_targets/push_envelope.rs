//! The push request body: a regular push envelope and an append envelope, parsed and
//! sanitised as the server does before hashing and storing. Must never panic, and an
//! accepted body's `data`:
//!
//! - holds none of the prototype-pollution keys in any object reached through
//!   objects (the reference does not descend into arrays);
//! - is a fixed point: pushing it again stores the same data, so the same hash;
//! - nests at most 64 levels with its envelope.
//!
//! Input: the request body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use starfish_protocol::compute_hash;
use starfish_protocol::document::{AppendEnvelope, PushEnvelope, parse_body_object};

const UNSAFE_KEYS: [&str; 5] = [
    "__proto__",
    "constructor",
    "prototype",
    "__class__",
    "__dict__",
];

fuzz_target!(|body: &[u8]| {
    if let Ok((data, base_hash)) = push_envelope(body) {
        check_clean(&data);
        assert!(depth(&Value::Object(data.clone())) < 64);
        let again = json!({"data": data, "baseHash": base_hash}).to_string();
        match push_envelope(again.as_bytes()) {
            Ok((data2, base_hash2)) => {
                assert_eq!(data2, data, "sanitising twice changed the data");
                assert_eq!(base_hash2, base_hash);
                assert_eq!(
                    compute_hash(&Value::Object(data2)),
                    compute_hash(&Value::Object(data))
                );
            }
            Err(e) => panic!("an accepted envelope was refused when sent again: {e}"),
        }
    }
    for require_author in [false, true] {
        if let Ok((item, ts)) = append_envelope(body, require_author) {
            check_clean(&item);
            let mut again = json!({"data": item});
            if let Some(ts) = ts {
                again["ts"] = json!(ts);
            }
            if let Ok((item2, ts2)) = append_envelope(again.to_string().as_bytes(), false) {
                assert_eq!(item2, item, "sanitising an element twice changed it");
                assert_eq!(ts2, ts);
            } else {
                panic!("an accepted element was refused when sent again");
            }
        }
    }
});

/// No unsafe key in `map` or in any object reached through objects.
fn check_clean(map: &Map<String, Value>) {
    for (key, value) in map {
        assert!(
            !UNSAFE_KEYS.contains(&key.as_str()),
            "unsafe key {key:?} kept"
        );
        if let Value::Object(inner) = value {
            check_clean(inner);
        }
    }
}

/// A regular push body as the server reads it: the sanitised `data` and `baseHash`.
fn push_envelope(body: &[u8]) -> Result<(Map<String, Value>, Option<String>), String> {
    let body = parse_body_object(body).map_err(|e| e.to_string())?;
    let envelope = PushEnvelope::from_body(body).map_err(|e| e.to_string())?;
    Ok((envelope.data, envelope.base_hash))
}

/// An append body as the server reads it: the sanitised item and the client's `ts`.
fn append_envelope(
    body: &[u8],
    require_author: bool,
) -> Result<(Map<String, Value>, Option<u64>), String> {
    let body = parse_body_object(body).map_err(|e| e.to_string())?;
    let envelope = AppendEnvelope::from_body(body, require_author).map_err(|e| e.to_string())?;
    Ok((envelope.item, envelope.ts))
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
