//! Canonical JSON (`stableStringify`) and the document hash.
//!
//! The reference serialises with JavaScript semantics: every number is an IEEE-754
//! double printed the way `JSON.stringify` prints it, object keys are sorted by
//! Unicode code point, and there is no whitespace. Hashes and signatures are taken
//! over the UTF-8 bytes of that text, so this module must agree with the reference
//! byte for byte (see `tests/vectors/document-hash.json`).

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The canonical text of `value`, as the reference's `stableStringify` writes it.
pub fn stable_stringify(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, value);
    out
}

/// Lowercase hex SHA-256 of the canonical text of `value`: the document hash.
pub fn compute_hash(value: &Value) -> String {
    sha256_hex(stable_stringify(value).as_bytes())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map.iter()),
    }
}

/// An object of `entries`, its keys sorted.
fn write_object<'a>(out: &mut String, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    // UTF-8 byte order is Unicode code point order, which is what the reference sorts by.
    let mut entries: Vec<(&String, &Value)> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, item)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, item);
    }
    out.push('}');
}

/// [`stable_stringify`] of the object `map` without its key `skip` (a signed
/// object's signing input), appended to `out`, without copying the object.
pub fn write_stable_without(out: &mut String, map: &serde_json::Map<String, Value>, skip: &str) {
    write_object(out, map.iter().filter(|(key, _)| key.as_str() != skip));
}

/// `JSON.stringify(string)`: escapes `"`, `\`, the short control escapes and every
/// other control character as `\u00xx`; `/` and non-ASCII are written as they are.
/// Runs that need no escape are copied whole.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            0x0c => "\\f",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Integers up to 2^53 are doubles printed as themselves.
const EXACT_INTEGERS: u64 = 1 << 53;

fn write_number(out: &mut String, n: &Number) {
    // The common case: an integer a double holds exactly prints as its digits.
    if let Some(i) = n.as_u64().filter(|i| *i <= EXACT_INTEGERS) {
        let _ = write!(out, "{i}");
        return;
    }
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT_INTEGERS) {
        let _ = write!(out, "{i}");
        return;
    }
    // Every JSON number is a double in the reference; integers past 2^53 round.
    let x = n.as_f64().unwrap_or(f64::NAN);
    write_js_number(out, x);
}

/// `n` as a whole non-negative number (what `Number.isInteger(n) && n >= 0` admits,
/// within `u64`); `None` for fractions, negatives, infinities and NaN.
pub fn non_negative_integer(n: f64) -> Option<u64> {
    (n.is_finite() && n.fract() == 0.0 && n >= 0.0 && n <= u64::MAX as f64).then_some(n as u64)
}

/// ECMAScript `Number::toString` for a double (the form `JSON.stringify` uses).
pub fn write_js_number(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    // `-0` prints as `0`; everything else exactly as ECMAScript's Number::toString.
    if x == 0.0 {
        out.push('0');
        return;
    }
    out.push_str(ryu_js::Buffer::new().format_finite(x));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object written without a key reads as the object with the key removed,
    /// written whole: whatever the key's place in the order, whether it is there,
    /// with nested values and keys beyond ASCII.
    #[test]
    fn an_object_without_a_key_is_written_as_if_the_key_were_removed() {
        let objects = [
            serde_json::json!({"sig": "s", "a": 1, "z": [1, {"y": "é", "b": null}]}),
            serde_json::json!({"a": 1, "b": {"sig": "kept, nested"}, "sig": "x", "é": true}),
            serde_json::json!({"only": "no sig here", "\u{1}": "\u{7f}"}),
            serde_json::json!({"sig": "alone"}),
            serde_json::json!({}),
            serde_json::json!({"sih": 1, "sif": 2, "sig": 3, "si": 4, "sigg": 5}),
        ];
        for object in objects {
            let map = object.as_object().unwrap();
            let mut removed = map.clone();
            removed.remove("sig");
            let mut written = String::from("prefix:");
            write_stable_without(&mut written, map, "sig");
            assert_eq!(
                written,
                format!("prefix:{}", stable_stringify(&Value::Object(removed))),
                "{object}"
            );
        }
    }
}
