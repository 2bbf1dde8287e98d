//! Per-request signatures (§3.5–3.6).

use crate::canonical::{write_js_number, write_string};
use crate::sha256_hex;

/// Domain tag of the request signing input.
pub const REQUEST_DOMAIN: &str = "starfish-req-v1\n";
/// Allowed difference between `X-Starfish-Ts` and the server clock, in ms.
pub const REQUEST_SKEW_MS: u64 = 300_000;

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
    /// `"starfish-req-v1\n" + stableStringify({b, h, m, nonce, p, ts})`, written
    /// directly: the keys in their sorted order, each value as `stableStringify`
    /// writes it (no object built and sorted per request).
    pub fn signing_input(&self) -> String {
        let mut out = String::with_capacity(
            REQUEST_DOMAIN.len()
                + 128
                + self.host.len()
                + self.method.len()
                + self.nonce.len()
                + self.path_and_query.len(),
        );
        out.push_str(REQUEST_DOMAIN);
        out.push_str("{\"b\":\"");
        if self.body.is_empty() {
            out.push_str(EMPTY_SHA256_HEX);
        } else {
            out.push_str(&sha256_hex(self.body));
        }
        out.push_str("\",\"h\":");
        write_string(&mut out, self.host);
        out.push_str(",\"m\":");
        write_string(&mut out, self.method);
        out.push_str(",\"nonce\":");
        write_string(&mut out, self.nonce);
        out.push_str(",\"p\":");
        write_string(&mut out, self.path_and_query);
        out.push_str(",\"ts\":");
        // The reference holds ts as a double.
        write_js_number(&mut out, self.ts as f64);
        out.push('}');
        out
    }
}

/// The SHA-256 of no bytes, in hex (the `b` of every unsigned-body request).
const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Parses `X-Starfish-Ts`: `^-?[0-9]+$` only.
pub fn parse_ts_header(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stable_stringify;
    use serde_json::{Value, json};

    /// The input written directly is `stableStringify` of the object, byte for byte,
    /// escapes and rounded timestamps included.
    #[test]
    fn the_signing_input_is_the_stable_stringify_of_its_object() {
        assert_eq!(EMPTY_SHA256_HEX, sha256_hex(b""));
        let request = |method, path_and_query, body, host, ts, nonce| SignedRequest {
            method,
            path_and_query,
            body,
            host,
            ts,
            nonce,
        };
        let cases = [
            request("GET", "/pull/a?x=1", b"", "h:8080", 1_767_225_600_000, "n1"),
            request("POST", "/push/b", b"{\"a\":1}", "example.com", 0, "n"),
            request(
                "GET",
                "/p/\"q\"\\",
                b"",
                "h\u{1}\n\t",
                -5,
                "é\u{7f}\u{2028}",
            ),
            request("GET", "/", b"x", "", (1 << 53) + 1, ""),
            request("PUT", "/z", b"", "h", i64::MAX, "n"),
            request("GET", "/z", b"", "h", i64::MIN, "n"),
        ];
        for signed in cases {
            let object = json!({
                "b": sha256_hex(signed.body), "h": signed.host, "m": signed.method,
                "nonce": signed.nonce, "p": signed.path_and_query,
                "ts": Value::from(signed.ts as f64),
            });
            let expected = format!("{REQUEST_DOMAIN}{}", stable_stringify(&object));
            assert_eq!(signed.signing_input(), expected);
        }
    }

    #[test]
    fn ts_header_accepts_only_plain_integers() {
        assert_eq!(parse_ts_header("1767225600000"), Some(1_767_225_600_000));
        assert_eq!(parse_ts_header("-5"), Some(-5));
        for bad in ["", "-", "0x10", "1e3", "12.5", " 1", "+1"] {
            assert_eq!(parse_ts_header(bad), None, "{bad}");
        }
    }
}
