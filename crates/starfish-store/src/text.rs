//! A text scan on the request path, written as a plain byte loop (the server's
//! `util::text` uses it too).
//!
//! `str::split(char)` calls a searcher per piece, which costs more than the short
//! strings of a key (two to ten segments of a few bytes).

/// `text.split(byte as char)` for an ASCII `byte`, by a byte scan: the same pieces in
/// the same order, empty ones included.
pub fn split_ascii(text: &str, byte: u8) -> SplitAscii<'_> {
    debug_assert!(byte.is_ascii());
    SplitAscii {
        rest: Some(text),
        byte,
    }
}

/// The iterator of [`split_ascii`].
#[derive(Clone, Debug)]
pub struct SplitAscii<'a> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_those_of_str_split() {
        for text in [
            "",
            "/",
            "//",
            "a",
            "/a",
            "a/",
            "a//b///c",
            "é/ü/日本/🦀",
            "/🦀/",
        ] {
            let ours: Vec<&str> = split_ascii(text, b'/').collect();
            let std: Vec<&str> = text.split('/').collect();
            assert_eq!(ours, std, "{text:?}");
        }
    }
}
