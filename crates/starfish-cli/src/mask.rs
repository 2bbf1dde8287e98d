//! Masking what `--print-config` prints: secrets, tokens and passwords whole, access
//! key ids but for their last characters, and the user info of URLs. The settings of
//! every part of `serve` use it, so it depends on none of them.

use serde_json::Value;

/// What a masked secret reads as.
pub(crate) const MASK: &str = "********";

/// Masks credential-like values in place: secrets, tokens and passwords whole, access
/// key ids but for their last characters, and the user info of URLs.
pub(crate) fn mask(value: &mut Value) {
    const SECRET_WORDS: [&str; 5] = ["secret", "token", "password", "passwd", "private"];
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                match v {
                    Value::String(s) if SECRET_WORDS.iter().any(|w| key.contains(w)) => {
                        *s = MASK.to_owned();
                    }
                    Value::String(s) if key.contains("accesskey") || key.contains("apikey") => {
                        *s = partially_masked(s);
                    }
                    other => mask(other),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask),
        Value::String(s) => {
            if let Some(masked) = without_userinfo(s) {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// `********` and the last four characters of a long identifier; short ones whole.
fn partially_masked(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{MASK}{tail}")
    } else {
        MASK.to_owned()
    }
}

/// `scheme://user:pass@host/...` without its user info, if it has some.
fn without_userinfo(s: &str) -> Option<String> {
    let (scheme, rest) = s.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{MASK}@{}", &rest[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        let mut v = serde_json::json!({
            "s3": {"secretAccessKey": "abc", "sessionToken": "def", "accessKeyId": "AKIAIOSFODNN7EXAMPLE",
                   "endpoint": "http://user:pw@host:9000/x", "bucket": "b"},
            "basePath": ["/v1"],
        });
        mask(&mut v);
        assert_eq!(v["s3"]["secretAccessKey"], MASK);
        assert_eq!(v["s3"]["sessionToken"], MASK);
        assert_eq!(v["s3"]["accessKeyId"], format!("{MASK}MPLE"));
        assert_eq!(v["s3"]["endpoint"], format!("http://{MASK}@host:9000/x"));
        assert_eq!(v["s3"]["bucket"], "b");
        assert_eq!(v["basePath"][0], "/v1");
    }
}
