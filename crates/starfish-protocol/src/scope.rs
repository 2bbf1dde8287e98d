//! `scope.paths` globs (§3.9): `**` crosses `/`, `*` does not, `!` entries deny a path
//! and everything below it. Matched on the canonical (percent-decoded) storage path.

use percent_encoding::percent_decode_str;

/// One token of a scope glob.
#[derive(Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    /// `*`: any run of characters without `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
}

fn tokens(glob: &str) -> Vec<Tok> {
    let mut toks = Vec::with_capacity(glob.len());
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                Tok::DoubleStar
            }
            '*' => Tok::Star,
            c => Tok::Lit(c),
        });
    }
    toks
}

/// Whole-string glob match: `**` matches any run of characters, `*` any run without
/// `/`, everything else itself. The glob runs as a set of positions over the target
/// (no backtracking), so the time is `glob length x target length` whatever the
/// input, and `**` and `*` mixed in one glob never miss a match.
///
/// ```
/// use starfish_protocol::scope::path_glob_match;
/// assert!(path_glob_match("users/*/notes", "users/abc/notes"));
/// assert!(!path_glob_match("users/*", "users/abc/notes"));
/// assert!(path_glob_match("users/**", "users/abc/notes"));
/// assert!(path_glob_match("**/x/*/y", "a/x/b/x/c/y"));
/// ```
pub fn path_glob_match(glob: &str, target: &str) -> bool {
    let toks = tokens(glob);
    // active[i]: the glob's first i tokens can match the target read so far.
    let mut active = vec![false; toks.len() + 1];
    let mut next = vec![false; toks.len() + 1];
    active[0] = true;
    close_over_stars(&toks, &mut active);
    for c in target.chars() {
        next.iter_mut().for_each(|n| *n = false);
        for (i, tok) in toks.iter().enumerate() {
            if !active[i] {
                continue;
            }
            match tok {
                Tok::Lit(l) if *l == c => next[i + 1] = true,
                Tok::Lit(_) => {}
                Tok::Star if c == '/' => {}
                Tok::Star | Tok::DoubleStar => next[i] = true,
            }
        }
        close_over_stars(&toks, &mut next);
        std::mem::swap(&mut active, &mut next);
        if !active.contains(&true) {
            return false;
        }
    }
    active[toks.len()]
}

/// A star may match nothing: whoever stands before one also stands after it.
fn close_over_stars(toks: &[Tok], active: &mut [bool]) {
    for (i, tok) in toks.iter().enumerate() {
        if active[i] && matches!(tok, Tok::Star | Tok::DoubleStar) {
            active[i + 1] = true;
        }
    }
}

/// The path scope globs are matched against: each segment percent-decoded (a
/// malformed escape is left raw), empty and `.` segments dropped.
pub fn canonical_scope_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            percent_decode_str(seg)
                .decode_utf8()
                .map_or_else(|_| seg.to_owned(), |s| s.into_owned())
        })
        .filter(|seg| !seg.is_empty() && seg != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// True when `path` is inside `scope_paths`. `None` or empty means no restriction.
/// At least one allow entry must match and no `!deny` may match the path or a parent.
pub fn match_scope_path(path: &str, scope_paths: Option<&[String]>) -> bool {
    let Some(scope) = scope_paths.filter(|s| !s.is_empty()) else {
        return true;
    };
    let canonical = canonical_scope_path(path);
    let (denies, allows): (Vec<&String>, Vec<&String>) =
        scope.iter().partition(|p| p.starts_with('!'));
    if !allows.iter().any(|p| path_glob_match(p, &canonical)) {
        return false;
    }
    !denies.iter().any(|d| {
        let d = &d[1..];
        path_glob_match(d, &canonical) || path_glob_match(&format!("{d}/**"), &canonical)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, by backtracking: exponential, fine for short inputs.
    fn reference(glob: &[char], target: &[char]) -> bool {
        match glob {
            [] => target.is_empty(),
            ['*', '*', rest @ ..] => (0..=target.len()).any(|k| reference(rest, &target[k..])),
            ['*', rest @ ..] => (0..=target.len())
                .take_while(|k| !target[..*k].contains(&'/'))
                .any(|k| reference(rest, &target[k..])),
            [c, rest @ ..] => target.first() == Some(c) && reference(rest, &target[1..]),
        }
    }

    #[test]
    fn agrees_with_the_definition_on_every_short_input() {
        // Every glob of up to 6 and target of up to 5 characters over small alphabets.
        let glob_alphabet = ['a', '/', '*'];
        let target_alphabet = ['a', 'b', '/'];
        let words = |alphabet: &[char], len: usize| -> Vec<String> {
            let mut out = vec![String::new()];
            for _ in 0..len {
                out = out
                    .iter()
                    .flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}")))
                    .collect();
            }
            out
        };
        let mut checked = 0;
        for gl in 0..=6 {
            for glob in words(&glob_alphabet, gl) {
                let g: Vec<char> = glob.chars().collect();
                for tl in 0..=5 {
                    for target in words(&target_alphabet, tl) {
                        let t: Vec<char> = target.chars().collect();
                        assert_eq!(
                            path_glob_match(&glob, &target),
                            reference(&g, &t),
                            "{glob:?} vs {target:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
    }

    #[test]
    fn hostile_globs_stay_linear() {
        let glob = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let target = "a".repeat(5000);
        assert!(!path_glob_match(glob, &target));
    }
}
