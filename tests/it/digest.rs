//! Digests: `deckhand digest NAME --now` on stored data, the scheduler (once across
//! replicas, DST, late firings), and charts reaching Slack and Discord.

use std::sync::Arc;

use crate::common::fake::{FakeApi, Scripted};
use crate::common::*;
use crate::digest_support::*;
use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use deckhand::app::App;
use deckhand::reports::cost::fmt_money;
use deckhand::reports::digest::{
    Digest, Fired, build, chart, notice, render_terminal, tick, uptime_panel,
};
use deckhand::store::Arg;
use deckhand::support::runner::CancelToken;
use serde_json::Value;

both!(digest_now_prints_stored_figures, digest_now);
async fn digest_now(b: Backend) {
    let Some(ws) = Workspace::new(b, &config(WEEKLY), &[("cost-fixed.toml", COST_CMD)]) else {
        return;
    };
    let app = ws.app(&[]).await;
    let now = Utc::now();
    let today = now.date_naive();
    let days = write_costs(&ws, today);
    let (h, d) = (3_600_000, 86_400_000);
    let n = ms(now);
    let mut w = probes("staging", 400, 6, n - 6 * d, n - h);
    w.extend(probes("production", 400, 1, n - 6 * d, n - h));
    // Two overlapping staging incidents, 30 minutes together; one from before the period.
    w.push(incident(
        "staging",
        "P1",
        n - 3 * d,
        Some(n - 3 * d + 20 * 60_000),
    ));
    w.push(incident(
        "staging",
        "P3",
        n - 3 * d + 10 * 60_000,
        Some(n - 3 * d + 30 * 60_000),
    ));
    w.push(incident("production", "P2", n - 20 * d, Some(n - 19 * d)));
    for (kind, status, secs) in [
        ("deploy", "verified", 30),
        ("deploy", "verified", 50),
        ("deploy", "failed", 10),
        ("deploy", "unhealthy", 90),
        ("auto_rollback", "verified", 5),
        ("rollback", "verified", 6),
    ] {
        w.push(deployment("staging", kind, status, n - 4 * d, secs));
    }
    w.push(deployment(
        "production",
        "deploy",
        "verified",
        n - 2 * d,
        120,
    ));
    w.push(deployment("production", "deploy", "failed", n - 10 * d, 1));
    seed(&app.db, &w).await;

    let chart = ws.dir.path().join("weekly.png");
    let out = ws
        .cmd(&[
            "digest",
            "weekly",
            "--now",
            "--chart",
            chart.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // What the cost figures must be, from the records written above.
    let month = today.with_day(1).unwrap();
    let end = today - Duration::days(1);
    let mtd: f64 = days.iter().filter(|(d, _)| *d >= month).map(|x| x.1).sum();
    let in_month = (month + chrono::Months::new(1) - month).num_days();
    let covered = if end >= month { end.day() as i64 } else { 0 };
    let forecast = mtd + 16.5 * (in_month - covered) as f64;
    let usd = |a: f64| fmt_money(a, "USD");
    for expected in [
        // 400 probes 21 minutes apart: each stands for one minute (twice the 30 s interval).
        "Uptime: monitored 6 h 40 min of 7 d (4.0%): 98.50%; SLO 99.5% missed, error budget 50 min 24 s for the period, 6 min 0 s spent (12%)".to_owned(),
        "Incidents 2 (P1 1, P3 1), downtime 30 min 0 s".to_owned(),
        "Deployments 4: 2 of 4 verified (50%), 2 rollbacks (1 automatic), median 40.0 s".to_owned(),
        "Uptime: monitored 6 h 40 min of 7 d (4.0%): 99.75%; SLO 99.5% met, error budget 50 min 24 s for the period, 1 min 0 s spent (2%)".to_owned(),
        "Incidents 0, downtime 0 s".to_owned(),
        "Deployments 1: 1 of 1 verified (100%), 0 rollbacks, median 2 min 0 s".to_owned(),
        format!("Month to date {} (through {})", usd(mtd), end.format("%-d %b")),
        format!(
            "Forecast {} for {}; budget 300.00 USD ({:.0}%, over budget)",
            usd(forecast),
            month.format("%B"),
            forecast * 100.0 / 300.0
        ),
        "Last 7 days 115.50 USD (+32% on the period before)".to_owned(),
        "Movers: compute +28.00 USD (+40%)".to_owned(),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains("Cost: cloud"), "{text}");
    let png = std::fs::read(&chart).unwrap();
    assert_eq!(png_size(&png), (800, 500));
    // The preview posts nothing.
    assert!(digest_rows(&app, "%").await.is_empty());
}

/// One probe result of `env` (its only target) at `at`.
fn probe_at(env: &str, at: i64, ok: bool) -> Seed {
    sql(
        "INSERT INTO probe_results (target, environment, at, ok, status, latency_ms) VALUES ($1, $1, $2, $3 = 1, 200, 12)",
        vec![Arg::Text(env.into()), Arg::Int(at), Arg::Int(i64::from(ok))],
    )
}

/// The digest `weekly` for the period ending at `to`, in the terminal's words.
async fn digest_text(app: &App, to: DateTime<Utc>) -> (Digest, String) {
    let cfg = &app.settings.config.digests[0];
    let d = build(app, cfg, to).await.unwrap();
    let text = render_terminal(&notice(&d, None));
    (d, text)
}

fn env<'a>(d: &'a Digest, name: &str) -> &'a deckhand::reports::digest::EnvReport {
    d.environments.iter().find(|e| e.name == name).unwrap()
}

