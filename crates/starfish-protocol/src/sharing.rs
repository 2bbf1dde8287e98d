//! The sharing extension's rules for `member` and `audience` certificates (the
//! reference's `starfish-sharing` package: `assertMemberCapShape`,
//! `assertAudienceCapShape`), checked by a server before it accepts one and by a
//! client before it mints one.
//!
//! A member certificate lets another user (its subject) act in one collection of the
//! issuer's; an audience certificate is a public link anyone (or anyone in its `aud`
//! list) may redeem with a key of their own. Both must:
//!
//! - name exactly one collection, never `*`;
//! - carry no scope path inside the issuer's own `users/<issUserId>/` namespace;
//! - deny `<collection>/_members` wherever an allow reaches it (the member directory
//!   is the owner's alone), and, when they grant `write`, deny `<collection>/_keyring`
//!   wherever an allow reaches it. A certificate without `scope.paths` is treated as
//!   allowing `**`, so it fails these rules.
//!
//! A member certificate also names its subject's user id, which is not the
//! issuer's.

use crate::capcert::{CapCert, CapKind, CapOp};
use crate::scope::path_glob_match;

/// Which kind's codes a barrier failure is reported with.
struct Codes {
    private_path: &'static str,
    members_not_denied: &'static str,
    keyring_not_denied: &'static str,
}

/// Checks a `member` certificate's sharing rules; other kinds pass.
///
/// # Errors
/// The reference's code: `member-missing-sub-userid`, `member-self`,
/// `member-wildcard-collections`, `member-multi-collection`, `member-private-path`,
/// `member-members-not-denied` or `member-keyring-not-denied`.
pub fn check_member_cap(cert: &CapCert) -> Result<(), &'static str> {
    if cert.kind != CapKind::Member {
        return Ok(());
    }
    let Some(sub_user_id) = &cert.sub_user_id else {
        return Err("member-missing-sub-userid");
    };
    if *sub_user_id == cert.iss_user_id {
        return Err("member-self");
    }
    one_collection(
        cert,
        "member-wildcard-collections",
        "member-multi-collection",
    )?;
    barriers(
        cert,
        &Codes {
            private_path: "member-private-path",
            members_not_denied: "member-members-not-denied",
            keyring_not_denied: "member-keyring-not-denied",
        },
    )
}

/// Checks an `audience` certificate's sharing rules; other kinds pass.
///
/// # Errors
/// The reference's code: `audience-wildcard-collections`,
/// `audience-multi-collection`, `audience-private-path`,
/// `audience-members-not-denied` or `audience-keyring-not-denied`.
pub fn check_audience_cap(cert: &CapCert) -> Result<(), &'static str> {
    if cert.kind != CapKind::Audience {
        return Ok(());
    }
    one_collection(
        cert,
        "audience-wildcard-collections",
        "audience-multi-collection",
    )?;
    barriers(
        cert,
        &Codes {
            private_path: "audience-private-path",
            members_not_denied: "audience-members-not-denied",
            keyring_not_denied: "audience-keyring-not-denied",
        },
    )
}

fn one_collection(
    cert: &CapCert,
    wildcard: &'static str,
    multi: &'static str,
) -> Result<(), &'static str> {
    if cert.collections.iter().any(|c| c == "*") {
        return Err(wildcard);
    }
    if cert.collections.len() != 1 {
        return Err(multi);
    }
    Ok(())
}

