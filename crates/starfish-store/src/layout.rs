//! Where the parts of a stored document lie in its bytes, worked out once per cached
//! document, and the ETag of a document's hash.

use bytes::Bytes;
use http::HeaderValue;
use starfish_protocol::document::RawStoredDoc;

/// Where the parts of a plain stored document ([`RawStoredDoc`]) lie in its bytes.
/// Worked out once per cached document (the read cache keeps it with the bytes), so a
/// pull of a cached document copies `data` without reading it again.
#[derive(Debug)]
pub struct DocLayout {
    /// Where the stored text of `data` is (`None`: absent).
    data: Option<std::ops::Range<usize>>,
    hash: Box<str>,
    /// `hash` as a JSON string, written once.
    hash_json: Box<[u8]>,
    /// The ETag of `hash` (`None` for an empty hash).
    etag: Option<HeaderValue>,
    /// The stored `ts` (ms since the Unix epoch), when there is one.
    pub ts: Option<u64>,
    data_is_empty: bool,
}

impl DocLayout {
    /// The layout of `bytes`; `None` when they are not the plain layout.
    pub fn of(bytes: &[u8]) -> Option<Self> {
        let raw = RawStoredDoc::parse(bytes)?;
        let data = match raw.data {
            None => None,
            Some(data) => {
                // The raw value borrows from `bytes`: its offset in them.
                let text = data.get();
                let start = (text.as_ptr() as usize).checked_sub(bytes.as_ptr() as usize)?;
                let range = start..start + text.len();
                if bytes.get(range.clone())? != text.as_bytes() {
                    return None;
                }
                Some(range)
            }
        };
        let hash = raw.hash();
        Some(Self {
            data,
            hash: hash.into(),
            hash_json: serde_json::to_vec(hash).ok()?.into(),
            etag: etag(hash),
            ts: raw.ts,
            data_is_empty: raw.data_is_empty(),
        })
    }

    /// The stored hash (`""` when absent).
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The ETag of the stored hash, [`etag`] of it.
    pub fn etag(&self) -> Option<HeaderValue> {
        self.etag.clone()
    }

    /// Whether `data` is absent or has no field.
    pub fn data_is_empty(&self) -> bool {
        self.data_is_empty
    }

    /// The body of a pull of `bytes` (which this is the layout of), as
    /// [`pull_body`](starfish_protocol::document::pull_body) writes it, with `data`
    /// as stored.
    pub fn pull_body(&self, bytes: &[u8], now_ms: u64) -> Vec<u8> {
        let data = self
            .data
            .clone()
            .and_then(|range| bytes.get(range))
            .unwrap_or(b"{}");
        let mut digits = [0u8; 20];
        let timestamp = decimal(now_ms, &mut digits);
        // Allocated at its exact length: the body's `Bytes` then takes the buffer as
        // it is, without a shared block of its own.
        const FIXED: &[&[u8]] = &[b"{\"data\":", b",\"hash\":", b",\"timestamp\":", b"}"];
        let fixed: usize = FIXED.iter().map(|t| t.len()).sum();
        let mut out =
            Vec::with_capacity(fixed + data.len() + self.hash_json.len() + timestamp.len());
        out.extend_from_slice(FIXED[0]);
        out.extend_from_slice(data);
        out.extend_from_slice(FIXED[1]);
        out.extend_from_slice(&self.hash_json);
        out.extend_from_slice(FIXED[2]);
        out.extend_from_slice(timestamp);
        out.extend_from_slice(FIXED[3]);
        debug_assert_eq!(out.len(), out.capacity());
        out
    }
}

/// `n` in decimal, written at the end of `digits`.
fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is a digit.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        digits[start] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[start..]
}

/// The ETag of a document's hash: the hash in double quotes. `None` for an empty
/// hash (a missing document has none), or one no header can carry.
pub fn etag(hash: &str) -> Option<HeaderValue> {
    if hash.is_empty() {
        return None;
    }
    let mut quoted = Vec::with_capacity(hash.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(hash.as_bytes());
    quoted.push(b'"');
    HeaderValue::from_maybe_shared(Bytes::from(quoted)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value, json};
    use starfish_protocol::StoredDoc;
    use starfish_protocol::document::pull_body;

    #[test]
    fn a_pull_from_the_layout_is_the_pull_of_the_parsed_document() {
        let Value::Object(data) = json!({
            "text": "quote \" backslash \\ newline \n control \u{1} emoji \u{1F600} é",
            "n": [1, -2.5, 1e300, 12345678901234567u64, 0.1],
            "nested": {"deep": {"z": null, "a": true}},
        }) else {
            unreachable!()
        };
        let docs = [
            StoredDoc::new(data, 1_767_225_600_000, None).to_bytes(),
            StoredDoc::new(Map::new(), 5, None).to_bytes(),
            br#"{"data":{"a":1}}"#.to_vec(),
            br#"{"v":1,"data":null,"ts":null,"hash":"h"}"#.to_vec(),
            br#"{"hash":"h\u00e9\"","data":{"b":[]},"v":"anything","ts":7}"#.to_vec(),
        ];
        for bytes in &docs {
            let raw = RawStoredDoc::parse(bytes).expect("plain layout");
            let parsed = StoredDoc::parse(bytes).unwrap();
            let layout = DocLayout::of(bytes).expect("plain layout");
            assert_eq!(layout.hash(), raw.hash());
            assert_eq!(layout.data_is_empty(), raw.data_is_empty());
            assert_eq!(layout.ts, raw.ts);
            assert_eq!(layout.etag(), etag(&parsed.hash));
            for now in [0, 7, 42, 1_767_225_600_123, u64::MAX] {
                let expected = serde_json::to_vec(&pull_body(Some(&parsed), now)).unwrap();
                assert_eq!(
                    String::from_utf8(layout.pull_body(bytes, now)).unwrap(),
                    String::from_utf8(expected).unwrap()
                );
            }
        }
        // Another writer's spacing: the same document once parsed.
        let spaced = br#" { "v" : 1 , "data" : { "a" : [ 1 , 2 ] } , "ts" : 3 , "hash" : "h" } "#;
        let layout = DocLayout::of(spaced).unwrap();
        let body: Value = serde_json::from_slice(&layout.pull_body(spaced, 42)).unwrap();
        assert_eq!(body, pull_body(StoredDoc::parse(spaced).as_ref(), 42));
        let other_layout =
            br#"{"v":1,"data":{},"ts":1,"hash":"h","authorPubkey":"a","authorSignature":"s"}"#;
        assert!(DocLayout::of(other_layout).is_none());
    }

    #[test]
    fn an_etag_is_the_quoted_hash_and_none_for_no_hash() {
        assert_eq!(etag(""), None);
        assert_eq!(etag("ab12").unwrap(), "\"ab12\"");
        assert_eq!(
            etag("a\u{1}b"),
            None,
            "no header carries a control character"
        );
    }
}
