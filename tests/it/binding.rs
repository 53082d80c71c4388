//! Bound to its own workspace and guilds: correctly signed requests from another Slack
//! team, a Slack Connect user of a connected organisation, another Slack app, another
//! Discord server or a direct message make no job and change nothing, are answered with a
//! refusal and audited; the listed team and guild still work. Identities carry the team, and
//! rows written before (`slack:U…`) still belong to their person.

use crate::common::chat::*;
use crate::common::*;
use deckhand::store::jobs::state;

const BOUND: &str = "[slack]\nallowed_teams = [\"T0TEAM\"]\napp_id = \"A0APP\"\n\n[discord]\nallowed_guilds = [\"31337\"]\n\n[environments.gated]\napprovals = 1\n";

fn job_id(text: &str) -> i64 {
    text.split("Job ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no job id in {text:?}"))
}

/// The `refused_elsewhere` audit rows: (actor, detail).
async fn refusals(app: &deckhand::app::App) -> Vec<(String, String)> {
    app.db
        .audit(None, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.action == "refused_elsewhere")
        .map(|a| (a.actor, a.detail))
        .collect()
}

both!(requests_from_elsewhere_change_nothing, from_elsewhere);
async fn from_elsewhere(backend: Backend) {
    let Some(c) = Chat::start(backend, BOUND, &[("ship.toml", &gated_ship_command())], &[]) else {
        return;
    };
    let app = c.ws.app(&[]).await;
    let ip = "10.1.0.1";

    // The allowed team asks for a gated deploy: it waits for one approval.
    let (status, text) = c
        .command(
            &slash("T0TEAM", "UDEPLOYER", "ship gated abc1234", "t1", &c.fake),
            ip,
        )
        .await;
    assert_eq!(status, 200);
    assert!(text.contains("waits for 1 approval"), "{text}");
    let job = job_id(&text);
    assert_eq!(
        app.db.job(job).await.unwrap().unwrap().requested_by,
        "slack:T0TEAM:UDEPLOYER"
    );

    // Another workspace: the same command, correctly signed, is refused.
    let (status, text) = c
        .command(
            &slash("T0EVIL", "UDEPLOYER", "ship gated abc1234", "t2", &c.fake),
            ip,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("does not serve the Slack workspace T0EVIL")
            && text.contains("nothing was done"),
        "{text}"
    );
    // ...and its button clicks: the approval, from the other team, and from a Slack
    // Connect user of a connected organisation clicking in our channel.
    let evil = click(
        "T0EVIL",
        "T0EVIL",
        "UAPPROVER",
        "approve",
        &job.to_string(),
        "t3",
        &c.fake,
    );
    assert_eq!(c.click(&evil, ip).await, 200);
    assert!(
        c.told("t3")
            .await
            .contains("does not serve the Slack workspace T0EVIL")
    );
    let connect = click(
        "T0TEAM",
        "T0OTHER",
        "UAPPROVER",
        "approve",
        &job.to_string(),
        "t4",
        &c.fake,
    );
    assert_eq!(c.click(&connect, ip).await, 200);
    assert!(
        c.told("t4")
            .await
            .contains("you belong to the Slack team T0OTHER")
    );
    // Another app signed with the same secret.
    let body = slash("T0TEAM", "UDEPLOYER", "ship gated abc1234", "t5", &c.fake)
        .replace("A0APP", "A0OTHER");
    let (_, text) = c.command(&body, ip).await;
    assert!(text.contains("another Slack app (A0OTHER)"), "{text}");

    // Discord: another server, and a direct message.
    let (status, text) = c
        .discord(
            &interaction(
                "d1",
                Some("999"),
                "1001",
                "ship",
                &[("environment", "gated"), ("version", "abc1234")],
            ),
            ip,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        text.contains("does not serve the Discord server 999"),
        "{text}"
    );
    let (_, text) = c
        .discord(
            &interaction(
                "d2",
                None,
                "1001",
                "ship",
                &[("environment", "gated"), ("version", "abc1234")],
            ),
            ip,
        )
        .await;
    assert!(text.contains("not in direct messages"), "{text}");
    let mut discord_click = interaction("d3", Some("999"), "1002", "", &[]);
    discord_click["type"] = 3.into();
    discord_click["data"] =
        serde_json::json!({"custom_id": format!("approve:{job}"), "component_type": 2});
    let (_, text) = c.discord(&discord_click, ip).await;
    assert!(
        text.contains("does not serve the Discord server 999"),
        "{text}"
    );

    // Nothing changed: one job, still waiting, no approval, no lock; every refusal audited
    // under the person as they are known in their own team.
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 1);
    assert_eq!(
        app.db.job(job).await.unwrap().unwrap().state,
        state::AWAITING_APPROVAL
    );
    assert!(app.db.approvals(job).await.unwrap().is_empty());
    let refused = refusals(&app).await;
    let actors: Vec<&str> = refused.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        actors,
        [
            "slack:T0EVIL:UDEPLOYER",
            "slack:T0EVIL:UAPPROVER",
            "slack:T0OTHER:UAPPROVER",
            "slack:T0TEAM:UDEPLOYER",
            "discord:1001",
            "discord:1001",
            "discord:1002",
        ],
        "{refused:#?}"
    );
    assert!(refused[0].1.starts_with("/ship: refused"), "{refused:#?}");
    assert!(
        refused[1].1.starts_with("/approve: refused"),
        "{refused:#?}"
    );

    // The listed team and guild still work: the approval goes in and the job runs.
    let ok = click(
        "T0TEAM",
        "T0TEAM",
        "UAPPROVER",
        "approve",
        &job.to_string(),
        "t6",
        &c.fake,
    );
    assert_eq!(c.click(&ok, ip).await, 200);
    assert!(
        c.told("t6")
            .await
            .contains("approved by slack:T0TEAM:UAPPROVER")
    );
    assert_eq!(
        app.db.approvals(job).await.unwrap(),
        ["slack:T0TEAM:UAPPROVER"]
    );
    wait_state(&app, job, state::SUCCEEDED).await;
    let (_, text) = c
        .discord(
            &interaction(
                "d4",
                Some("31337"),
                "1001",
                "ship",
                &[("environment", "gated"), ("version", "abc1234")],
            ),
            ip,
        )
        .await;
    assert!(text.contains("waits for 1 approval"), "{text}");
    assert_eq!(app.db.recent_jobs(10).await.unwrap().len(), 2);
}

