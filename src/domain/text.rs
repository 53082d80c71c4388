//! Text helpers: splitting command text, cutting to platform limits, short descriptions.

/// Split command text into words; "double quotes" (straight or curly, as Slack sends them)
/// keep a phrase together. Nothing here is ever given to a shell.
pub fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in text.chars() {
        match c {
            '"' | '“' | '”' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quoted {
        return Err("unbalanced quote in the command text; close the \" around the phrase".into());
    }
    if any {
        out.push(cur);
    }
    if out.len() > 32 {
        return Err("too many words in the command text".into());
    }
    Ok(out)
}

/// At most `max` characters; a cut says so.
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let note = " … (truncated)";
    let keep = max.saturating_sub(note.chars().count());
    s.chars().take(keep).collect::<String>() + note
}

/// The last `max` characters (for logs, where the end matters most); a cut says so.
pub fn cut_tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_owned();
    }
    let note = "(earlier output truncated) … ";
    let keep = max.saturating_sub(note.chars().count());
    note.to_owned() + &s.chars().skip(n - keep).collect::<String>()
}

/// Describe a job in one line: "deploy abc1234 → staging".
pub fn describe(job_command: &str, env: Option<&str>, version: Option<&str>) -> String {
    match (env, version) {
        (Some(e), Some(v)) => format!("{job_command} {v} → {e}"),
        (Some(e), None) => format!("{job_command} on {e}"),
        _ => job_command.to_owned(),
    }
}

/// User text in a message, cut short and without control characters.
pub fn shorten(s: &str) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(64).collect();
    if s.chars().count() > 64 {
        format!("{clean}…")
    } else {
        clean
    }
}

/// Free text (a text argument, a lock or emergency reason) that may be stored and shown:
/// no control characters (NUL, escapes, newlines…) and no bidirectional overrides or
/// isolates (U+202A–U+202E, U+2066–U+2069), which make shown text read differently from
/// what it is. The refusal names the character and what is refused.
pub fn check_clean(what: &str, s: &str) -> Result<(), String> {
    for c in s.chars() {
        let kind = if c.is_control() {
            "a control character"
        } else if matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            "a bidirectional override"
        } else {
            continue;
        };
        return Err(format!(
            "{what} contains {kind} (U+{:04X}); control characters and bidirectional overrides are refused, use plain text",
            c as u32
        ));
    }
    Ok(())
}

/// Text for a Slack `text` or mrkdwn field: Slack's three control characters escaped
/// (`&` `<` `>`), so user text cannot become a mention, a channel ping or a link.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for Discord message content or an embed: markdown characters escaped with `\\`
/// (so user text cannot become a masked link, a mention pill, a spoiler or formatting);
/// `#` and `-` only where they would start a heading or a list. Mentions are also
/// disabled by `allowed_mentions` on every message.
pub fn discord_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut line_start = true;
    for c in s.chars() {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '[' | ']' | '<' | '>' | '@' => {
                out.push('\\');
                out.push(c);
            }
            '#' | '-' if line_start => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
        if c == '\n' {
            line_start = true;
        } else if !c.is_whitespace() {
            line_start = false;
        }
    }
    out
}

/// Longest code span of the bot's own that [`discord_text`] keeps.
const MAX_CODE_SPAN: usize = 100;

