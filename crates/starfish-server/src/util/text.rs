//! Text scans on the request path, written as plain byte loops.
//!
//! `str::split(char)` and friends call a searcher per piece, which costs more than
//! the short strings of a path and its keys (two to ten segments of a few bytes).

/// `text.split(byte as char)` for an ASCII `byte`, by a byte scan: the same pieces in
/// the same order, empty ones included.
pub(crate) fn split_ascii(text: &str, byte: u8) -> SplitAscii<'_> {
    debug_assert!(byte.is_ascii());
    SplitAscii {
        rest: Some(text),
        byte,
    }
}

/// The iterator of [`split_ascii`].
#[derive(Clone, Debug)]
pub(crate) struct SplitAscii<'a> {
    rest: Option<&'a str>,
    byte: u8,
}

impl<'a> Iterator for SplitAscii<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match rest.bytes().position(|b| b == self.byte) {
            // An ASCII byte is a whole character: both sides are on char boundaries.
            Some(at) => {
                self.rest = rest.get(at + 1..);
                rest.get(..at)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// `text.split_once(byte as char)` for an ASCII `byte`, by a byte scan.
pub(crate) fn split_once_ascii(text: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = text.bytes().position(|b| b == byte)?;
    Some((text.get(..at)?, text.get(at + 1..)?))
}

/// Whether `text` holds the ASCII `byte`.
pub(crate) fn has_ascii(text: &str, byte: u8) -> bool {
    text.bytes().any(|b| b == byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &[&str] = &[
        "",
        "/",
        "//",
        "a",
        "/a",
        "a/",
        "/pull/public/pub1",
        "ns/pull/users/ab%2Fc/notes",
        "a//b///c",
        "é/ü/日本/🦀",
        "/🦀/",
        "x;charset=utf-8",
        "application/json; charset=utf-8;q",
    ];

    #[test]
    fn pieces_are_those_of_str_split() {
        for text in SAMPLES {
            for byte in [b'/', b';', b'%', b'x'] {
                let ours: Vec<&str> = split_ascii(text, byte).collect();
                let std: Vec<&str> = text.split(char::from(byte)).collect();
                assert_eq!(ours, std, "{text:?} split at {:?}", char::from(byte));
                assert_eq!(
                    split_once_ascii(text, byte),
                    text.split_once(char::from(byte)),
                    "{text:?}"
                );
                assert_eq!(has_ascii(text, byte), text.contains(char::from(byte)));
            }
        }
    }
}