/// The same user id in two workspaces is two people; a bare `U…` role entry holds in any
/// allowed team, `T…:U…` in that team only; a lock and a job from before workspace binding
/// (`slack:U…`) still belong to their person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_carry_the_team_and_old_rows_keep_their_owner() {
    let extra = "[slack]\nallowed_teams = [\"T0TEAM\", \"T0SISTER\"]\n\n[environments.gated]\napprovals = 1\n\n[environments.qa]\n\n[roles.pinned]\nslack_users = [\"T0SISTER:UPIN\"]\n";
    let pinned = deploy_command("pinship", "pinned", r#"["true"]"#);
    let c = Chat::start(
        Backend::Sqlite,
        extra,
        &[
            ("ship.toml", &gated_ship_command()),
            ("pinship.toml", &pinned),
        ],
        &[],
    )
    .unwrap();
    let app = c.ws.app(&[]).await;
    let ip = "10.1.0.2";

    // UDEPLOYER of either allowed team holds the bare entry's role; they are two people,
    // so one approves the other's job.
    let (_, text) = c
        .command(
            &slash("T0TEAM", "UDEPLOYER", "ship gated abc1234", "i1", &c.fake),
            ip,
        )
        .await;
    let job = job_id(&text);
    let own = click(
        "T0TEAM",
        "T0TEAM",
        "UDEPLOYER",
        "approve",
        &job.to_string(),
        "i2",
        &c.fake,
    );
    c.click(&own, ip).await;
    assert!(
        c.told("i2").await.contains("someone else must approve"),
        "the requester"
    );
    let sister = click(
        "T0SISTER",
        "T0SISTER",
        "UDEPLOYER",
        "approve",
        &job.to_string(),
        "i3",
        &c.fake,
    );
    c.click(&sister, ip).await;
    assert!(
        c.told("i3")
            .await
            .contains("approved by slack:T0SISTER:UDEPLOYER")
    );

    // A team-qualified entry holds in that team only.
    let (_, text) = c
        .command(
            &slash("T0TEAM", "UPIN", "pinship qa abc1234", "i4", &c.fake),
            ip,
        )
        .await;
    assert!(text.contains("needs the \"pinned\" role"), "{text}");
    let (_, text) = c
        .command(
            &slash("T0SISTER", "UPIN", "pinship qa abc1234", "i5", &c.fake),
            ip,
        )
        .await;
    assert!(text.starts_with("Queued"), "{text}");

    // Rows from before binding name only the user: a lock taken then is released by its
    // holder now (and by no one else without the role).
    use crate::digest_support::{seed, sql};
    use deckhand::store::Arg;
    let then = deckhand::domain::time::now_ms();
    seed(
        &app.db,
        &[sql(
            "INSERT INTO locks (environment, locked_by, platform, channel, reason, locked_at) VALUES ('staging', 'slack:ULEGACY', 'slack', NULL, 'old lock', $1)",
            vec![Arg::Int(then)],
        )],
    )
    .await;
    let (_, text) = c
        .command(
            &slash("T0TEAM", "UOTHER", "unlock staging", "i6", &c.fake),
            ip,
        )
        .await;
    assert!(
        text.contains("only they or someone with the \"admin\" role"),
        "{text}"
    );
    let (_, text) = c
        .command(
            &slash("T0TEAM", "ULEGACY", "unlock staging", "i7", &c.fake),
            ip,
        )
        .await;
    assert!(
        text.contains("staging unlocked by slack:T0TEAM:ULEGACY"),
        "{text}"
    );
    assert!(app.db.lock_of("staging").await.unwrap().is_none());
}

