//! What a deploy changes: the commits between the running version and the new one
//! (`GET /repos/{o}/{r}/compare/{base}...{head}`), as report fields short enough for
//! Slack's and Discord's field limits. Commit titles are user text: they go out as field
//! values, which every renderer escapes like other user text.

use serde_json::Value;

use crate::support::github::{GhError, GitHub};

/// Titles listed at most; the rest are counted.
const MAX_TITLES: usize = 10;
/// Characters of titles at most, before escaping. Discord's escaping can double them, and
/// a field value holds 1,024.
const TITLES_BUDGET: usize = 480;
/// Characters of one title at most (its `(#123)` is kept).
const MAX_TITLE: usize = 72;

/// The commits `head` has that `base` lacks, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub ahead_by: u64,
    pub behind_by: u64,
    /// First lines of the commit messages, newest first (GitHub lists at most 250).
    pub titles: Vec<String>,
    pub html_url: String,
}

impl GitHub<'_> {
    pub async fn compare(&self, repo: &str, base: &str, head: &str) -> Result<Comparison, GhError> {
        let v = self
            .get(&format!(
                "/repos/{repo}/compare/{}...{}?per_page=100",
                crate::support::github::encode(base),
                crate::support::github::encode(head)
            ))
            .await?;
        Ok(parse(&v))
    }
}

pub fn parse(v: &Value) -> Comparison {
    let titles = v["commits"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .map(|c| title_line(c["commit"]["message"].as_str().unwrap_or_default()))
        .collect();
    Comparison {
        ahead_by: v["ahead_by"].as_u64().unwrap_or(0),
        behind_by: v["behind_by"].as_u64().unwrap_or(0),
        titles,
        html_url: v["html_url"].as_str().unwrap_or_default().to_owned(),
    }
}

/// A commit message's first line, without control characters or bidirectional
/// overrides, at most [`MAX_TITLE`] characters; a trailing `(#123)` survives the cut.
pub fn title_line(message: &str) -> String {
    let first: String = message
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
        })
        .collect();
    let first = first.trim();
    if first.chars().count() <= MAX_TITLE {
        return first.to_owned();
    }
    let pr = pr_suffix(first).unwrap_or("");
    let keep = MAX_TITLE - 1 - pr.chars().count();
    let head: String = first.chars().take(keep).collect();
    format!("{}…{pr}", head.trim_end())
}

/// ` (#123)` at the end of a title, as GitHub's squash merges write it.
fn pr_suffix(t: &str) -> Option<&str> {
    let open = t.rfind(" (#")?;
    let tail = &t[open..];
    let digits = tail.strip_prefix(" (#")?.strip_suffix(')')?;
    (!digits.is_empty() && digits.len() <= 9 && digits.chars().all(|c| c.is_ascii_digit()))
        .then_some(tail)
}

/// A commit for people: its first 7 digits when it is a SHA, else the ref, shortened.
pub fn short(r: &str) -> String {
    if r.len() == 40 && r.chars().all(|c| c.is_ascii_hexdigit()) {
        r[..7].to_owned()
    } else {
        crate::domain::text::shorten(r)
    }
}

/// The report's "Changes" field (and "Compare", the link): from the running version
/// `base` (`None`: nothing deployed there yet) to the new one, or why it is not known.
pub fn fields(base: Option<&str>, compared: Result<Comparison, GhError>) -> Vec<(String, String)> {
    let Some(base) = base else {
        return vec![(
            "Changes".into(),
            "no earlier version here to compare with".into(),
        )];
    };
    let b = short(base);
    let c = match compared {
        Ok(c) => c,
        Err(e) => {
            let why = match e {
                GhError::NotFound => "GitHub does not know it".to_owned(),
                e @ GhError::RateLimited(_) => e.to_string(),
                GhError::Failed(m) => m,
            };
            return vec![(
                "Changes".into(),
                format!("not known: cannot compare with {b} ({why})"),
            )];
        }
    };
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    let changes = match (c.ahead_by, c.behind_by) {
        (0, 0) => format!("none: the same commit as the running {b}"),
        (0, n) => format!("goes back {n} commit{} from the running {b}", plural(n)),
        (n, behind) => {
            let mut text = format!("{n} commit{} since {b}", plural(n));
            if behind > 0 {
                text += &format!(" (and {behind} of the running version's left out)");
            }
            text.push(':');
            let mut used = 0;
            let mut shown = 0u64;
            for t in c.titles.iter().take(MAX_TITLES) {
                if used + t.chars().count() > TITLES_BUDGET {
                    break;
                }
                used += t.chars().count();
                shown += 1;
                text += &format!("\n• {t}");
            }
            if n > shown {
                text += &format!("\n… and {} more", n - shown);
            }
            text
        }
    };
    let mut out = vec![("Changes".into(), changes)];
    if !c.html_url.is_empty() {
        out.push(("Compare".into(), c.html_url));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn commits_are_listed_newest_first_and_cut_to_fit() {
        let commits: Vec<Value> = (1..=30)
            .map(|i| json!({"commit": {"message": format!("Change number {i} (#{})\n\nbody", 100 + i)}}))
            .collect();
        let v = json!({"ahead_by": 30, "behind_by": 0, "html_url": "https://github.example/c", "commits": commits});
        let f = fields(Some(&"a".repeat(40)), Ok(parse(&v)));
        assert_eq!(f[0].0, "Changes");
        let t = &f[0].1;
        assert!(
            t.starts_with("30 commits since aaaaaaa:\n• Change number 30 (#130)"),
            "{t}"
        );
        assert!(t.ends_with("… and 20 more"), "{t}");
        assert!(t.chars().count() < 1024 / 2, "{}", t.chars().count());
        assert_eq!(f[1], ("Compare".into(), "https://github.example/c".into()));
    }

    #[test]
    fn long_titles_keep_their_pr_number_and_lose_control_characters() {
        let t = title_line(&format!("{} (#4567)", "word ".repeat(40)));
        assert!(
            t.chars().count() <= MAX_TITLE && t.ends_with("… (#4567)"),
            "{t}"
        );
        assert_eq!(title_line("a\u{1b}[31mb\u{202E}c\nrest"), "a[31mbc");
        assert_eq!(pr_suffix("Fix (#12) later"), None);
    }

    #[test]
    fn nothing_to_compare_or_a_failure_is_said_briefly() {
        assert!(
            fields(None, Err(GhError::NotFound))[0]
                .1
                .contains("no earlier version")
        );
        let f = fields(
            Some("main"),
            Err(GhError::Failed("GitHub answered 502".into())),
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].1,
            "not known: cannot compare with main (GitHub answered 502)"
        );
        let same = json!({"ahead_by": 0, "behind_by": 0, "html_url": "u", "commits": []});
        assert!(
            fields(Some("main"), Ok(parse(&same)))[0]
                .1
                .starts_with("none")
        );
        let back = json!({"ahead_by": 0, "behind_by": 2, "html_url": "u", "commits": []});
        assert_eq!(
            fields(Some("v2"), Ok(parse(&back)))[0].1,
            "goes back 2 commits from the running v2"
        );
    }
}
