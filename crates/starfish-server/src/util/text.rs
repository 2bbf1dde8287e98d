//! Text scans on the request path, written as plain byte loops.
//!
//! `str::split(char)` and friends call a searcher per piece, which costs more than
//! the short strings of a path and its keys (two to ten segments of a few bytes).

pub(crate) use starfish_store::text::split_ascii;

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
