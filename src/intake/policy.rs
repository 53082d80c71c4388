//! Rules: who may run what, where, and when. Pure functions over facts the caller fetched,
//! so every rule is unit-tested without a database. Each refusal names the rule and what
//! would be accepted.

use std::collections::BTreeSet;

use crate::config::Config;

/// Who is asking, as the platforms identify people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The local operator at a terminal (`deckhand run`).
    Operator,
    Slack {
        /// The user qualified by their team, `T…:U…` (the Enterprise Grid organisation
        /// `E…` for its workspaces), so the same user id in two workspaces is two people.
        /// Callers without a team give the bare `U…`.
        user: String,
    },
    Discord {
        user: String,
        roles: Vec<String>,
    },
    /// Continuous delivery (`[environments.X] auto_deploy`): the config that names the
    /// branch is the authority, so the deploy command's role is not asked for; every
    /// other rule (locks, staging-first, approvals, the CI gate) applies.
    AutoDeploy,
}

/// Roles a person holds. Everyone holds `everyone`.
pub fn roles_of(config: &Config, who: &Identity) -> BTreeSet<String> {
    let mut out = BTreeSet::from(["everyone".to_owned()]);
    for (name, g) in &config.roles {
        let holds = match who {
            Identity::Operator => g.operator,
            Identity::Slack { user } => g.slack_users.iter().any(|u| slack_user_is(u, user)),
            Identity::Discord { user, roles } => {
                g.discord_users.iter().any(|u| u == user)
                    || g.discord_roles.iter().any(|r| roles.contains(r))
            }
            Identity::AutoDeploy => false,
        };
        if holds {
            out.insert(name.clone());
        }
    }
    out
}

/// Whether the `[roles.*] slack_users` entry `entry` names `user` (`T…:U…` or bare): `T…:U…`
/// only that user of that team, a bare `U…` that user in any team that reaches intake (only
/// allowed teams do when `[slack] allowed_teams` is set).
fn slack_user_is(entry: &str, user: &str) -> bool {
    if entry.contains(':') {
        entry == user
    } else {
        user.rsplit(':').next() == Some(entry)
    }
}

