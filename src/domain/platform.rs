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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_platforms_parse_by_name() {
        assert_eq!(Platform::parse_chat("slack"), Some(Platform::Slack));
        assert_eq!(Platform::parse_chat("alerts"), None);
        assert_eq!(Platform::parse_chat("terminal"), Some(Platform::Terminal));
    }
}