/// `deckhand check` refuses ids of the wrong shape, naming the key; `serve` warns once
/// about each list left unset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_validates_the_ids_and_serve_warns_about_unset_lists() {
    for (extra, says) in [
        (
            "[slack]\nallowed_teams = [\"myteam\"]\n",
            "slack.allowed_teams: \"myteam\" is not a Slack team id",
        ),
        (
            "[slack]\napp_id = \"T0TEAM\"\n",
            "slack.app_id: \"T0TEAM\" is not a Slack app id",
        ),
        (
            "[discord]\nallowed_guilds = [\"my-server\"]\n",
            "discord.allowed_guilds: \"my-server\" is not a Discord guild id",
        ),
        (
            "[roles.ops]\nslack_users = [\"alice\"]\n",
            "roles.ops.slack_users: \"alice\" is not a Slack user id",
        ),
    ] {
        let ws = Workspace::new(Backend::Sqlite, extra, &[]).unwrap();
        let out = ws.cmd(&["check"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{extra}");
        assert!(err.contains(says), "{extra}: {err}");
    }
    let ws = Workspace::new(Backend::Sqlite, "[slack]\nallowed_teams = [\"T0TEAM\", \"E0ORG\"]\napp_id = \"A0APP\"\n[discord]\nallowed_guilds = [\"112233445566778899\"]\n[roles.ops]\nslack_users = [\"U1\", \"T0TEAM:U2\"]\n", &[]).unwrap();
    let out = ws.cmd(&["check"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let c = Chat::start(Backend::Sqlite, "", &[], &[]).unwrap();
    let log = c.server.output();
    for key in [
        "[slack] allowed_teams is not set",
        "[slack] app_id is not set",
        "[discord] allowed_guilds is not set",
    ] {
        assert_eq!(log.matches(key).count(), 1, "{key}:\n{log}");
    }
}
