//! A notice as one embed plus buttons, within Discord's limits.

use serde_json::{Value, json};

use crate::domain::notice::{Notice, Tone};
use crate::domain::text::{cut, cut_tail, discord_text as escape};

/// Colour of an embed by the notice's tone.
fn colour(t: Tone) -> u32 {
    match t {
        Tone::Info => 0x5865F2,
        Tone::Progress => 0xFEE75C,
        Tone::Success => 0x57F287,
        Tone::Warning => 0xF0B232,
        Tone::Danger => 0xED4245,
    }
}

/// Render a notice as one embed plus buttons, within Discord's limits. Fields are walked
/// generically: a field added to a notice shows here without Discord-specific code.
pub fn render(n: &Notice) -> Value {
    // Titles, fields and footers may quote user text: markdown is escaped in all of them,
    // except the bot's own code spans around commands (`discord_text`).
    let title = cut(&format!("{} {}", n.tone.symbol(), escape(&n.title)), 256);
    let mut budget = 6000usize.saturating_sub(title.chars().count());
    let mut fields = Vec::new();
    for f in n.fields.iter().take(25) {
        let name = cut(&escape(&f.label), 256);
        let value = cut(
            &if f.value.is_empty() {
                "-".to_owned()
            } else {
                escape(&f.value)
            },
            1024,
        );
        let size = name.chars().count() + value.chars().count();
        if size > budget.saturating_sub(200) {
            break;
        }
        budget -= size;
        fields.push(json!({"name": name, "value": value, "inline": value.chars().count() <= 40}));
    }
    let mut footer = Vec::new();
    if let Some(j) = n.job_id {
        footer.push(format!("job {j}"));
    }
    if let Some(e) = &n.environment {
        footer.push(e.clone());
    }
    if let Some(v) = &n.version {
        footer.push(v.clone());
    }
    let footer = cut(&escape(&footer.join(" · ")), 200);
    budget = budget.saturating_sub(footer.chars().count());
    let mut embed = json!({"title": title, "color": colour(n.tone), "fields": fields});
    if !footer.is_empty() {
        embed["footer"] = json!({"text": footer});
    }
    if let Some(b) = &n.body {
        let room = budget.min(4096).saturating_sub(8);
        if room > 50 {
            // In a code block nothing is markdown, unless the text closes the block itself.
            let b = cut_tail(b, room).replace("```", "`\u{200b}``");
            embed["description"] = json!(format!("```\n{b}\n```"));
        }
    }
    json!({"content": "", "embeds": [embed], "components": components(n), "allowed_mentions": no_mentions()})
}

/// `allowed_mentions` for every message, follow-up and interaction response: `{"parse": []}`,
/// so no user, role, `@everyone` or `@here` mention is honoured, whatever the text quotes.
pub fn no_mentions() -> Value {
    json!({"parse": []})
}

/// Plain text (an answer, a follow-up) as Discord message content: escaped but for the
/// bot's code spans, within 2,000 characters.
pub fn content(text: &str) -> String {
    cut(&escape(text), 2000)
}

/// The notice's actions as one row of buttons (at most 5, Discord's limit per row).
fn components(n: &Notice) -> Value {
    let buttons: Vec<Value> = n
        .actions
        .iter()
        .take(5)
        .map(|a| {
            json!({
                "type": 2,
                "style": if a.danger { 4 } else { 1 },
                "label": cut(&a.label, 80),
                "custom_id": cut(&format!("{}:{}", a.action, a.job_id), 100),
            })
        })
        .collect();
    if buttons.is_empty() {
        json!([])
    } else {
        json!([{"type": 1, "components": buttons}])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::NoticeKind;

    #[test]
    fn render_stays_within_embed_limits() {
        let mut n = Notice::new(
            NoticeKind::DeploymentComplete,
            Tone::Success,
            "x".repeat(400),
        )
        .job(3)
        .body("y".repeat(10_000))
        .action("rollback", "Roll back", 3, true);
        for i in 0..30 {
            n = n.field(&format!("F{i}"), "v".repeat(2000));
        }
        let v = render(&n);
        let e = &v["embeds"][0];
        assert!(e["title"].as_str().unwrap().chars().count() <= 256);
        let fields = e["fields"].as_array().unwrap();
        assert!(fields.len() <= 25);
        let total: usize = e["title"].as_str().unwrap().chars().count()
            + e["description"]
                .as_str()
                .map(|d| d.chars().count())
                .unwrap_or(0)
            + e["footer"]["text"]
                .as_str()
                .map(|d| d.chars().count())
                .unwrap_or(0)
            + fields
                .iter()
                .map(|f| {
                    f["name"].as_str().unwrap().chars().count()
                        + f["value"].as_str().unwrap().chars().count()
                })
                .sum::<usize>();
        assert!(total <= 6000, "{total}");
        assert_eq!(
            v["components"][0]["components"][0]["custom_id"],
            "rollback:3"
        );
        assert_eq!(e["color"], 0x57F287);
    }

    #[test]
    fn the_commit_list_fits_a_field_even_when_every_title_is_markup() {
        use crate::support::github_compare::{fields, parse};
        let title = "*_~`|[]<>@ ".repeat(7) + "(#123)";
        let commits: Vec<serde_json::Value> = (0..40)
            .map(|_| json!({"commit": {"message": title.clone()}}))
            .collect();
        let v =
            json!({"ahead_by": 40, "behind_by": 0, "html_url": "https://x/c", "commits": commits});
        let mut n = Notice::new(NoticeKind::AwaitingApproval, Tone::Warning, "t");
        for (label, value) in fields(Some("main"), Ok(parse(&v))) {
            n = n.field(&label, value);
        }
        let out = render(&n);
        let changes = out["embeds"][0]["fields"][0]["value"].as_str().unwrap();
        assert!(
            changes.chars().count() <= 1024,
            "{}",
            changes.chars().count()
        );
        assert!(!changes.contains("(truncated)"), "{changes}");
        assert!(
            changes.contains("(#123)") && changes.contains("more"),
            "{changes}"
        );
        assert_eq!(out["embeds"][0]["fields"][1]["value"], "https://x/c");
    }
}
