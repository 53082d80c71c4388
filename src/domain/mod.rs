//! Domain newtypes. Each is made only by a `parse` that can fail with a message a person
//! understands, so the rest of the code never handles an unchecked environment name,
//! version or secret name.

pub mod notice;
pub mod platform;
pub mod state;
pub mod text;
pub mod time;

use std::fmt;

/// Why a value was refused, in words for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn refuse(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// A version to deploy: a git SHA, tag or image tag.
///
/// Strict on purpose: it reaches deploy steps (as `DECKHAND_VERSION`), so it may hold only
/// letters, digits, `.`, `_` and `-`, must start with a letter or digit (never `-`, so it
/// can never be read as an option), and is at most 128 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version(String);

impl Version {
    pub const ACCEPTED: &'static str = "a git SHA, tag or image tag: letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128 characters (e.g. abc1234, v1.4.2)";

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let valid = !s.is_empty()
            && s.len() <= 128
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(refuse(format!(
                "{:?} is not a valid version; expected {}",
                s,
                Self::ACCEPTED
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A name made of lowercase letters, digits, `-` and `_`: environments, roles, commands.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The name of an environment as written in the config (`staging`, `production`).
/// Whether it is *configured* is checked by the catalog against the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if is_slug(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(refuse(format!(
                "{s:?} is not a valid environment name; expected lowercase letters, digits, '-' or '_'"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EnvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of a secret to rotate: `STRIPE_KEY`. Uppercase letters, digits and `_`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.as_bytes()[0].is_ascii_uppercase()
            && s.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(refuse(format!(
                "{s:?} is not a valid secret name; expected uppercase letters, digits and '_', starting with a letter (e.g. STRIPE_KEY)"
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job number as people type it: `42` or `#42`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(pub i64);

impl JobId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let digits = s.strip_prefix('#').unwrap_or(s);
        // Digits only: no sign, no "##42".
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<i64>().ok())
            .flatten()
            .filter(|n| *n > 0)
            .map(Self)
            .ok_or_else(|| {
                refuse(format!(
                    "{s:?} is not a job number; expected e.g. 42 or #42"
                ))
            })
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Is this a valid slug (command, role or environment name)?
pub fn valid_name(s: &str) -> bool {
    is_slug(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_accept_shas_and_tags() {
        for ok in ["abc1234", "v1.4.2", "release-2026_11", "9f8e7d6", "A"] {
            assert!(Version::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn versions_refuse_shell_and_options() {
        for bad in [
            "abc;id", "$(id)", "-rf", "", "a b", "`id`", "a/b", "../x", "a\nb", ".hidden", "v1|x",
        ] {
            let err = Version::parse(bad).unwrap_err();
            assert!(err.0.contains("not a valid version"), "{bad}: {err}");
        }
        assert!(Version::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn env_names_are_slugs() {
        assert!(EnvName::parse("staging").is_ok());
        assert!(EnvName::parse("eu-west_2").is_ok());
        assert!(EnvName::parse("Staging").is_err());
        assert!(EnvName::parse("-x").is_err());
    }

    #[test]
    fn secret_names() {
        assert!(SecretName::parse("STRIPE_KEY").is_ok());
        assert!(SecretName::parse("stripe").is_err());
        assert!(SecretName::parse("A-B").is_err());
    }

    #[test]
    fn job_ids() {
        assert_eq!(JobId::parse("#42").unwrap(), JobId(42));
        assert_eq!(JobId::parse("7").unwrap(), JobId(7));
        assert!(JobId::parse("0").is_err());
        assert!(JobId::parse("x").is_err());
        assert!(JobId::parse("##42").is_err());
        assert!(JobId::parse("+5").is_err());
    }
}