/// The owner-namespace barriers shared by both kinds. `{identity}` reads as the
/// issuer's user id here: stricter than the subject a server substitutes, so it can
/// never widen what a request may reach.
fn barriers(cert: &CapCert, codes: &Codes) -> Result<(), &'static str> {
    let issuer = cert.iss_user_id.as_str();
    let own = format!("users/{issuer}");
    let own_prefix = format!("users/{issuer}/");
    let paths = cert.paths.as_deref().unwrap_or_default();
    let resolved = |entry: &str| entry.replace("{identity}", issuer);
    if paths
        .iter()
        .map(|p| resolved(p))
        .any(|p| p == own || p.starts_with(&own_prefix))
    {
        return Err(codes.private_path);
    }
    let allows: Vec<String> = paths
        .iter()
        .filter(|p| !p.starts_with('!'))
        .map(|p| resolved(p))
        .collect();
    let denies: Vec<String> = paths
        .iter()
        .filter_map(|p| p.strip_prefix('!'))
        .map(resolved)
        .collect();
    // No paths: the certificate reaches everything, these siblings included.
    let unrestricted = paths.is_empty();
    let reached_undenied = |target: &str| {
        let allowed = unrestricted || allows.iter().any(|a| path_glob_match(a, target));
        allowed && (unrestricted || !denies.iter().any(|d| path_glob_match(d, target)))
    };
    for collection in &cert.collections {
        if reached_undenied(&format!("{collection}/_members")) {
            return Err(codes.members_not_denied);
        }
    }
    if cert.ops.contains(&CapOp::Write) {
        for collection in &cert.collections {
            if reached_undenied(&format!("{collection}/_keyring")) {
                return Err(codes.keyring_not_denied);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capcert::user_id_from_pub_hex;
    use serde_json::{Value, json};

    const ISS: &str = "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737";
    const SUB: &str = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

    fn cert(kind: &str, ops: &[&str], collections: &[&str], paths: Option<&[&str]>) -> CapCert {
        let mut scope = json!({"ops": ops, "collections": collections});
        if let Some(paths) = paths {
            scope["paths"] = json!(paths);
        }
        let mut value = json!({
            "v": 1, "kind": kind, "iss": ISS,
            "issUserId": user_id_from_pub_hex(ISS),
            "scope": scope, "nbf": 1, "exp": 2, "nonce": "AQEBAQEBAQEBAQEBAQEBAQ==", "sig": "",
        });
        if kind == "member" {
            value["sub"] = json!(SUB);
            value["subKem"] = json!(SUB);
            value["subUserId"] = json!(user_id_from_pub_hex(SUB));
        }
        CapCert::parse(&value).unwrap()
    }

    fn issuer_path() -> String {
        format!("users/{}/notes/**", user_id_from_pub_hex(ISS).unwrap())
    }

    #[test]
    fn the_presets_of_the_sharing_package_pass() {
        let read_only = ["spaces/**", "!spaces/_members"];
        let writer = ["spaces/**", "!spaces/_keyring", "!spaces/_members"];
        for kind in ["member", "audience"] {
            let c = cert(kind, &["read", "list"], &["spaces"], Some(&read_only));
            assert_eq!(check_member_cap(&c).and(check_audience_cap(&c)), Ok(()));
            let c = cert(kind, &["read", "list", "write"], &["spaces"], Some(&writer));
            assert_eq!(check_member_cap(&c).and(check_audience_cap(&c)), Ok(()));
        }
    }

    #[test]
    fn every_rule_refuses_with_the_references_code() {
        let admin = ["spaces/**"];
        let issuer = issuer_path();
        type Case<'a> = (&'a [&'a str], &'a [&'a str], Option<&'a [&'a str]>, &'a str);
        let cases: [Case; 7] = [
            (
                &["read"],
                &["*"],
                Some(&["spaces/**", "!spaces/_members"]),
                "wildcard-collections",
            ),
            (
                &["read"],
                &["a", "b"],
                Some(&["a/**", "!a/_members"]),
                "multi-collection",
            ),
            (&["read"], &["spaces"], None, "members-not-denied"),
            (&["read"], &["spaces"], Some(&admin), "members-not-denied"),
            (
                &["read", "write"],
                &["spaces"],
                Some(&["spaces/**", "!spaces/_members"]),
                "keyring-not-denied",
            ),
            (
                &["read"],
                &["spaces"],
                Some(&["users/{identity}/x", "!spaces/_members"]),
                "private-path",
            ),
            (
                &["write"],
                &["notes"],
                Some(&[issuer.as_str()]),
                "private-path",
            ),
        ];
        for (ops, collections, paths, code) in cases {
            let member = cert("member", ops, collections, paths);
            let refused = check_member_cap(&member).unwrap_err();
            assert_eq!(refused, format!("member-{code}"), "{paths:?}");
            let audience = cert("audience", ops, collections, paths);
            let refused = check_audience_cap(&audience).unwrap_err();
            assert_eq!(refused, format!("audience-{code}"), "{paths:?}");
        }
    }

    #[test]
    fn a_member_cap_names_a_subject_other_than_its_issuer() {
        let mut value: Value = json!({
            "v": 1, "kind": "member", "iss": ISS, "issUserId": user_id_from_pub_hex(ISS),
            "sub": ISS, "subKem": ISS, "subUserId": user_id_from_pub_hex(ISS),
            "scope": {"ops": ["read"], "collections": ["spaces"], "paths": ["spaces/**", "!spaces/_members"]},
            "nbf": 1, "exp": 2, "nonce": "AQEBAQEBAQEBAQEBAQEBAQ==", "sig": "",
        });
        assert_eq!(
            check_member_cap(&CapCert::parse(&value).unwrap()),
            Err("member-self")
        );
        value.as_object_mut().unwrap().remove("subUserId");
        value["sub"] = json!(SUB);
        value["subKem"] = json!(SUB);
        assert_eq!(
            check_member_cap(&CapCert::parse(&value).unwrap()),
            Err("member-missing-sub-userid")
        );
    }

    #[test]
    fn other_kinds_pass_through() {
        let device = CapCert::parse(&json!({
            "v": 1, "kind": "device", "iss": ISS, "issUserId": user_id_from_pub_hex(ISS),
            "sub": ISS, "subKem": ISS,
            "scope": {"ops": ["read"], "collections": ["*"]},
            "nbf": 1, "exp": 2, "nonce": "AQEBAQEBAQEBAQEBAQEBAQ==", "sig": "",
        }))
        .unwrap();
        assert_eq!(check_member_cap(&device), Ok(()));
        assert_eq!(check_audience_cap(&device), Ok(()));
    }
}
