//! `lock ENV REASON` and `unlock ENV`: environment locks, their notices and audit entries.

use std::collections::BTreeSet;

use super::builtins::actor_audit;
use crate::app::App;
use crate::domain::notice::{Notice, NoticeKind, Tone};
use crate::domain::time::{fmt_duration, fmt_time, now_ms};
use crate::intake::{Decision, Invocation};
use crate::store::Write;

fn env_notice(app: &App, inv: &Invocation, env: &str, n: &Notice) -> Vec<Write> {
    crate::outbox::routes::lock_notices(
        &app.settings,
        env,
        &inv.platform,
        inv.channel.as_deref(),
        n,
    )
}

pub(super) async fn lock<'a>(
    app: &'a App,
    inv: &Invocation,
    env: &str,
    reason: &str,
) -> anyhow::Result<Decision<'a>> {
    if let Some(l) = app.db.lock_of(env).await? {
        return Ok(Decision::Refuse(format!(
            "{env} is already locked by {} since {}: {:?}",
            l.locked_by,
            fmt_time(l.locked_at),
            l.reason
        )));
    }
    let title = format!("{env} locked by {}: {reason}", inv.actor);
    let n = Notice::new(NoticeKind::EnvironmentLocked, Tone::Warning, title.clone()).env(Some(env));
    let mut w = vec![crate::store::history::lock(
        env,
        &inv.actor,
        &inv.platform,
        inv.channel.as_deref(),
        reason,
        now_ms(),
    )];
    w.extend(env_notice(app, inv, env, &n));
    w.push(actor_audit(inv, "lock", Some(env), None, reason.to_owned()));
    match app.db.apply(&w).await {
        Ok(_) => {
            app.poke();
            Ok(Decision::Info(format!(
                "{title}. Deploys, rollbacks and migrations to {env} are refused until `unlock {env}`"
            )))
        }
        Err(e) if e.is_unique_violation() => Ok(Decision::Refuse(format!(
            "{env} was locked by someone else a moment ago; see `status {env}`"
        ))),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn unlock<'a>(
    app: &'a App,
    inv: &Invocation,
    env: &str,
    held: &BTreeSet<String>,
) -> anyhow::Result<Decision<'a>> {
    let Some(l) = app.db.lock_of(env).await? else {
        return Ok(Decision::Refuse(format!("{env} is not locked")));
    };
    let others = app.settings.config.locks.unlock_others.as_str();
    let may = crate::domain::platform::same_actor(&l.locked_by, &inv.actor)
        || others == "everyone"
        || held.contains(others)
        || held.contains("admin");
    if !may {
        let reason = format!(
            "{env} is locked by {} ({}); only they or someone with the {others:?} role can unlock it",
            l.locked_by, l.reason
        );
        return Ok(Decision::RefuseAs("unlock_refused", reason));
    }
    let title = format!(
        "{env} unlocked by {} (locked by {} for {})",
        inv.actor,
        l.locked_by,
        fmt_duration(now_ms() - l.locked_at)
    );
    let n = Notice::new(NoticeKind::BlockerResolved, Tone::Success, title.clone()).env(Some(env));
    let mut w = vec![crate::store::history::unlock(env)];
    w.extend(env_notice(app, inv, env, &n));
    w.push(actor_audit(inv, "unlock", Some(env), None, title.clone()));
    app.db.apply(&w).await?;
    app.poke();
    Ok(Decision::Info(title))
}
