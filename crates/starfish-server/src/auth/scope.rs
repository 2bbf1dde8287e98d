//! `scope.paths` globs (§3.9): `**` crosses `/`, `*` does not, `!` entries deny a path
//! and everything below it. Matched on the canonical (percent-decoded) storage path.

use percent_encoding::percent_decode_str;

/// Whole-string glob match: `**` matches any run of characters, `*` any run without
/// `/`, everything else itself. Linear two-pointer matching, no backtracking blow-up.
///
/// ```
/// use starfish_server::internals::path_glob_match;
/// assert!(path_glob_match("users/*/notes", "users/abc/notes"));
/// assert!(!path_glob_match("users/*", "users/abc/notes"));
/// assert!(path_glob_match("users/**", "users/abc/notes"));
/// ```
pub fn path_glob_match(glob: &str, target: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Lit(char),
        Star,
        DoubleStar,
    }
    let g: Vec<char> = glob.chars().collect();
    let mut toks = Vec::with_capacity(g.len());
    let mut i = 0;
    while i < g.len() {
        if g[i] == '*' && g.get(i + 1) == Some(&'*') {
            toks.push(Tok::DoubleStar);
            i += 2;
        } else if g[i] == '*' {
            toks.push(Tok::Star);
            i += 1;
        } else {
            toks.push(Tok::Lit(g[i]));
            i += 1;
        }
    }
    let t: Vec<char> = target.chars().collect();
    let (mut si, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, Tok, usize)> = None; // (token index, kind, target index)
    while si < t.len() {
        match toks.get(ti) {
            Some(Tok::Lit(c)) if *c == t[si] => {
                si += 1;
                ti += 1;
            }
            Some(tok @ (Tok::Star | Tok::DoubleStar)) => {
                star = Some((ti, *tok, si));
                ti += 1;
            }
            _ => match star.as_mut() {
                Some((star_ti, kind, start)) => {
                    if *kind == Tok::Star && t[*start] == '/' {
                        return false;
                    }
                    *start += 1;
                    si = *start;
                    ti = *star_ti + 1;
                }
                None => return false,
            },
        }
    }
    while matches!(toks.get(ti), Some(Tok::Star | Tok::DoubleStar)) {
        ti += 1;
    }
    ti == toks.len()
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

    #[test]
    fn hostile_globs_stay_linear() {
        let glob = "*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let target = "a".repeat(5000);
        assert!(!path_glob_match(glob, &target));
    }
}