fn line_of<'a>(text: &'a str, env: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(&format!("{env}:")))
        .unwrap_or_else(|| panic!("no {env} line in:\n{text}"))
}

both!(
    a_new_install_reports_what_it_monitored_not_an_outage,
    new_install
);
async fn new_install(b: Backend) {
    let Some(ws) = Workspace::new(b, &config(WEEKLY), &[("cost-fixed.toml", COST_CMD)]) else {
        return;
    };
    let app = ws.app(&[]).await;
    let to = t("2026-11-23T08:00:00Z");
    // Installed two minutes ago: staging probed every 30 s since, all up; production
    // never probed.
    let w: Vec<Seed> = (1..=4)
        .map(|i| probe_at("staging", ms(to) - i * 30_000, true))
        .collect();
    seed(&app.db, &w).await;
    let (d, text) = digest_text(&app, to).await;
    let staging = line_of(&text, "staging");
    assert!(
        staging.contains("Uptime: monitored 2 min 0 s of 7 d (0.02%): 100.00%; SLO 99.5% met"),
        "{staging}"
    );
    assert!(
        staging.contains("error budget 50 min 24 s for the period, none spent"),
        "{staging}"
    );
    assert!(
        line_of(&text, "production").contains("Uptime: not enough data"),
        "{text}"
    );
    assert!(
        !text.contains("overspent") && !text.contains(" 0.00%"),
        "{text}"
    );
    assert_eq!(env(&d, "staging").uptime.monitored_ms, 120_000);
}

both!(uptime_weighs_each_probe_by_the_time_it_stands_for, uneven);
async fn uneven(b: Backend) {
    let Some(ws) = Workspace::new(b, &config(WEEKLY), &[("cost-fixed.toml", COST_CMD)]) else {
        return;
    };
    let app = ws.app(&[]).await;
    let to = t("2026-11-23T08:00:00Z");
    let t0 = ms(to) - 10 * 60_000;
    // Up at 0 and 30 s, down at 60 s, then 9 minutes without a probe (Deckhand was down):
    // the failure counts for the cap (60 s), not for the silence. By count this would be
    // 66.67 %; weighted without the cap, 10 %.
    let mut w = vec![
        probe_at("staging", t0, true),
        probe_at("staging", t0 + 30_000, true),
        probe_at("staging", t0 + 60_000, false),
    ];
    // Production: a probe just before the period counts for the part inside it only, and
    // a second target of the same environment shares its clock.
    let from = ms(to) - 7 * 86_400_000;
    w.push(probe_at("production", from - 20_000, false));
    w.push(probe_at("production", from + 10_000, true));
    w.push(sql(
        "INSERT INTO probe_results (target, environment, at, ok, status, latency_ms) VALUES ('api', 'production', $1, TRUE, 200, 12)",
        vec![Arg::Int(from + 10_000)],
    ));
    seed(&app.db, &w).await;
    let (d, text) = digest_text(&app, to).await;
    let staging = line_of(&text, "staging");
    assert!(
        staging.contains("monitored 2 min 0 s of 7 d (0.02%): 50.00%; SLO 99.5% missed"),
        "{staging}"
    );
    assert!(
        staging.contains("error budget 50 min 24 s for the period, 1 min 0 s spent (2%)"),
        "{staging}"
    );
    // Production: 10 s down (the part of the early probe inside the period), then 60 s up
    // on each target: 130 s of target time, 10 s down, over 70 s of wall-clock.
    let p = &env(&d, "production").uptime;
    assert_eq!((p.monitored_ms, p.up_ms), (70_000, 64_615), "{text}");
    // The chart's data: each environment against the SLO.
    let panel = uptime_panel(&d);
    assert_eq!(panel.slo_percent, 99.5);
    let names: Vec<&str> = panel.lines.iter().map(|l| l.label.as_str()).collect();
    assert_eq!(names, ["production", "staging"]);
    assert_eq!(panel.lines[1].points.len(), 1);
    assert!((panel.lines[1].points[0].1 - 50.0).abs() < 1e-9);
    // …and in the picture: a line of the SLO's colour across the uptime panel.
    let png = chart(&d, &app.settings.config.costs).unwrap();
    let reader = png::Decoder::new(std::io::Cursor::new(&png[..]));
    let mut reader = reader.read_info().unwrap();
    let mut rgb = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut rgb).unwrap();
    let slo = deckhand::reports::digest::SLO_COLOR;
    let (row, len) = rgb
        .chunks(800 * 3)
        .map(|r| r.chunks(3).filter(|p| p == &[slo.0, slo.1, slo.2]).count())
        .enumerate()
        .max_by_key(|(_, n)| *n)
        .unwrap();
    assert!(len > 500 && row < 250, "SLO line: {len} px on row {row}");
}

