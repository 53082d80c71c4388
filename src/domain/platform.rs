//! Where commands come from and notices go.

use std::fmt;

/// A platform. Stored as text on jobs, notices and audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Platform {
    /// `deckhand run` and the server's own stdout.
    Terminal,
    Slack,
    Discord,
    /// Alert webhooks: a source of incidents in the audit log; nothing is delivered there.
    Alerts,
}

impl Platform {
    /// The platforms notices can be delivered to, as config keys accept them.
    pub const CHAT: [Platform; 3] = [Platform::Slack, Platform::Discord, Platform::Terminal];

    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Terminal => "terminal",
            Platform::Slack => "slack",
            Platform::Discord => "discord",
            Platform::Alerts => "alerts",
        }
    }

    /// A chat platform by its config name (`slack`, `discord`, `terminal`).
    pub fn parse_chat(s: &str) -> Option<Platform> {
        Platform::CHAT.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether two actor strings (`slack:T…:U…`, `discord:…`, `terminal:…`) name the same
/// person. A Slack actor written before workspace binding names only the user
/// (`slack:U…`); it is taken to be that user in whichever team asks now (only allowed teams
/// get this far), so a lock taken or a job requested before the upgrade still belongs to its
/// holder, and the two-person rule still sees them as one person.
pub fn same_actor(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    let slack_user = |s: &str| {
        let rest = s.strip_prefix("slack:")?;
        Some(match rest.split_once(':') {
            Some((_, user)) => (true, user.to_owned()),
            None => (false, rest.to_owned()),
        })
    };
    match (slack_user(a), slack_user(b)) {
        (Some((qa, ua)), Some((qb, ub))) => ua == ub && !(qa && qb),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_compare_with_their_team_and_old_rows_without_one() {
        assert!(same_actor("slack:T1:U1", "slack:T1:U1"));
        assert!(
            !same_actor("slack:T1:U1", "slack:T2:U1"),
            "two teams, two people"
        );
        assert!(!same_actor("slack:T1:U1", "slack:T1:U2"));
        assert!(
            same_actor("slack:U1", "slack:T1:U1"),
            "a row from before binding"
        );
        assert!(same_actor("slack:T2:U1", "slack:U1"));
        assert!(!same_actor("slack:U1", "slack:T1:U2"));
        assert!(!same_actor("discord:U1", "slack:T1:U1"));
        assert!(same_actor("discord:1001", "discord:1001"));
        assert!(!same_actor("discord:1001", "discord:1002"));
    }

    #[test]
    fn chat_platforms_parse_by_name() {
        assert_eq!(Platform::parse_chat("slack"), Some(Platform::Slack));
        assert_eq!(Platform::parse_chat("alerts"), None);
        assert_eq!(Platform::parse_chat("terminal"), Some(Platform::Terminal));
    }
}
