//! Per-request signatures (§3.5–3.6).

use crate::protocol::{sha256_hex, stable_stringify};
use serde_json::{Map, Value};

/// Domain tag of the request signing input.
pub(crate) const REQUEST_DOMAIN: &str = "starfish-req-v1\n";
/// Allowed difference between `X-Starfish-Ts` and the server clock, in ms.
pub(crate) const REQUEST_SKEW_MS: u64 = 300_000;

/// What a request signature covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path and query exactly as the client sent them.
    pub path_and_query: &'a str,
    /// The signed body (empty for reads and blob uploads).
    pub body: &'a [u8],
    /// The host the client addressed.
    pub host: &'a str,
    /// `X-Starfish-Ts`.
    pub ts: i64,
    /// `X-Starfish-Nonce`.
    pub nonce: &'a str,
}

impl SignedRequest<'_> {
    /// `"starfish-req-v1\n" + stableStringify({b, h, m, nonce, p, ts})`.
    pub fn signing_input(&self) -> String {
        let mut m = Map::new();
        m.insert("b".into(), Value::from(sha256_hex(self.body)));
        m.insert("h".into(), Value::from(self.host));
        m.insert("m".into(), Value::from(self.method));
        m.insert("nonce".into(), Value::from(self.nonce));
        m.insert("p".into(), Value::from(self.path_and_query));
        // The reference holds ts as a double.
        m.insert("ts".into(), Value::from(self.ts as f64));
        format!("{REQUEST_DOMAIN}{}", stable_stringify(&Value::Object(m)))
    }
}

/// Parses `X-Starfish-Ts`: `^-?[0-9]+$` only.
pub(crate) fn parse_ts_header(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ts_header_accepts_only_plain_integers() {
        assert_eq!(parse_ts_header("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(parse_ts_header("-5"), Some(-5));
        for bad in ["", "-", "0x10", "1e3", "12.5", " 1", "+1"] {
            assert_eq!(parse_ts_header(bad), None, "{bad}");
        }
    }
}