/// The bundled config as shipped: `deckhand digest weekly --now` with the demo cost source.
#[test]
fn digest_now_on_the_bundled_demo() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo.join("deckhand.toml"), dir.path().join("deckhand.toml")).unwrap();
    std::fs::create_dir(dir.path().join("commands")).unwrap();
    for f in std::fs::read_dir(repo.join("commands")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join("commands").join(f.file_name().unwrap())).unwrap();
    }
    let out = std::process::Command::new(BIN)
        .args(["digest", "weekly", "--now"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/d.db", dir.path().display()),
        )
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let today = Utc::now().date_naive();
    let month = today.with_day(1).unwrap();
    let mtd: f64 = deckhand::cli::demo::demo_costs(today)
        .iter()
        .filter(|r| r.0 >= month)
        .map(|r| r.2)
        .sum();
    let expected = format!("Month to date {}", fmt_money(mtd, "USD"));
    assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    for s in [
        "Digest weekly",
        "staging:",
        "production:",
        "Deployments 0",
        "Cost: demo:",
    ] {
        assert!(text.contains(s), "missing {s:?} in:\n{text}");
    }
    let png = std::fs::read(dir.path().join("digest-weekly.png")).unwrap();
    assert_eq!(png_size(&png), (800, 500));
}

both!(replicas_post_each_firing_once, replicas);
async fn replicas(b: Backend) {
    let Some(ws) = Workspace::new(b, &config(WEEKLY), &[("cost-fixed.toml", COST_CMD)]) else {
        return;
    };
    write_costs(&ws, NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
    let (a, b2) = (ws.app(&[]).await, ws.app(&[]).await);
    assert_ne!(a.worker_id, b2.worker_id);
    // First sight of the schedule (a Sunday): nothing is posted for the past.
    let start = t("2026-11-22T12:00:00Z");
    let (x, y) = tokio::join!(tick(&a, start), tick(&b2, start));
    assert!(x.unwrap().is_empty() && y.unwrap().is_empty());
    // Three Mondays at 09:00 Amsterdam (08:00 UTC); both replicas run through each.
    for (i, monday) in ["2026-11-23", "2026-11-30", "2026-12-07"]
        .iter()
        .enumerate()
    {
        let at = t(&format!("{monday}T08:00:00Z"));
        let mut posted = 0;
        for now in [at, at + Duration::seconds(3), at + Duration::seconds(9)] {
            let (x, y) = tokio::join!(tick(&a, now), tick(&b2, now));
            let all: Vec<Fired> = x.unwrap().into_iter().chain(y.unwrap()).collect();
            assert!(
                all.iter().all(|f| f.at == at && !f.late && f.missed == 0),
                "{all:?}"
            );
            posted += all.iter().filter(|f| f.posted).count();
        }
        assert_eq!(posted, 1, "firing {at} posted {posted} times");
        let rows = digest_rows(&a, "digest:weekly:%").await;
        assert_eq!(
            rows.len(),
            i + 1,
            "one terminal notice per firing: {rows:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_follow_dst_in_their_time_zone() {
    let daily = r#"
[[digests]]
name = "morning"
cron = "0 9 * * *"
timezone = "Europe/Amsterdam"
include = ["uptime"]

[[digests]]
name = "night"
cron = "30 2 * * *"
timezone = "Europe/Amsterdam"
include = ["uptime"]
"#;
    // Spring forward (2026-03-29 02:00 CET → 03:00 CEST) and fall back (2026-10-25 03:00
    // CEST → 02:00 CET): 09:00 moves by an hour in UTC; 02:30 does not exist in March (it
    // fires when the gap ends) and happens twice in October (it fires once, the first time).
    let cases = [
        (
            "2026-03-27T12:00:00Z",
            "2026-03-30T12:00:00Z",
            vec![
                ("night", "2026-03-28T01:30:00Z"),
                ("morning", "2026-03-28T08:00:00Z"),
                ("night", "2026-03-29T01:00:00Z"),
                ("morning", "2026-03-29T07:00:00Z"),
                ("night", "2026-03-30T00:30:00Z"),
                ("morning", "2026-03-30T07:00:00Z"),
            ],
        ),
        (
            "2026-10-24T12:00:00Z",
            "2026-10-26T12:00:00Z",
            vec![
                ("night", "2026-10-25T00:30:00Z"),
                ("morning", "2026-10-25T08:00:00Z"),
                ("night", "2026-10-26T01:30:00Z"),
                ("morning", "2026-10-26T08:00:00Z"),
            ],
        ),
    ];
    for (from, to, expected) in cases {
        let ws = Workspace::new(Backend::Sqlite, &config(daily), &[]).unwrap();
        let app = ws.app(&[]).await;
        let (mut now, end) = (t(from), t(to));
        let mut fired = Vec::new();
        while now <= end {
            for f in tick(&app, now).await.unwrap() {
                assert!(f.posted && !f.late && f.missed == 0, "{f:?} at {now}");
                fired.push((f.digest, f.at));
            }
            now += Duration::minutes(10);
        }
        let expected: Vec<(String, DateTime<Utc>)> = expected
            .into_iter()
            .map(|(n, at)| (n.to_owned(), t(at)))
            .collect();
        assert_eq!(fired, expected);
        assert_eq!(digest_rows(&app, "digest:%").await.len(), expected.len());
    }
}

both!(missed_firing_is_posted_once_marked_late, missed_firing);
async fn missed_firing(b: Backend) {
    let daily =
        "[[digests]]\nname = \"daily\"\ncron = \"0 9 * * *\"\ninclude = [\"deployments\"]\n";
    let Some(ws) = Workspace::new(b, &config(daily), &[]) else {
        return;
    };
    let app = ws.app(&[]).await;
    assert!(
        tick(&app, t("2026-11-20T10:00:00Z"))
            .await
            .unwrap()
            .is_empty()
    );
    // Down from Friday until Monday afternoon: three 09:00 UTC firings were missed.
    drop(app);
    let app = ws.app(&[]).await;
    let fired = tick(&app, t("2026-11-23T15:00:00Z")).await.unwrap();
    assert_eq!(
        fired,
        vec![Fired {
            digest: "daily".into(),
            at: t("2026-11-23T09:00:00Z"),
            late: true,
            missed: 2,
            posted: true,
        }]
    );
    for later in ["2026-11-23T15:00:05Z", "2026-11-23T16:00:00Z"] {
        assert!(tick(&app, t(later)).await.unwrap().is_empty());
    }
    let rows = digest_rows(&app, "digest:daily:%").await;
    assert_eq!(rows.len(), 1);
    let n = deckhand::domain::notice::Notice::from_json(&rows[0].2).unwrap();
    assert!(n.title.starts_with("Late digest daily"), "{}", n.title);
    let late = n.fields.iter().find(|f| f.label == "Late").unwrap();
    assert!(
        late.value.contains("posted 6 h 0 min late"),
        "{}",
        late.value
    );
    assert!(
        late.value.contains("2 earlier firings were missed"),
        "{}",
        late.value
    );
    // The next day's firing, on time, is not late.
    let next = tick(&app, t("2026-11-24T09:00:30Z")).await.unwrap();
    assert_eq!((next.len(), next[0].late, next[0].missed), (1, false, 0));
}

/// Deliver what the outbox holds with the real platform clients against the fake.
fn sender(app: &Arc<App>, stop: &CancelToken) -> tokio::task::JoinHandle<()> {
    let mut d = vec![deckhand::outbox::Terminal::boxed(false)];
    d.extend(deckhand::platform::deliverers(app));
    tokio::spawn(deckhand::outbox::run_sender(app.clone(), d, stop.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_is_uploaded_to_slack_and_attached_on_discord() {
    let ws = Workspace::new(
        Backend::Sqlite,
        &config(WEEKLY),
        &[("cost-fixed.toml", COST_CMD)],
    )
    .unwrap();
    write_costs(&ws, NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
    let fake = FakeApi::start();
    let (slack_url, discord_url) = (fake.url("/api"), fake.url("/api/v10"));
    let app = ws
        .app(&[
            ("SLACK_BOT_TOKEN", "xoxb-digest-test"),
            ("SLACK_API_URL", &slack_url),
            ("DISCORD_BOT_TOKEN", "discord-digest-test"),
            ("DISCORD_API_URL", &discord_url),
        ])
        .await;
    tick(&app, t("2026-11-22T12:00:00Z")).await.unwrap();
    let fired = tick(&app, t("2026-11-23T08:00:01Z")).await.unwrap();
    assert!(fired[0].posted);
    let stop = CancelToken::new();
    let task = sender(&app, &stop);
    let f = fake.clone();
    eventually(30, "the Slack upload and the Discord message", || {
        let f = f.clone();
        async move {
            let done = !f.ok_calls("/files.completeUploadExternal").is_empty()
                && !f.ok_calls("/channels/4242/messages").is_empty();
            done.then_some(())
        }
    })
    .await;
    stop.cancel();
    let _ = task.await;

    let post = &fake.ok_calls("/chat.postMessage")[0];
    assert_eq!(post.body["channel"], "CDIGEST");
    assert!(
        post.body["text"]
            .as_str()
            .unwrap()
            .contains("Digest weekly")
    );
    let get = &fake.ok_calls("/files.getUploadURLExternal")[0];
    let upload = fake
        .calls()
        .into_iter()
        .find(|c| c.path.starts_with("/upload/"))
        .unwrap();
    assert_eq!(png_size(&upload.raw), (800, 500));
    assert_eq!(get.body["length"], upload.raw.len().to_string());
    assert!(get.body["filename"].as_str().unwrap().ends_with(".png"));
    assert_eq!(upload.auth, None, "the bot token stays off the upload URL");
    let complete = &fake.ok_calls("/files.completeUploadExternal")[0];
    assert_eq!(complete.body["channel_id"], "CDIGEST");
    let files: Value = serde_json::from_str(complete.body["files"].as_str().unwrap()).unwrap();
    assert_eq!(files[0]["id"], upload.path.trim_start_matches("/upload/"));
    // In the thread of the digest message: the fake answers call n with ts 1700000000.n.
    let n = 1 + fake
        .calls()
        .iter()
        .position(|c| c.path.ends_with("/chat.postMessage"))
        .unwrap();
    assert_eq!(complete.body["thread_ts"], format!("1700000000.{n:06}"));

    let msg = &fake.ok_calls("/channels/4242/messages")[0];
    assert!(
        msg.content_type
            .as_deref()
            .unwrap()
            .starts_with("multipart/form-data")
    );
    let payload = &msg.body["payload_json"];
    let (name, bytes) = &msg.files[0];
    assert_eq!(payload["attachments"][0]["filename"], name.as_str());
    assert_eq!(
        payload["embeds"][0]["image"]["url"],
        format!("attachment://{name}")
    );
    assert!(
        payload["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("Digest weekly")
    );
    assert_eq!(png_size(bytes), (800, 500));
    assert_eq!(msg.body["files[0]"]["content_type"], "image/png");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_still_delivers_the_text() {
    let only_discord = WEEKLY.replace("slack = \"CDIGEST\", ", "");
    let ws = Workspace::new(
        Backend::Sqlite,
        &config(&only_discord),
        &[("cost-fixed.toml", COST_CMD)],
    )
    .unwrap();
    write_costs(&ws, NaiveDate::from_ymd_opt(2026, 11, 23).unwrap());
    let fake = FakeApi::start();
    let discord_url = fake.url("/api/v10");
    let app = ws
        .app(&[
            ("DISCORD_BOT_TOKEN", "discord-digest-test"),
            ("DISCORD_API_URL", &discord_url),
        ])
        .await;
    tick(&app, t("2026-11-22T12:00:00Z")).await.unwrap();
    tick(&app, t("2026-11-23T08:00:01Z")).await.unwrap();
    // Discord refuses the multipart request (e.g. 413 too large): the embed goes alone.
    fake.fail_next([Scripted::status(413)]);
    let stop = CancelToken::new();
    let task = sender(&app, &stop);
    let f = fake.clone();
    eventually(30, "the message without its chart", || {
        let f = f.clone();
        async move { (!f.ok_calls("/channels/4242/messages").is_empty()).then_some(()) }
    })
    .await;
    stop.cancel();
    let _ = task.await;
    let calls = fake.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0].status, 413);
    assert!(
        calls[0]
            .content_type
            .as_deref()
            .unwrap()
            .starts_with("multipart/")
    );
    assert!(
        calls[1].body["embeds"][0]["title"]
            .as_str()
            .unwrap()
            .contains("Digest weekly")
    );
    assert!(calls[1].files.is_empty());
}