/// Text that mixes the bot's words with user input, for Discord: like [`discord_escape`],
/// except that a code span the bot writes around a command (`` `unlock staging` ``,
/// `` `/deploy ENV VERSION` ``) stays a code span. Only spans whose content is made of
/// letters, digits, spaces and `_ . / : = -` are kept: inside a code span Discord renders
/// nothing (no mention, link or formatting), so user text that happens to have that shape
/// shows as code and nothing more. Every other backtick, a lone one or one that would pair
/// across user text, is escaped with the rest.
pub fn discord_text(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || " _./:=-".contains(c);
    let mut out = String::with_capacity(s.len() + 8);
    let mut rest = s;
    while let Some(open) = rest.find('`') {
        out.push_str(&discord_escape(&rest[..open]));
        let after = &rest[open + 1..];
        match after.find('`') {
            Some(close)
                if close > 0
                    && close <= MAX_CODE_SPAN
                    && after[..close].chars().all(safe)
                    && !after[..close].trim().is_empty() =>
            {
                out.push('`');
                out.push_str(&after[..close]);
                out.push('`');
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str("\\`");
                rest = after;
            }
        }
    }
    out.push_str(&discord_escape(rest));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = "<!channel> <http://evil.example/login|Deckhand session expired> <@U123> [x](http://evil.example) **b** @everyone";

    #[test]
    fn slack_escape_leaves_no_markup() {
        let e = slack_escape(HOSTILE);
        assert!(!e.contains('<') && !e.contains('>'), "{e}");
        assert!(e.starts_with("&lt;!channel&gt; &lt;http://evil.example/login|"));
        assert_eq!(slack_escape("a & b"), "a &amp; b");
    }

    #[test]
    fn discord_escape_leaves_no_markup() {
        let e = discord_escape(HOSTILE);
        assert!(e.contains("\\<\\@U123\\>"), "{e}");
        assert!(e.contains("\\[x\\](http://evil.example)"), "{e}");
        assert!(e.contains("\\*\\*b\\*\\*"), "{e}");
        assert!(e.contains("\\@everyone"), "{e}");
        assert_eq!(discord_escape("# h\n - l\na-b #c"), "\\# h\n \\- l\na-b #c");
    }

    #[test]
    fn discord_text_keeps_the_bots_code_spans_only() {
        let t = format!(
            "refused: {:?}. Run `unlock staging` or `/deploy ENV VERSION`",
            HOSTILE
        );
        let e = discord_text(&t);
        assert!(
            e.contains(" `unlock staging` or `/deploy ENV VERSION`"),
            "{e}"
        );
        assert!(
            e.contains("\\<\\@U123\\>") && e.contains("\\*\\*b\\*\\*"),
            "{e}"
        );
        // A user's backtick cannot pair with the bot's across other text.
        let e = discord_text("reason \"a`b <@U1>\". Run `unlock staging`");
        assert_eq!(e, "reason \"a\\`b \\<\\@U1\\>\". Run `unlock staging`");
        // Spans with markup inside, empty or lone backticks are escaped.
        assert_eq!(discord_text("`<@U1>` `` `"), "\\`\\<\\@U1\\>\\` \\`\\` \\`");
        // Without backticks it is discord_escape.
        assert_eq!(discord_text(HOSTILE), discord_escape(HOSTILE));
    }

    #[test]
    fn unclean_text_is_named() {
        assert!(check_clean("reason", "INC-7 db down → failover").is_ok());
        let e = check_clean("reason", "a\0b").unwrap_err();
        assert!(e.contains("a control character (U+0000)"), "{e}");
        let e = check_clean("reason", "a\u{1b}[31m").unwrap_err();
        assert!(e.contains("(U+001B)"), "{e}");
        let e = check_clean("reason", "abc\u{202E}gpj.exe").unwrap_err();
        assert!(e.contains("a bidirectional override (U+202E)"), "{e}");
        assert!(check_clean("reason", "x\u{2066}y").is_err());
    }

    #[test]
    fn split_keeps_quoted_phrases() {
        assert_eq!(
            split_args("production abc1234 --emergency \"INC-7 db down\"").unwrap(),
            vec!["production", "abc1234", "--emergency", "INC-7 db down"]
        );
        assert_eq!(split_args("  a   “b c”  ").unwrap(), vec!["a", "b c"]);
        assert_eq!(split_args("").unwrap(), Vec::<String>::new());
        assert_eq!(split_args("a \"\"").unwrap(), vec!["a", ""]);
        assert!(split_args("a \"b").is_err());
    }

    #[test]
    fn cuts_say_so() {
        assert_eq!(cut("abc", 5), "abc");
        let c = cut(&"x".repeat(100), 20);
        assert_eq!(c.chars().count(), 20);
        assert!(c.ends_with("(truncated)"));
        let t = cut_tail(&format!("{}END", "x".repeat(100)), 40);
        assert_eq!(t.chars().count(), 40);
        assert!(t.ends_with("END") && t.starts_with("(earlier"));
    }
}
