//! Where a signed Slack request comes from, whose it is, and whether this Deckhand serves
//! that place (`[slack] allowed_teams`, `app_id`).
//!
//! A slash command names the workspace it was typed in (`team_id`, with `enterprise_id` on
//! Enterprise Grid). A click names the workspace (`team.id`) and the clicker's own team
//! (`user.team_id`): in a Slack Connect channel that is the connected organisation's, and
//! on Enterprise Grid the organisation (`E…`). A request is taken when its workspace (or
//! its organisation) is allowed and, for a click, the clicker's team is allowed too (or is
//! that organisation): a Slack Connect channel shares messages, not permissions.

use super::payload::{BlockActions, SlashCommand};
use crate::config::SlackConfig;

/// The facts of one request, empty fields as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub user: String,
    pub workspace: Option<String>,
    pub enterprise: Option<String>,
    /// The clicker's own team (clicks only).
    pub user_team: Option<String>,
    pub app: Option<String>,
}

fn present(s: Option<&String>) -> Option<String> {
    s.filter(|s| !s.is_empty()).cloned()
}

impl Origin {
    pub fn of_command(c: &SlashCommand) -> Origin {
        Origin {
            user: c.user_id.clone(),
            workspace: present(c.team_id.as_ref()),
            enterprise: present(c.enterprise_id.as_ref()),
            user_team: None,
            app: present(c.api_app_id.as_ref()),
        }
    }

    pub fn of_click(p: &BlockActions) -> Origin {
        Origin {
            user: p.user.id.clone(),
            workspace: present(p.team.as_ref().map(|t| &t.id)),
            enterprise: present(p.team.as_ref().and_then(|t| t.enterprise_id.as_ref()))
                .or_else(|| present(p.enterprise.as_ref().map(|e| &e.id))),
            user_team: present(p.user.team_id.as_ref()),
            app: present(p.api_app_id.as_ref()),
        }
    }

    /// The team that makes the user one person: their own team on a click, the
    /// organisation or else the workspace on a command (a Grid user's clicks name the
    /// organisation, so both agree).
    fn team(&self) -> Option<&str> {
        self.user_team
            .as_deref()
            .or(self.enterprise.as_deref())
            .or(self.workspace.as_deref())
    }

    /// The user qualified by their team, `T…:U…` (bare `U…` without a team).
    pub fn qualified_user(&self) -> String {
        match self.team() {
            Some(t) => format!("{t}:{}", self.user),
            None => self.user.clone(),
        }
    }

    /// The workspace whose budget the request spends.
    pub fn budget_key(&self) -> Option<&str> {
        self.workspace.as_deref().or(self.team())
    }

    /// `Err(refusal)` when this Deckhand does not serve where the request comes from.
    pub fn check(&self, cfg: &SlackConfig) -> Result<(), String> {
        if let Some(want) = &cfg.app_id
            && self.app.as_ref() != Some(want)
        {
            return Err(format!(
                "refused: this request was sent to another Slack app ({}), not to this Deckhand; nothing was done",
                self.app.as_deref().unwrap_or("none named")
            ));
        }
        let allowed = &cfg.allowed_teams;
        if allowed.is_empty() {
            return Ok(());
        }
        let listed = |t: &Option<String>| t.as_ref().is_some_and(|t| allowed.contains(t));
        if !listed(&self.workspace) && !listed(&self.enterprise) {
            return Err(format!(
                "refused: this Deckhand does not serve the Slack workspace {}; nothing was done",
                self.workspace.as_deref().unwrap_or("(none named)")
            ));
        }
        if let Some(t) = &self.user_team
            && !allowed.contains(t)
            && self.enterprise.as_ref() != Some(t)
        {
            return Err(format!(
                "refused: you belong to the Slack team {t}, which this Deckhand does not serve (a shared channel shares messages, not permissions); nothing was done"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(teams: &[&str], app: Option<&str>) -> SlackConfig {
        SlackConfig {
            allowed_teams: teams.iter().map(|t| t.to_string()).collect(),
            app_id: app.map(str::to_owned),
        }
    }

    fn o(workspace: &str, enterprise: &str, user_team: &str, app: &str) -> Origin {
        let s = |v: &str| (!v.is_empty()).then(|| v.to_owned());
        Origin {
            user: "U1".into(),
            workspace: s(workspace),
            enterprise: s(enterprise),
            user_team: s(user_team),
            app: s(app),
        }
    }

    #[test]
    fn only_listed_workspaces_and_their_people() {
        let c = cfg(&["T0TEAM"], None);
        assert!(o("T0TEAM", "", "", "").check(&c).is_ok());
        assert!(o("T0TEAM", "", "T0TEAM", "").check(&c).is_ok());
        let e = o("T0EVIL", "", "", "").check(&c).unwrap_err();
        assert!(
            e.contains("does not serve the Slack workspace T0EVIL"),
            "{e}"
        );
        assert!(o("", "", "", "").check(&c).is_err(), "no workspace named");
        // Slack Connect: a connected organisation's user clicking in our channel.
        let e = o("T0TEAM", "", "T0OTHER", "").check(&c).unwrap_err();
        assert!(e.contains("you belong to the Slack team T0OTHER"), "{e}");
        // Enterprise Grid: clicks name the organisation as the user's team.
        assert!(o("T0TEAM", "E0ORG", "E0ORG", "").check(&c).is_ok());
        assert!(o("T0TEAM", "E0ORG", "E0ELSE", "").check(&c).is_err());
        // The whole organisation listed: any of its workspaces.
        let grid = cfg(&["E0ORG"], None);
        assert!(o("T0ANY", "E0ORG", "E0ORG", "").check(&grid).is_ok());
        assert!(o("T0ANY", "", "", "").check(&grid).is_err());
        // Unset: anything signed.
        assert!(o("T0EVIL", "", "T9", "").check(&cfg(&[], None)).is_ok());
    }

    #[test]
    fn only_this_app() {
        let c = cfg(&[], Some("A0APP"));
        assert!(o("T1", "", "", "A0APP").check(&c).is_ok());
        let e = o("T1", "", "", "A0OTHER").check(&c).unwrap_err();
        assert!(e.contains("another Slack app (A0OTHER)"), "{e}");
        assert!(o("T1", "", "", "").check(&c).is_err(), "no app named");
    }

    #[test]
    fn a_user_is_qualified_by_their_team() {
        assert_eq!(o("T1", "", "", "").qualified_user(), "T1:U1");
        assert_eq!(o("T1", "", "T2", "").qualified_user(), "T2:U1");
        // A Grid user is the organisation's, typing or clicking.
        assert_eq!(o("T1", "E1", "", "").qualified_user(), "E1:U1");
        assert_eq!(o("T1", "E1", "E1", "").qualified_user(), "E1:U1");
        assert_eq!(o("", "", "", "").qualified_user(), "U1");
        assert_eq!(o("T1", "E1", "E1", "").budget_key(), Some("T1"));
    }
}
