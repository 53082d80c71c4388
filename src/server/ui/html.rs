//! HTML by hand: one escaping function and the page frame. Every value that comes from a
//! person, a step, a platform or the database reaches the page through [`Text`], which
//! redacts secrets (the chat redaction) and escapes `& < > " '`; only literal markup is
//! written raw.

use std::fmt::Write as _;

use crate::domain::time::fmt_time;
use crate::support::runner::Redactor;

/// `s` with the five HTML-special characters escaped: safe in text and in quoted
/// attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text for a page: secrets redacted as in chat, then escaped.
pub struct Text<'a> {
    redactor: &'a Redactor,
}

impl<'a> Text<'a> {
    pub fn new(redactor: &'a Redactor) -> Self {
        Self { redactor }
    }
    /// Redacted and escaped.
    pub fn t(&self, s: &str) -> String {
        esc(&self.redactor.redact(s))
    }
    /// An optional value, or a dash.
    pub fn o(&self, s: Option<&str>) -> String {
        s.map(|s| self.t(s)).unwrap_or_else(|| "–".into())
    }
}

/// A query-string value, percent-encoded (then safe inside an escaped attribute).
pub fn q(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A time as `<time>`, or a dash.
pub fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) => format!("<time>{}</time>", esc(&fmt_time(ms))),
        None => "–".into(),
    }
}

/// A state or status as a coloured label. Unknown words are shown neutral (and escaped).
pub fn badge(word: &str) -> String {
    use crate::domain::state::{DeployStatus, JobState};
    let class = match JobState::parse(word) {
        Some(JobState::Succeeded) => "good",
        Some(JobState::Queued | JobState::AwaitingApproval | JobState::Running) => "busy",
        Some(JobState::Failed | JobState::Interrupted) => "bad",
        Some(JobState::Cancelled | JobState::Rejected | JobState::Expired) => "warn",
        None if word == DeployStatus::Verified.as_str() => "good",
        None if word == DeployStatus::Unhealthy.as_str() => "bad",
        None => match word {
            "resolved" | "healthy" | "approve" => "good",
            "firing" | "down" | "failing" | "reject" => "bad",
            "locked" => "warn",
            _ => "plain",
        },
    };
    format!(
        "<span class=\"badge {class}\">{}</span>",
        esc(&word.replace('_', " "))
    )
}

/// A deployment's verdict as a label.
pub fn verdict(verified: bool) -> String {
    use crate::domain::state::DeployStatus;
    badge(if verified {
        DeployStatus::Verified.as_str()
    } else {
        DeployStatus::Unhealthy.as_str()
    })
}

/// Who reads the page, as the header shows it.
#[derive(Debug, Clone, Default)]
pub struct Viewer(pub Option<String>);

/// The whole page: head, navigation, `body`, and the script (with its nonce) when asked.
pub fn frame(title: &str, nonce: &str, viewer: &Viewer, script: bool, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Deckhand</title><link rel=\"stylesheet\" href=\"/ui/app.css\">",
        esc(title)
    );
    if script {
        let _ = write!(
            out,
            "<script nonce=\"{}\" src=\"/ui/app.js\" defer></script>",
            esc(nonce)
        );
    }
    out.push_str(
        "</head><body><header><a class=\"brand\" href=\"/\">⚓ Deckhand</a><nav>\
         <a href=\"/\">Overview</a><a href=\"/incidents\">Incidents</a><a href=\"/audit\">Audit</a></nav>",
    );
    if let Some(v) = &viewer.0 {
        let _ = write!(out, "<span class=\"viewer\">{}</span>", esc(v));
    }
    out.push_str("</header><main>");
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

/// Daily uptime as bars (an inline SVG, no script, no inline style): `days` are
/// (label, percent or `None` for no data), oldest first; a line marks the SLO.
pub fn uptime_chart(days: &[(String, Option<f64>)], slo: f64) -> String {
    let (w, h, gap) = (12.0, 40.0, 3.0);
    let width = days.len() as f64 * (w + gap);
    // 90 % at the bottom: the interesting part is near the top.
    let floor = 90.0;
    let y = |pct: f64| h - ((pct.max(floor) - floor) / (100.0 - floor)) * h;
    let mut out = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {}\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"daily uptime against the SLO\">",
        h + 2.0,
        h + 2.0
    );
    for (i, (label, pct)) in days.iter().enumerate() {
        let x = i as f64 * (w + gap);
        match pct {
            Some(p) => {
                let top = y(*p).min(h - 2.0);
                let class = if *p >= slo { "ok" } else { "miss" };
                let _ = write!(
                    out,
                    "<rect class=\"{class}\" x=\"{x}\" y=\"{top:.1}\" width=\"{w}\" height=\"{:.1}\"><title>{}: {p:.2} %</title></rect>",
                    h - top,
                    esc(label)
                );
            }
            None => {
                let _ = write!(
                    out,
                    "<rect class=\"none\" x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"2\"><title>{}: no data</title></rect>",
                    h - 2.0,
                    esc(label)
                );
            }
        }
    }
    let _ = write!(
        out,
        "<line class=\"slo\" x1=\"0\" x2=\"{width}\" y1=\"{:.1}\" y2=\"{:.1}\"><title>SLO {slo} %</title></line></svg>",
        y(slo),
        y(slo)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(1)</script> & <!channel> \"x\" 'y'"),
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;!channel&gt; &quot;x&quot; &#39;y&#39;"
        );
        let r = Redactor::new(["s3cr3t-value".to_string()]);
        assert_eq!(
            Text::new(&r).t("token=s3cr3t-value <b>"),
            "token=[redacted] &lt;b&gt;"
        );
        assert_eq!(badge("<x>"), "<span class=\"badge plain\">&lt;x&gt;</span>");
    }
}
