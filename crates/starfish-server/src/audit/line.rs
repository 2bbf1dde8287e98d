//! A record as one JSON line, written by hand: the same bytes `serde_json` writes
//! for an [`AuditRecord`] (fields in order, absent options left out, the same
//! escapes), at a third of its cost. At 100,000 anonymous pulls a second the line
//! is the largest part of what auditing costs (docs/performance.md, "Auditing").

use super::AuditEntry;

/// Appends `record` as JSON (no newline) to `out`.
pub(crate) fn write(record: &AuditEntry<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":");
    number(out, record.timestamp);
    out.extend_from_slice(b",\"action\":");
    string(out, record.action);
    out.extend_from_slice(b",\"collection\":");
    string(out, record.collection);
    out.extend_from_slice(b",\"identity\":");
    match record.identity {
        Some(identity) => string(out, identity),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"documentKey\":");
    string(out, record.document_key);
    out.extend_from_slice(if record.success {
        b",\"success\":true,\"statusCode\":"
    } else {
        b",\"success\":false,\"statusCode\":"
    });
    number(out, u64::from(record.status_code));
    if let Some(params) = record.params {
        out.extend_from_slice(b",\"params\":{");
        for (n, (name, value)) in params.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            string(out, name);
            out.push(b':');
            string(out, value);
        }
        out.push(b'}');
    }
    optional(out, b",\"namespace\":", record.namespace);
    optional(out, b",\"requestId\":", record.request_id);
    optional(out, b",\"apiKeyId\":", record.api_key_id);
    out.extend_from_slice(b",\"node\":");
    string(out, record.node);
    optional(out, b",\"reason\":", record.reason);
    optional(out, b",\"target\":", record.target);
    out.push(b'}');
}

fn optional(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) {
    if let Some(value) = value {
        out.extend_from_slice(key);
        string(out, value);
    }
}

fn number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// `s` as a JSON string, escaped as `serde_json` escapes it: `"`, `\` and the
/// control characters, nothing else. Most strings of a record (names, keys, ids)
/// need no escape: they are copied whole.
fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    if plain(bytes) {
        out.extend_from_slice(bytes);
    } else {
        escaped(out, bytes);
    }
    out.push(b'"');
}

/// True when no byte of `bytes` needs an escape. Eight bytes at a time, in a
/// word: a record's strings are short (names, keys, ids), and a byte loop or a
/// vectorised one spends more on its ends than on its bytes.
fn plain(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut found = 0;
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        found |= escapes_in(u64::from_le_bytes(word));
    }
    // The tail padded with a byte that needs no escape.
    let mut word = [b'a'; 8];
    let tail = chunks.remainder();
    word[..tail.len()].copy_from_slice(tail);
    found |= escapes_in(u64::from_le_bytes(word));
    found == 0
}

/// Not zero when a byte of `word` is below 0x20, `"` or `\`. Exact as a whole
/// (a byte's own flag may be wrong past the first one found, never all of them).
fn escapes_in(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte below `n` (n ≤ 0x80), as "Bit Twiddling Hacks" tests it.
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    below(word, 0x20)
        | below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            _ => b"",
        };
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn text() -> impl Strategy<Value = String> {
        // Quotes, backslashes, every control character, DEL, and beyond ASCII.
        proptest::collection::vec(
            prop_oneof![
                Just('"'),
                Just('\\'),
                (0u8..0x20).prop_map(char::from),
                Just('\u{7f}'),
                Just('é'),
                Just('\u{2028}'),
                Just('🦀'),
                proptest::char::range('a', 'z'),
            ],
            0..24,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    #[test]
    fn every_byte_at_every_place_is_told_apart() {
        for len in 1..=17 {
            for at in 0..len {
                for b in 0..=u8::MAX {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    assert_eq!(plain(&bytes), !needs_escape(b), "{b:#x} at {at} of {len}");
                    // And after a byte beyond ASCII, whose borrow could hide it.
                    bytes.fill(0xff);
                    bytes[at] = b;
                    assert_eq!(plain(&bytes), !needs_escape(b), "{b:#x} at {at} of {len}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn a_string_is_plain_exactly_when_no_byte_needs_an_escape(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), Just(b'"'), Just(b'\\'), 0u8..0x21, 0x7fu8..0x82],
                0..40,
            )
        ) {
            prop_assert_eq!(plain(&bytes), !bytes.iter().any(|&b| needs_escape(b)));
        }
    }

    fn record() -> impl Strategy<Value = AuditRecord> {
        let strings = (text(), text(), text(), text(), text());
        let options = (
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(text()),
        );
        let params = proptest::option::of(proptest::collection::btree_map(text(), text(), 0..3));
        (
            any::<u64>(),
            any::<bool>(),
            any::<u16>(),
            strings,
            options,
            params,
        )
            .prop_map(
                |(timestamp, success, status_code, s, o, params)| AuditRecord {
                    timestamp,
                    action: s.0,
                    collection: s.1,
                    identity: o.0,
                    document_key: s.2,
                    success,
                    status_code,
                    params,
                    namespace: o.1,
                    request_id: o.2,
                    api_key_id: o.3,
                    node: s.3,
                    reason: o.4,
                    target: o.5.or_else(|| (!s.4.is_empty()).then_some(s.4)),
                },
            )
    }

    proptest! {
        #[test]
        fn the_line_is_what_serde_json_writes(record in record()) {
            let mut line = Vec::new();
            record.with_entry(|entry| write(entry, &mut line));
            prop_assert_eq!(
                String::from_utf8(line).unwrap(),
                serde_json::to_string(&record).unwrap()
            );
        }
    }

    #[test]
    fn a_typical_record() {
        let record = AuditRecord {
            timestamp: 1_767_225_600_000,
            action: "pull".into(),
            collection: "docs".into(),
            document_key: "docs/a".into(),
            success: true,
            status_code: 200,
            params: Some(BTreeMap::from([("id".into(), "a".into())])),
            node: "vm-1".into(),
            ..AuditRecord::default()
        };
        let mut line = Vec::new();
        record.with_entry(|entry| write(entry, &mut line));
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            r#"{"timestamp":1767225600000,"action":"pull","collection":"docs","identity":null,"documentKey":"docs/a","success":true,"statusCode":200,"params":{"id":"a"},"node":"vm-1"}"#
        );
    }
}
