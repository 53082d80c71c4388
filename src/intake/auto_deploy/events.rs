//! A verified webhook event, applied: a push records who pushed the branch's new head
//! (the deploy waits for its checks); a finished check suite, check run or commit status
//! makes every environment auto-deploying one of the branches it names judge the branch's
//! current head (asked of GitHub's API, not taken from the payload).

use std::sync::Arc;

use crate::app::App;
use crate::domain::time::now_ms;
use crate::intake::auto_deploy::{Judged, current_head, judge, requester, targets};
use crate::support::github_webhook::Event;

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// `ping`: GitHub checking the hook.
    Pong,
    /// Nothing to do; the words say why.
    Ignored(String),
    /// A push: its head and pusher recorded for the environments following the branch.
    Recorded { environments: Vec<String> },
    /// Checks finished: each environment's judgement of its branch's head.
    Judged(Vec<(String, Judged)>),
}

impl EventOutcome {
    /// The webhook's answer, as JSON (GitHub shows it in the hook's recent deliveries).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            EventOutcome::Pong => json!({"status": "pong"}),
            EventOutcome::Ignored(why) => json!({"status": "ignored", "detail": why}),
            EventOutcome::Recorded { environments } => {
                json!({"status": "recorded", "environments": environments})
            }
            EventOutcome::Judged(js) => json!({
                "status": "judged",
                "environments": js
                    .iter()
                    .map(|(e, j)| (e.clone(), serde_json::Value::String(j.describe())))
                    .collect::<serde_json::Map<_, _>>()
            }),
        }
    }
}

/// Apply `ev`.
pub async fn on_event(app: &Arc<App>, ev: &Event) -> anyhow::Result<EventOutcome> {
    let (repository, branches) = match ev {
        Event::Ping => return Ok(EventOutcome::Pong),
        Event::Ignored(why) => {
            tracing::debug!(why = %why, "GitHub webhook: ignored");
            return Ok(EventOutcome::Ignored(why.clone()));
        }
        Event::Push {
            repository, branch, ..
        } => (repository, std::slice::from_ref(branch)),
        Event::Checks {
            repository,
            branches,
            ..
        } => (repository, branches.as_slice()),
    };
    let ts: Vec<_> = targets(app)
        .into_iter()
        .filter(|t| t.repo.eq_ignore_ascii_case(repository) && branches.contains(&t.cfg.branch))
        .collect();
    if ts.is_empty() {
        let why = "no environment auto-deploys a branch this event names".to_owned();
        tracing::debug!(why = %why, "GitHub webhook: ignored");
        return Ok(EventOutcome::Ignored(why));
    }
    let mut environments = Vec::new();
    let mut judged = Vec::new();
    for t in &ts {
        let row = app.db.auto_branch(t.env, &t.repo, &t.cfg.branch).await?;
        match ev {
            Event::Push { sha, pusher, .. } => {
                app.db.record_push(t.env, sha, pusher.as_deref()).await?;
                environments.push(t.env.to_owned());
            }
            Event::Checks { sha, sender, .. } => {
                let head = match current_head(app, t, &row, now_ms()).await? {
                    Ok(h) => h,
                    Err(j) => {
                        judged.push((t.env.to_owned(), j));
                        continue;
                    }
                };
                // The event's sender speaks for the commit it is about.
                let sender = sender.as_deref().filter(|_| head.sha == *sha);
                let who = requester(&row, &head, sender);
                // An event about the head itself asks again about a commit that failed
                // before (a re-run may have passed).
                let j = judge(app, t, &head, &who, head.sha == *sha, now_ms()).await?;
                judged.push((t.env.to_owned(), j));
            }
            _ => {}
        }
    }
    Ok(if environments.is_empty() {
        EventOutcome::Judged(judged)
    } else {
        EventOutcome::Recorded { environments }
    })
}
