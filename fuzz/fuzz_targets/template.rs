//! Template parsing and resolution: `PathTemplate::parse` on arbitrary text, then
//! every prefix of a parsed template resolved with arbitrary parameter values, as a
//! request would resolve it. A key that resolves must stay inside its template.
//!
//! Input: lines. The first is the template; the last, when it starts with `+`, is a
//! bundle member suffix; the others are parameter values, given to the template's
//! placeholders in order (a missing value leaves a placeholder unset).
#![no_main]

use libfuzzer_sys::fuzz_target;
use starfish_server::internals::{PathTemplate, resolve_key};

/// Longest key the store accepts (starfish-store's key.rs).
const MAX_KEY_BYTES: usize = 768;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let raw = lines.remove(0);
    let suffix = match lines.last() {
        Some(l) if l.starts_with('+') => lines.pop().map(|l| &l[1..]),
        _ => None,
    };
    let Ok(template) = PathTemplate::parse(raw) else {
        return;
    };
    assert_eq!(template.as_str(), raw);
    let names: Vec<&str> = template.params().collect();
    let params: Vec<(&str, &str)> = names.iter().copied().zip(lines.iter().copied()).collect();
    for n in 0..=template.segments().len() + 1 {
        let Ok(key) = resolve_key(&template, n, &params, suffix) else {
            continue;
        };
        check_key(&template, n, &params, suffix, &key);
    }
});

/// What a resolved key must be: inside the template, within the store's bounds.
fn check_key(
    template: &PathTemplate,
    n: usize,
    params: &[(&str, &str)],
    suffix: Option<&str>,
    key: &str,
) {
    use starfish_server::internals::{Segment};
    assert!(!key.is_empty() && key.len() <= MAX_KEY_BYTES, "{key:?}");
    let parts: Vec<&str> = key.split('/').collect();
    assert!(parts.iter().all(|p| *p != "." && *p != ".."), "{key:?}");
    let used = n.min(template.segments().len());
    if suffix.is_none() {
        // Without a member name (which comes from the config), every segment is one
        // of the template's: none empty.
        assert_eq!(parts.len(), used, "{key:?}");
        assert!(parts.iter().all(|p| !p.is_empty()), "{key:?}");
    } else {
        assert!(parts.len() > used, "{key:?}");
    }
    for (segment, part) in template.segments().iter().zip(&parts).take(used) {
        match segment {
            Segment::Static(s) => assert_eq!(s, part, "{key:?}"),
            Segment::Param(p) => {
                let value = params.iter().find(|(name, _)| name == p).map(|(_, v)| *v);
                assert_eq!(value, Some(*part), "{key:?}");
                // A value is one segment of the parameter charset.
                assert!(
                    part.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b)),
                    "{key:?}"
                );
            }
        }
    }
}