/// May someone with `held` run `command` on `env`, which needs `required`? `None` as the
/// requirement means the command names no role for this environment: denied, so that a new
/// environment is closed until someone opens it.
pub fn check_role(
    command: &str,
    env: Option<&str>,
    required: Option<&str>,
    held: &BTreeSet<String>,
) -> Result<(), String> {
    let place = env.map(|e| format!(" on {e}")).unwrap_or_default();
    match required {
        None => Err(format!(
            "refused by role rule: {command}{place} is not open to anyone (the command file names no role for this environment); an admin can add one under [roles] in commands/{command}.toml"
        )),
        Some(r) if held.contains(r) || held.contains("admin") => Ok(()),
        Some(r) => Err(format!(
            "refused by role rule: {command}{place} needs the {r:?} role; you hold {}",
            held.iter().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}

/// Facts about the environment a version must be proven on first.
#[derive(Debug, Clone, Default)]
pub struct PromotionFacts {
    pub source: String,
    /// The version was deployed there and its health check passed.
    pub verified_on_source: bool,
    /// What the source runs now, if anything.
    pub source_current: Option<String>,
}

/// An emergency override needs a reason and the admin role.
pub fn check_emergency(reason: &str, held: &BTreeSet<String>) -> Result<(), String> {
    if reason.trim().is_empty() {
        return Err("refused by emergency rule: --emergency needs a reason".into());
    }
    if !held.contains("admin") {
        return Err(format!(
            "refused by emergency rule: an emergency deploy needs the \"admin\" role; you hold {}",
            held.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// Staging first: a version reaches a promoted environment only after it was verified on
/// the source — unless an admin declares an emergency with a reason.
pub fn check_promotion(
    version: &str,
    facts: &PromotionFacts,
    emergency: Option<&str>,
    held: &BTreeSet<String>,
) -> Result<Promotion, String> {
    if let Some(reason) = emergency {
        check_emergency(reason, held)?;
        return Ok(Promotion::Emergency);
    }
    if facts.verified_on_source {
        return Ok(Promotion::Verified);
    }
    let now = match &facts.source_current {
        Some(v) => format!("{} runs {v}", facts.source),
        None => format!("nothing has been deployed to {}", facts.source),
    };
    Err(format!(
        "refused by staging-first rule: {version} has not been verified on {}; {now}. Deploy {version} to {} first, or, in an emergency, an admin can add --emergency \"reason\"",
        facts.source, facts.source
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promotion {
    Verified,
    Emergency,
}

/// A lock on an environment, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockFacts {
    pub locked_by: String,
    pub reason: String,
    pub locked_at: String,
}

pub fn check_lock(env: &str, lock: Option<&LockFacts>) -> Result<(), String> {
    match lock {
        None => Ok(()),
        Some(l) => Err(format!(
            "refused by lock rule: {env} is locked by {} since {}: {:?}. Ask them, or run `unlock {env}` once it is safe",
            l.locked_by, l.locked_at, l.reason
        )),
    }
}

/// A repeat approval (a double click, or five) is answered as one.
pub fn check_not_yet_approved(
    job_id: i64,
    approver: &str,
    already: &[String],
) -> Result<(), String> {
    if already
        .iter()
        .any(|a| crate::domain::platform::same_actor(a, approver))
    {
        return Err(already_approved(job_id));
    }
    Ok(())
}

pub fn already_approved(job_id: i64) -> String {
    format!("you have already approved job {job_id}")
}

/// Two-person rule: the requester never approves their own job, and each approver counts
/// once.
pub fn check_approver(
    job_id: i64,
    requester: &str,
    approver: &str,
    already: &[String],
    held: &BTreeSet<String>,
    approver_role: &str,
) -> Result<(), String> {
    if crate::domain::platform::same_actor(requester, approver) {
        return Err(format!(
            "refused by two-person rule: you requested job {job_id}, so someone else must approve it"
        ));
    }
    check_not_yet_approved(job_id, approver, already)?;
    if !held.contains(approver_role) && !held.contains("admin") {
        return Err(format!(
            "refused by approval rule: approving job {job_id} needs the {approver_role:?} role; you hold {}",
            held.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EMBEDDED_CONFIG, parse_config};

    fn held(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn roles_come_from_the_config() {
        let text = format!(
            "{EMBEDDED_CONFIG}\n[roles.viewer]\nslack_users = [\"U1\"]\ndiscord_roles = [\"R9\"]\n"
        );
        let c = parse_config(
            "x",
            &text,
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        assert!(roles_of(&c, &Identity::Operator).contains("deployer"));
        let s = roles_of(&c, &Identity::Slack { user: "U1".into() });
        assert_eq!(s, held(&["everyone", "viewer"]));
        let d = roles_of(
            &c,
            &Identity::Discord {
                user: "D1".into(),
                roles: vec!["R9".into()],
            },
        );
        assert!(d.contains("viewer"));
        assert_eq!(
            roles_of(&c, &Identity::Slack { user: "U2".into() }),
            held(&["everyone"])
        );
    }

    #[test]
    fn slack_users_bare_or_with_their_team() {
        let text =
            format!("{EMBEDDED_CONFIG}\n[roles.viewer]\nslack_users = [\"U1\", \"T1:U2\"]\n");
        let c = parse_config(
            "x",
            &text,
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        let has = |u: &str| roles_of(&c, &Identity::Slack { user: u.into() }).contains("viewer");
        assert!(has("T1:U1") && has("T2:U1") && has("U1"), "bare: any team");
        assert!(has("T1:U2"));
        assert!(!has("T2:U2"), "qualified: that team only");
        assert!(!has("U2"), "no team: not the qualified entry");
        assert!(!has("T1:U3"));
    }

    #[test]
    fn role_refusals_name_the_role() {
        assert!(
            check_role(
                "deploy",
                Some("staging"),
                Some("everyone"),
                &held(&["everyone"])
            )
            .is_ok()
        );
        let e = check_role(
            "deploy",
            Some("production"),
            Some("deployer"),
            &held(&["everyone"]),
        )
        .unwrap_err();
        assert!(e.contains("needs the \"deployer\" role"), "{e}");
        assert!(
            check_role(
                "deploy",
                Some("production"),
                Some("deployer"),
                &held(&["admin"])
            )
            .is_ok()
        );
        let e = check_role("deploy", Some("qa"), None, &held(&["admin"])).unwrap_err();
        assert!(e.contains("not open to anyone"), "{e}");
    }

    #[test]
    fn promotion_needs_verification_or_an_admin_emergency() {
        let f = PromotionFacts {
            source: "staging".into(),
            verified_on_source: false,
            source_current: Some("9f8e7d6".into()),
        };
        let e = check_promotion("abc1234", &f, None, &held(&["deployer"])).unwrap_err();
        assert!(
            e.contains("abc1234 has not been verified on staging; staging runs 9f8e7d6"),
            "{e}"
        );
        let e = check_promotion("abc1234", &f, Some("fire"), &held(&["deployer"])).unwrap_err();
        assert!(e.contains("needs the \"admin\" role"), "{e}");
        let e = check_promotion("abc1234", &f, Some(" "), &held(&["admin"])).unwrap_err();
        assert!(e.contains("needs a reason"), "{e}");
        assert_eq!(
            check_promotion("abc1234", &f, Some("INC-1"), &held(&["admin"])),
            Ok(Promotion::Emergency)
        );
        let ok = PromotionFacts {
            verified_on_source: true,
            ..f
        };
        assert_eq!(
            check_promotion("abc1234", &ok, None, &held(&[])),
            Ok(Promotion::Verified)
        );
    }

    #[test]
    fn locks_and_approvers() {
        let l = LockFacts {
            locked_by: "slack:U1".into(),
            reason: "db maintenance".into(),
            locked_at: "2026-11-25 10:00 UTC".into(),
        };
        let e = check_lock("production", Some(&l)).unwrap_err();
        assert!(
            e.contains("locked by slack:U1") && e.contains("db maintenance"),
            "{e}"
        );
        assert!(check_lock("production", None).is_ok());
        let h = held(&["deployer"]);
        assert!(
            check_approver(1, "a", "a", &[], &h, "deployer")
                .unwrap_err()
                .contains("someone else")
        );
        assert!(check_approver(1, "a", "b", &["b".into()], &h, "deployer").is_err());
        assert!(check_approver(1, "a", "b", &[], &held(&["everyone"]), "deployer").is_err());
        assert!(check_approver(1, "a", "b", &[], &h, "deployer").is_ok());
    }
}
