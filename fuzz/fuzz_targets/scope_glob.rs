//! `scope.paths` globs, differentially: `path_glob_match` and `match_scope_path`
//! against a naive recursive backtracking reference written here from the
//! definition (§3.9): `**` matches any run of characters, `*` any run without `/`,
//! anything else itself; a scope admits a path when an allow entry matches and no
//! `!deny` entry matches the path or a parent of it.
//!
//! Input: lines. The first is the path (or target); the others are scope entries.
//! Every entry is also matched alone against the first line. The reference is
//! exponential, so it only runs on short globs with few stars.
#![no_main]

use libfuzzer_sys::fuzz_target;
use starfish_protocol::scope::{canonical_scope_path, match_scope_path, path_glob_match};

/// Globs and targets longer than these (in characters), or globs with more star
/// tokens, are only run through the real matcher.
const MAX_GLOB: usize = 16;
const MAX_TARGET: usize = 24;
const MAX_STAR_TOKENS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let target = lines.next().unwrap_or_default();
    let scope: Vec<String> = lines.map(str::to_owned).collect();

    let t: Vec<char> = target.chars().collect();
    for glob in &scope {
        let ours = path_glob_match(glob, target);
        if small(glob, &t) {
            let g: Vec<char> = glob.chars().collect();
            assert_eq!(ours, reference_glob(&g, &t), "glob {glob:?} on {target:?}");
        }
    }

    let ours = match_scope_path(target, Some(&scope));
    let canonical = canonical_scope_path(target);
    let c: Vec<char> = canonical.chars().collect();
    let all_small = scope
        .iter()
        .all(|g| small(g, &c) && small(&format!("{g}/**"), &c));
    if all_small {
        assert_eq!(
            ours,
            reference_scope(&canonical, &scope),
            "{target:?} in {scope:?}"
        );
    }
    // No scope, or an empty one, restricts nothing.
    assert!(match_scope_path(target, None));
    assert!(match_scope_path(target, Some(&[])));
});

fn small(glob: &str, target: &[char]) -> bool {
    // Each `**` or `*` token is one level of backtracking: a run of n stars is
    // ceil(n / 2) of them.
    let star_tokens: usize = glob
        .split(|c| c != '*')
        .map(|run| run.len().div_ceil(2))
        .sum();
    glob.chars().count() <= MAX_GLOB + 3
        && target.len() <= MAX_TARGET
        && star_tokens <= MAX_STAR_TOKENS
}

/// The definition, by backtracking.
fn reference_glob(glob: &[char], target: &[char]) -> bool {
    match glob {
        [] => target.is_empty(),
        ['*', '*', rest @ ..] => (0..=target.len()).any(|k| reference_glob(rest, &target[k..])),
        ['*', rest @ ..] => (0..=target.len())
            .take_while(|&k| !target[..k].contains(&'/'))
            .any(|k| reference_glob(rest, &target[k..])),
        [c, rest @ ..] => target.first() == Some(c) && reference_glob(rest, &target[1..]),
    }
}

/// `matchScopePath` on a canonical path: some allow entry matches, and no deny entry
/// matches the path or one of its parents.
fn reference_scope(canonical: &str, scope: &[String]) -> bool {
    if scope.is_empty() {
        return true;
    }
    let path: Vec<char> = canonical.chars().collect();
    let matches = |glob: &str| reference_glob(&glob.chars().collect::<Vec<_>>(), &path);
    let allowed = scope
        .iter()
        .filter(|e| !e.starts_with('!'))
        .any(|e| matches(e));
    let denied = scope.iter().filter_map(|e| e.strip_prefix('!')).any(|d| {
        matches(d) || parents(canonical).any(|p| reference_glob(&d.chars().collect::<Vec<_>>(), &p))
    });
    allowed && !denied
}

/// Every proper prefix of `path` that ends just before a `/`, as characters.
fn parents(path: &str) -> impl Iterator<Item = Vec<char>> + '_ {
    path.char_indices()
        .filter(|(_, c)| *c == '/')
        .map(move |(i, _)| path[..i].chars().collect())
}
