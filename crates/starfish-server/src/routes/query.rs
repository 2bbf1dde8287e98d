//! Query-string parameters, decoded the way `URLSearchParams` decodes them.

/// The first value of `name` in `query`.
pub(crate) fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A canonical non-negative decimal (`String(parseInt(x)) === x`): no sign, no leading
/// zeros, no spaces. `None` for anything else.
pub(crate) fn canonical_uint(value: &str) -> Option<u64> {
    let ok = !value.is_empty()
        && value.bytes().all(|b| b.is_ascii_digit())
        && (value == "0" || !value.starts_with('0'));
    if ok { value.parse().ok() } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_and_integers_are_canonical() {
        assert_eq!(
            param(Some("a=1&collections=x%2Cy"), "collections").as_deref(),
            Some("x,y")
        );
        assert_eq!(param(Some("a=1"), "b"), None);
        assert_eq!(canonical_uint("10"), Some(10));
        assert_eq!(canonical_uint("0"), Some(0));
        for bad in ["", "01", "-1", "1.0", " 1", "1e3"] {
            assert_eq!(canonical_uint(bad), None, "{bad}");
        }
    }
}
