//! The reference's `restrictions`: static allow and deny lists of identities at the
//! server, namespace and collection level. An `allow` list admits only the identities
//! it names (anonymous callers are never listed); a `deny` list refuses the ones it
//! names; deny wins. A restriction with `actions` applies to those actions only.

use super::Action;
use crate::config::{RestrictedAction, Restriction};

fn applies(restriction: &Restriction, action: Action) -> bool {
    restriction.actions.is_empty()
        || restriction.actions.iter().any(|a| {
            matches!(
                (a, action),
                (RestrictedAction::Pull, Action::Pull)
                    | (RestrictedAction::Push, Action::Push)
                    | (RestrictedAction::List, Action::List)
            )
        })
}

/// True when every level lets `identity` perform `action`.
pub(super) fn allow<'a>(
    levels: impl IntoIterator<Item = &'a [Restriction]>,
    identity: Option<&str>,
    action: Action,
) -> bool {
    let listed = |r: &Restriction| identity.is_some_and(|id| r.identities.iter().any(|i| i == id));
    levels
        .into_iter()
        .flatten()
        .filter(|r| applies(r, action))
        .all(|r| listed(r) == r.allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(allow: bool, ids: &[&str], actions: &[RestrictedAction]) -> Restriction {
        Restriction {
            allow,
            identities: ids.iter().map(|s| (*s).to_owned()).collect(),
            actions: actions.to_vec(),
        }
    }

    #[test]
    fn allow_admits_only_listed_and_deny_wins() {
        let allow_alice = [r(true, &["alice"], &[])];
        let deny_alice = [r(false, &["alice"], &[])];
        let deny_bob_push = [r(false, &["bob"], &[RestrictedAction::Push])];
        assert!(allow([&allow_alice[..]], Some("alice"), Action::Pull));
        assert!(!allow([&allow_alice[..]], Some("bob"), Action::Pull));
        assert!(!allow([&allow_alice[..]], None, Action::Pull));
        assert!(!allow(
            [&allow_alice[..], &deny_alice[..]],
            Some("alice"),
            Action::Pull
        ));
        assert!(!allow([&deny_bob_push[..]], Some("bob"), Action::Push));
        assert!(allow([&deny_bob_push[..]], Some("bob"), Action::Pull));
        assert!(allow([&deny_bob_push[..]], None, Action::Push));
        assert!(allow(std::iter::empty(), None, Action::Push));
    }
}
