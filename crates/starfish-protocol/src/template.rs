//! Storage path templates: `users/{identity}/notes`.

use crate::names::{RESERVED_SUFFIXES, SYSTEM_ROOT, is_param_value};
use std::fmt;

/// The parameter whose value is bound to the caller's identity.
pub const IDENTITY_PARAM: &str = "identity";

/// One `/`-separated part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Literal text.
    Static(String),
    /// A `{name}` placeholder filled from the URL.
    Param(String),
}

/// A parsed `storagePath`. Every placeholder is a whole segment, static segments use
/// the same characters a parameter value may, and there are no empty, `.` or `..`
/// segments, so a resolved key can never leave its template.
///
/// ```
/// use starfish_protocol::template::PathTemplate;
/// let t = PathTemplate::parse("users/{identity}/notes").unwrap();
/// assert_eq!(t.params().collect::<Vec<_>>(), ["identity"]);
/// assert!(t.has_identity());
/// assert!(PathTemplate::parse("a/../b").is_err());
/// assert!(PathTemplate::parse("a//b").is_err());
/// assert!(PathTemplate::parse("a/x{id}").is_err());
/// assert!(PathTemplate::parse("a/{id}/{id}").is_err());
/// assert!(PathTemplate::parse("a/b.__meta__").is_err());
/// assert!(PathTemplate::parse("a/{id}/_keyring").is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    raw: String,
    segments: Vec<Segment>,
}

impl PathTemplate {
    /// Parses a template (without a leading `/`).
    ///
    /// # Errors
    /// A sentence saying what is wrong with the template.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut segments = Vec::new();
        for part in raw.split('/') {
            if part.is_empty() {
                return Err("storagePath must not contain empty segments".into());
            }
            if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(format!(
                        "storagePath placeholder \"{part}\" must be {{name}} with letters, digits or _"
                    ));
                }
                if segments.contains(&Segment::Param(name.to_owned())) {
                    return Err(format!(
                        "storagePath uses the placeholder \"{{{name}}}\" twice"
                    ));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if part.contains(['{', '}']) {
                return Err(format!(
                    "storagePath segment \"{part}\" must be a whole {{param}} placeholder or plain text"
                ));
            } else if RESERVED_SUFFIXES.iter().any(|s| part.ends_with(s)) {
                return Err(format!(
                    "storagePath segment \"{part}\" must not end with {}: the store keeps its own objects there",
                    RESERVED_SUFFIXES.join(", ")
                ));
            } else if part.eq_ignore_ascii_case(SYSTEM_ROOT) {
                return Err(format!(
                    "storagePath segment \"{part}\" is reserved: the server keeps its own objects there"
                ));
            } else if part == "." || part == ".." || !is_param_value(part) {
                return Err(format!(
                    "storagePath segment \"{part}\" may only contain letters, digits, '.', '_', ':', '@' and '-', and must not be . or .."
                ));
            } else {
                segments.push(Segment::Static(part.to_owned()));
            }
        }
        Ok(Self {
            raw: raw.to_owned(),
            segments,
        })
    }

    /// The template as written in the config.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The segments in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Placeholder names in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(p.as_str()),
            Segment::Static(_) => None,
        })
    }

    /// True when the template has an `{identity}` placeholder.
    pub fn has_identity(&self) -> bool {
        self.params().any(|p| p == IDENTITY_PARAM)
    }

    /// The route pattern for this template (matchit syntax), e.g. `/users/{identity}/notes`.
    pub fn route_pattern(&self) -> String {
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Static(s) => out.push_str(s),
                Segment::Param(p) => {
                    out.push('{');
                    out.push_str(p);
                    out.push('}');
                }
            }
        }
        out
    }

    /// The route pattern of the template without its last segment (the list route).
    pub fn parent_route_pattern(&self) -> String {
        let full = self.route_pattern();
        match full.rfind('/') {
            Some(0) | None => String::from("/"),
            Some(i) => full[..i].to_owned(),
        }
    }

    /// Fills the placeholders; `None` when a value is missing.
    /// Values must already be checked with [`is_param_value`].
    pub fn resolve<'a>(&self, lookup: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
        self.resolve_first(self.segments.len(), lookup, None)
            .map(String::from)
    }

    /// Like [`Self::resolve`] for the first `n` segments only, then `/suffix` when
    /// there is one. Built at its exact length: one allocation, no copy after.
    pub fn resolve_first<'a>(
        &self,
        n: usize,
        lookup: impl Fn(&str) -> Option<&'a str>,
        suffix: Option<&str>,
    ) -> Option<Box<str>> {
        let mut len = suffix.map_or(0, |s| s.len() + 1);
        for (i, seg) in self.segments.iter().take(n).enumerate() {
            let piece = match seg {
                Segment::Static(s) => s,
                Segment::Param(p) => lookup(p)?,
            };
            len += piece.len() + usize::from(i > 0);
        }
        let mut out = String::with_capacity(len);
        for (i, seg) in self.segments.iter().take(n).enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(match seg {
                Segment::Static(s) => s,
                Segment::Param(p) => lookup(p)?,
            });
        }
        if let Some(suffix) = suffix {
            out.push('/');
            out.push_str(suffix);
        }
        debug_assert_eq!(out.len(), len);
        Some(out.into_boxed_str())
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The reference's final check on a resolved key: no `..`, no control character, no `//`.
pub fn is_safe_key(key: &str) -> bool {
    // Plain scans of the bytes: `str::contains` sets up a substring search per call.
    let bytes = key.as_bytes();
    bytes.iter().all(|&b| b >= 0x20 && b != 0x7f)
        && !bytes.windows(2).any(|pair| pair == b".." || pair == b"//")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_builds_route_patterns() {
        let t = PathTemplate::parse("diary/{identity}/{day}").unwrap();
        assert_eq!(t.route_pattern(), "/diary/{identity}/{day}");
        let key = t.resolve(|p| match p {
            "identity" => Some("abc"),
            "day" => Some("2026-01-01"),
            _ => None,
        });
        assert_eq!(key.as_deref(), Some("diary/abc/2026-01-01"));
        assert_eq!(t.resolve(|_| None), None);
        let lookup = |p: &str| (p == "identity").then_some("é-x");
        for (n, suffix, want) in [
            (2, Some("notes"), Some("diary/é-x/notes")),
            (1, Some("m"), Some("diary/m")),
            (2, None, Some("diary/é-x")),
            (0, None, Some("")),
            (0, Some("m"), Some("/m")),
            (3, Some("m"), None),
        ] {
            assert_eq!(
                t.resolve_first(n, lookup, suffix).as_deref(),
                want,
                "{n} {suffix:?}"
            );
        }
    }

    #[test]
    fn unsafe_keys_are_refused() {
        assert!(is_safe_key("users/abc/notes"));
        assert!(!is_safe_key("users/../notes"));
        assert!(!is_safe_key("users/a..b/notes"));
        assert!(!is_safe_key("users//notes"));
        assert!(!is_safe_key("users/\u{1}/notes"));
        assert!(!is_safe_key("users/\u{7f}/notes"));
        assert!(!is_safe_key(".."));
        assert!(!is_safe_key("//"));
        assert!(!is_safe_key("a.."));
        assert!(is_safe_key("a/"), "a trailing slash is not a double one");
        assert!(is_safe_key("a.b/c.d/."));
        assert!(is_safe_key(""));
    }
}
