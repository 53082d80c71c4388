//! A notice as Block Kit, within Slack's limits.

use serde_json::{Value, json};

use crate::domain::notice::Notice;

/// Block Kit limits (see PLATFORMS.md), with a margin under the ~13k total.
const SECTION_TEXT: usize = 3000;
const FIELD_TEXT: usize = 2000;
const FIELDS_PER_SECTION: usize = 10;
const TOTAL_BUDGET: usize = 11_000;

/// Render a notice as Block Kit plus a plain-text fallback. Fields are walked generically:
/// a field added to a notice shows here without Slack-specific code.
pub fn render(n: &Notice) -> (String, Value) {
    let title = format!("{} {}", n.tone.symbol(), n.title);
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": crate::domain::text::cut(&format!("*{}*", escape(&title)), SECTION_TEXT)}
    })];
    let mut used = title.len();
    for chunk in n.fields.chunks(FIELDS_PER_SECTION) {
        let fields: Vec<Value> = chunk
            .iter()
            .map(|f| {
                let t = crate::domain::text::cut(
                    &format!("*{}*\n{}", escape(&f.label), escape(&f.value)),
                    FIELD_TEXT,
                );
                used += t.len();
                json!({"type": "mrkdwn", "text": t})
            })
            .collect();
        blocks.push(json!({"type": "section", "fields": fields}));
    }
    if let Some(body) = &n.body {
        let room = SECTION_TEXT
            .min(TOTAL_BUDGET.saturating_sub(used))
            .saturating_sub(8);
        if room > 100 {
            // Step output is escaped too: a step may print what a person typed.
            // Escaping may lengthen it: cut again, keeping the end.
            let text = crate::domain::text::cut_tail(
                &escape(&crate::domain::text::cut_tail(body, room)),
                room,
            );
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{text}```")}}));
        }
    }
    if !n.actions.is_empty() {
        blocks.push(buttons(n));
    }
    if let Some(c) = context(n) {
        blocks.push(c);
    }
    // The top-level text is what notifications show, and Slack parses it for mentions and
    // links like any mrkdwn: escaped as well.
    (
        crate::domain::text::cut(&escape(&title), 3000),
        Value::Array(blocks),
    )
}

/// The notice's actions as buttons (at most 25, Slack's limit).
fn buttons(n: &Notice) -> Value {
    let elements: Vec<Value> = n
        .actions
        .iter()
        .take(25)
        .map(|a| {
            let mut b = json!({
                "type": "button",
                "text": {"type": "plain_text", "text": crate::domain::text::cut(&a.label, 75)},
                "action_id": a.action,
                "value": a.job_id.to_string(),
            });
            if a.danger {
                b["style"] = json!("danger");
            }
            b
        })
        .collect();
    json!({"type": "actions", "elements": elements})
}

/// "job 7 · environment staging · version abc1234", when the notice has any of them.
fn context(n: &Notice) -> Option<Value> {
    let mut context = Vec::new();
    if let Some(j) = n.job_id {
        context.push(format!("job {j}"));
    }
    if let Some(e) = &n.environment {
        context.push(format!("environment {e}"));
    }
    if let Some(v) = &n.version {
        context.push(format!("version {v}"));
    }
    (!context.is_empty()).then(|| json!({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(&context.join(" · "))}]}))
}

/// Slack's three control characters in mrkdwn and `text`.
pub(super) use crate::domain::text::slack_escape as escape;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::notice::{NoticeKind, Tone};

    #[test]
    fn render_respects_block_kit_limits() {
        let mut n = Notice::new(
            NoticeKind::DeploymentComplete,
            Tone::Success,
            "Deployed abc1234 to staging",
        )
        .env(Some("staging"))
        .version(Some("abc1234"))
        .job(7)
        .body(format!("{}<!channel>", "x".repeat(50_000)))
        .action("rollback", "Roll back", 7, true);
        for i in 0..23 {
            n = n.field(&format!("F{i}"), "v".repeat(5000));
        }
        let (text, blocks) = render(&n);
        assert!(text.contains("Deployed abc1234 to staging"));
        let b = blocks.as_array().unwrap();
        assert!(b.len() <= 50);
        for block in b {
            if let Some(fields) = block.get("fields") {
                let f = fields.as_array().unwrap();
                assert!(f.len() <= 10);
                for x in f {
                    assert!(x["text"].as_str().unwrap().chars().count() <= 2000);
                }
            }
            if let Some(t) = block.pointer("/text/text") {
                assert!(t.as_str().unwrap().chars().count() <= 3000);
            }
        }
        let actions = b.iter().find(|x| x["type"] == "actions").unwrap();
        assert!(!b.iter().any(|x| x.to_string().contains('<')));
        assert_eq!(actions["elements"][0]["action_id"], "rollback");
        assert_eq!(actions["elements"][0]["value"], "7");
    }
}
