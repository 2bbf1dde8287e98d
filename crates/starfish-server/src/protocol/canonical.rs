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
        Value::Object(map) => {
            // UTF-8 byte order is Unicode code point order, which is what the reference sorts by.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
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
    }
}

/// `JSON.stringify(string)`: escapes `"`, `\`, the short control escapes and every
/// other control character as `\u00xx`; `/` and non-ASCII are written as they are.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) {
    // Every JSON number is a double in the reference; integers past 2^53 round.
    let x = n.as_f64().unwrap_or(f64::NAN);
    write_js_number(out, x);
}

/// ECMAScript `Number::toString` for a double (the form `JSON.stringify` uses).
/// `n` as a whole non-negative number (what `Number.isInteger(n) && n >= 0` admits,
/// within `u64`); `None` for fractions, negatives, infinities and NaN.
pub(crate) fn non_negative_integer(n: f64) -> Option<u64> {
    (n.is_finite() && n.fract() == 0.0 && n >= 0.0 && n <= u64::MAX as f64).then_some(n as u64)
}

pub(crate) fn write_js_number(out: &mut String, x: f64) {
    if !x.is_finite() {
        out.push_str("null");
        return;
    }
    if x == 0.0 {
        out.push('0');
        return;
    }
    if x < 0.0 {
        out.push('-');
    }
    // Rust's `{:e}` prints the shortest round-trip digits, e.g. `1.5e-7`.
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    let k = digits.len() as i32;
    let n = exp + 1; // position of the decimal point relative to the digits
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n > 0 { '+' } else { '-' });
        let _ = write!(out, "{}", (n - 1).abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn num(x: f64) -> String {
        let mut s = String::new();
        write_js_number(&mut s, x);
        s
    }

    #[test]
    fn numbers_print_like_javascript() {
        assert_eq!(num(0.1), "0.1");
        assert_eq!(num(1e-7), "1e-7");
        assert_eq!(num(1e-6), "0.000001");
        assert_eq!(num(1e21), "1e+21");
        assert_eq!(num(1e20), "100000000000000000000");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(-1.5), "-1.5");
        assert_eq!(num(123.456), "123.456");
        assert_eq!(num(1.2345e-10), "1.2345e-10");
        assert_eq!(num(f64::NAN), "null");
        assert_eq!(num(9007199254740993_u64 as f64), "9007199254740992");
    }

    #[test]
    fn keys_sort_by_code_point_and_strings_escape_like_json_stringify() {
        let v = json!({"😀": 1, "ﬀ": 2, "é": "café", "a\"b": "line1\nline2\t/\\", "c": "\u{1}"});
        assert_eq!(
            stable_stringify(&v),
            "{\"a\\\"b\":\"line1\\nline2\\t/\\\\\",\"c\":\"\\u0001\",\"é\":\"café\",\"ﬀ\":2,\"😀\":1}"
        );
    }

    #[test]
    fn empty_object_hash_matches_reference() {
        assert_eq!(
            compute_hash(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
