//! Secrets: the tokens Deckhand holds (from environment variables only, never the file)
//! and how rotate-secret generates new values (`[secrets.NAME]`).

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretSpec {
    pub length: usize,
    pub alphabet: Alphabet,
}

impl Default for SecretSpec {
    fn default() -> Self {
        Self {
            length: 32,
            alphabet: Alphabet::Alnum,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Alphabet {
    /// Letters and digits.
    Alnum,
    /// Lowercase hexadecimal.
    Hex,
    /// Letters, digits, `-` and `_`.
    Base64url,
}

impl Alphabet {
    pub fn chars(self) -> &'static str {
        match self {
            Alphabet::Alnum => "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Alphabet::Hex => "0123456789abcdef",
            Alphabet::Base64url => {
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
        }
    }
}

/// Secrets and endpoints, from the environment only.
#[derive(Clone, Default)]
pub struct Secrets {
    pub slack_signing_secret: Option<SecretString>,
    pub slack_bot_token: Option<SecretString>,
    /// `SLACK_APP_TOKEN` (`xapp-…`, `connections:write`): set → Slack Socket Mode.
    pub slack_app_token: Option<SecretString>,
    pub discord_bot_token: Option<SecretString>,
    pub alert_token: Option<SecretString>,
    /// `DECKHAND_METRICS_TOKEN`: when set, `/metrics` needs it as a bearer token.
    pub metrics_token: Option<SecretString>,
    /// `DECKHAND_UI_TOKEN`: with `[ui] auth = "token"`, what opens the status pages.
    pub ui_token: Option<SecretString>,
    /// `PROMETHEUS_TOKEN`: the bearer token for `[prometheus] url`.
    pub prometheus_token: Option<SecretString>,
    /// `GITHUB_TOKEN`: the token Deckhand asks GitHub's API with.
    pub github_token: Option<SecretString>,
    /// `GITHUB_APP_ID`: a GitHub App's id (or client id), with its private key instead
    /// of a token. Not a secret, but it belongs with the key.
    pub github_app_id: Option<String>,
    /// `GITHUB_APP_PRIVATE_KEY`: the App's private key, as PEM.
    pub github_app_private_key: Option<SecretString>,
    /// `GITHUB_WEBHOOK_SECRET`: set → `POST /github/webhook` takes events signed with it.
    pub github_webhook_secret: Option<SecretString>,
    /// Values of `runner.secret_env`, by variable name.
    pub step_secrets: BTreeMap<String, SecretString>,
    /// Each environment's database URL (from the variable its `database.url_env` names),
    /// by environment name.
    pub database_urls: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |o: &Option<SecretString>| if o.is_some() { "[set]" } else { "[unset]" };
        f.debug_struct("Secrets")
            .field("slack_signing_secret", &set(&self.slack_signing_secret))
            .field("slack_bot_token", &set(&self.slack_bot_token))
            .field("slack_app_token", &set(&self.slack_app_token))
            .field("discord_bot_token", &set(&self.discord_bot_token))
            .field("alert_token", &set(&self.alert_token))
            .field("metrics_token", &set(&self.metrics_token))
            .field("ui_token", &set(&self.ui_token))
            .field("prometheus_token", &set(&self.prometheus_token))
            .field("github_token", &set(&self.github_token))
            .field("github_app_id", &self.github_app_id)
            .field("github_app_private_key", &set(&self.github_app_private_key))
            .field("github_webhook_secret", &set(&self.github_webhook_secret))
            .field(
                "step_secrets",
                &self.step_secrets.keys().collect::<Vec<_>>(),
            )
            .field(
                "database_urls",
                &self.database_urls.keys().collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Secrets {
    /// Every secret value known to the process, for redaction.
    pub fn values(&self) -> Vec<String> {
        let mut out: Vec<String> = [
            &self.slack_signing_secret,
            &self.slack_bot_token,
            &self.slack_app_token,
            &self.discord_bot_token,
            &self.alert_token,
            &self.metrics_token,
            &self.ui_token,
            &self.prometheus_token,
            &self.github_token,
            &self.github_app_private_key,
            &self.github_webhook_secret,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.expose_secret().to_owned())
        .collect();
        if let Some(k) = &self.github_app_private_key {
            out.extend(crate::support::github_app::pem_lines(k.expose_secret()));
        }
        out.extend(
            self.step_secrets
                .values()
                .map(|s| s.expose_secret().to_owned()),
        );
        for url in self.database_urls.values() {
            let url = url.expose_secret();
            out.push(url.to_owned());
            // The password alone, as a tool may print it (decoded, or as written).
            if let Ok(t) = crate::config::database::PgTarget::parse(url)
                && let Some(p) = t.password
            {
                out.push(p);
            }
            if let Ok(u) = url::Url::parse(url)
                && let Some(p) = u.password()
            {
                out.push(p.to_owned());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }
}
