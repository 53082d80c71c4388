//! The status pages over HTTP: hostile text renders as text on every page, secrets are
//! redacted, the log is paged and searchable, access modes (token, proxy, refused) hold,
//! pages are read-only, and chat reports link to them when `[ui] public_url` is set.
//! What a real browser shows is in `ui_browser`.

use crate::common::*;
use deckhand::app::App;

pub const INJECT: &str = "<script>alert(1)</script> <!channel>";
/// A value of a `runner.secret_env` variable, which pages must show as `[redacted]`.
pub const SECRET: &str = "sk_live_ui_page_secret_91";

/// Make [`SECRET`]'s variable a `[runner] secret_env` of the workspace.
pub fn with_secret(ws: &Workspace) {
    let p = ws.config_path();
    let text = std::fs::read_to_string(&p).unwrap().replacen(
        "[runner]\n",
        "[runner]\nsecret_env = [\"UI_TEST_SECRET\"]\n",
        1,
    );
    std::fs::write(p, text).unwrap();
}

/// A GET with optional headers: (status, headers, body).
pub async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, String) {
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut r = c.get(url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.text().await.unwrap())
}

/// Rows a browser or a page must show as text: a deployment of staging (a job, its log
/// lines, a verified deployment) whose version is hostile, an incident with a hostile
/// title, and a log line with the secret. Written as another writer (an old release, an
/// import) might have, since intake refuses such a version. Returns the job id.
pub async fn seed_hostile(app: &App) -> i64 {
    let now = deckhand::domain::time::now_ms();
    let version = INJECT;
    deckhand::on_db!(&app.db, p => {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (command, kind, environment, version, state, requested_by, platform, run_at, created_at, started_at, finished_at, result) \
             VALUES ('deploy', 'deploy', 'staging', $1, 'succeeded', $2, 'terminal', $3, $3, $3, $3, $4) RETURNING id",
        )
        .bind(version)
        .bind(format!("terminal:{INJECT}"))
        .bind(now)
        .bind(format!("Deployed {INJECT}"))
        .fetch_one(p)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO deployments (job_id, environment, version, kind, requested_by, status, verified, health, started_at, finished_at, duration_ms) \
             VALUES ($1, 'staging', $2, 'deploy', $3, 'verified', TRUE, $4, $5, $5, 10)",
        )
        .bind(id)
        .bind(version)
        .bind(format!("terminal:{INJECT}"))
        .bind(format!("returning 200 {INJECT}"))
        .bind(now)
        .execute(p)
        .await
        .unwrap();
        for (step, line) in [
            (INJECT.to_owned(), format!("printing {INJECT}")),
            ("work".to_owned(), format!("the key is {SECRET}")),
        ] {
            sqlx::query("INSERT INTO job_logs (job_id, step, stream, line, at) VALUES ($1, $2, 'stdout', $3, $4)")
                .bind(id)
                .bind(step)
                .bind(line)
                .bind(now)
                .execute(p)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO incidents (dedup_key, source, title, severity, environment, description, status, first_seen, last_seen) \
             VALUES ('ui-test', 'generic', $1, 'P2', 'staging', $2, 'firing', $3, $3)",
        )
        .bind(format!("disk full {INJECT}"))
        .bind(format!("see {SECRET}"))
        .bind(now)
        .execute(p)
        .await
        .unwrap();
        id
    })
}

/// Every page, for a job.
pub fn pages(job: i64) -> Vec<String> {
    vec![
        "/".into(),
        "/environments/staging".into(),
        format!("/jobs/{job}"),
        "/incidents".into(),
        "/audit".into(),
        "/audit?env=staging&command=lock".into(),
    ]
}

async fn hostile_text_is_text(backend: Backend) {
    let Some(ws) = Workspace::new(backend, "", &[]) else {
        return;
    };
    with_secret(&ws);
    let env = [("UI_TEST_SECRET", SECRET)];
    let server = Server::start(&ws, &env);
    let (code, out, err) = ws.run(&["lock", "staging", &format!("{INJECT} {SECRET}")]);
    assert_eq!(code, 0, "{out}{err}");
    let app = ws.app(&env).await;
    let job = seed_hostile(&app).await;
    for path in pages(job) {
        let (status, h, body) = get(&server.url(&path), &[]).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_security_headers(&h, &path);
        for raw in ["<script>alert", "<!channel>", SECRET] {
            assert!(!body.contains(raw), "{path} carries {raw:?} raw:\n{body}");
        }
        assert!(
            body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path} does not show the hostile text as text:\n{body}"
        );
        assert!(body.contains("&lt;!channel&gt;"), "{path}:\n{body}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'nonce-") && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
    }
    // The lock reason and the log line are redacted exactly as in chat.
    let (_, _, overview) = get(&server.url("/"), &[]).await;
    assert!(overview.contains("[redacted]"), "{overview}");
    let (_, _, job_page) = get(&server.url(&format!("/jobs/{job}")), &[]).await;
    assert!(job_page.contains("the key is [redacted]"), "{job_page}");
}
both!(
    hostile_text_renders_as_text_on_every_page,
    hostile_text_is_text
);

/// Only GET: anything else is 405 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_are_read_only() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let server = Server::start(&ws, &[]);
    let app = ws.app(&[]).await;
    let c = reqwest::Client::new();
    for path in [
        "/",
        "/environments/staging",
        "/jobs/1",
        "/incidents",
        "/audit",
    ] {
        for m in [
            reqwest::Method::POST,
            reqwest::Method::PUT,
            reqwest::Method::DELETE,
        ] {
            let r = c.request(m.clone(), server.url(path)).send().await.unwrap();
            assert_eq!(r.status().as_u16(), 405, "{m} {path}");
        }
    }
    assert!(app.db.recent_jobs(10).await.unwrap().is_empty());
    assert!(app.db.audit(None, 10).await.unwrap().is_empty());
    // Bad input is a clear 400 or 404, not a server error.
    for (path, want, says) in [
        ("/audit?env=nope", 400, "no environment named"),
        ("/audit?command=nope", 400, "no command named"),
        ("/environments/%3Cb%3E", 404, "no environment named"),
        ("/jobs/999", 404, "no job #999"),
        ("/jobs/abc", 400, ""),
        ("/audit?before=abc", 400, ""),
    ] {
        let (s, _, body) = get(&server.url(path), &[]).await;
        assert_eq!(s, want, "{path}: {body}");
        assert!(body.contains(says), "{path}: {body}");
        assert!(!body.contains("<b>"), "{path}: {body}");
    }
}

/// A command on an environment that prints `n` numbered lines.
fn chatty(n: usize) -> String {
    format!(
        r#"name = "chatty"
description = "Prints numbered lines"
kind = "custom"
[[args]]
name = "environment"
kind = "environment"
[roles]
"*" = "everyone"
[[steps]]
name = "work"
argv = ["sh", "-c", "i=1; while [ $i -le {n} ]; do echo line-$i; i=$((i+1)); done"]
"#
    )
}

async fn log_paged_and_searched(backend: Backend) {
    let Some(ws) = Workspace::new(backend, "", &[("chatty.toml", &chatty(1200))]) else {
        return;
    };
    let server = Server::start(&ws, &[]);
    let (code, out, err) = ws.run(&["chatty", "staging"]);
    assert_eq!(code, 0, "{out}{err}");
    let app = ws.app(&[]).await;
    let job = app.db.recent_jobs(1).await.unwrap()[0].id;
    let (_, _, first) = get(&server.url(&format!("/jobs/{job}")), &[]).await;
    assert!(first.contains(">1200</span> lines"), "the line count");
    assert!(first.contains(">line-500<") && !first.contains(">line-501<"));
    assert!(first.contains("▶ work"), "the step boundary is marked");
    // The next page starts where the first ended.
    let next = first
        .split("href=\"")
        .find(|s| s.contains("?after=") && s.contains("Next 500"))
        .and_then(|s| s.split('"').next())
        .expect("a link to the next page")
        .replace("&amp;", "&");
    let (_, _, second) = get(&server.url(&next), &[]).await;
    assert!(second.contains(">line-501<") && second.contains(">line-1000<"));
    assert!(!second.contains(">line-500<") && !second.contains(">line-1001<"));
    // Searching finds the lines containing the text, case-insensitively; `%` and `_` are
    // literal.
    let (_, _, found) = get(&server.url(&format!("/jobs/{job}?q=LINE-119")), &[]).await;
    let hits = found.matches(">line-119").count();
    assert_eq!(hits, 11, "line-119 and line-1190..1199: {found}");
    let (_, _, none) = get(&server.url(&format!("/jobs/{job}?q=line%25")), &[]).await;
    assert!(none.contains("No line matches"), "{none}");
}
both!(log_is_paged_and_searchable, log_paged_and_searched);

async fn audit_filtered(backend: Backend) {
    let Some(ws) = Workspace::new(backend, "", &[]) else {
        return;
    };
    let server = Server::start(&ws, &[]);
    assert_eq!(ws.run(&["deploy", "staging", "abc1234"]).0, 0);
    assert_eq!(ws.run(&["lock", "production", "freeze"]).0, 0);
    let all = get(&server.url("/audit"), &[]).await.2;
    assert!(all.contains("freeze") && all.contains("abc1234"), "{all}");
    let prod = get(&server.url("/audit?env=production"), &[]).await.2;
    assert!(
        prod.contains("freeze") && !prod.contains("abc1234"),
        "{prod}"
    );
    let deploys = get(&server.url("/audit?command=deploy"), &[]).await.2;
    assert!(
        deploys.contains("abc1234") && !deploys.contains("freeze"),
        "{deploys}"
    );
    let person = get(&server.url("/audit?person=terminal%3Aoperator"), &[])
        .await
        .2;
    assert!(
        person.contains("abc1234") && person.contains("freeze"),
        "{person}"
    );
    let nobody = get(&server.url("/audit?person=slack%3AT1%3AU9"), &[])
        .await
        .2;
    assert!(nobody.contains("No events match"), "{nobody}");
}
both!(
    audit_filters_by_environment_person_and_command,
    audit_filtered
);

const UI_TOKEN: &str = "ui-token-7f3a9c1e55d24b08";

/// `auth = "token"` on a listener that is not loopback: no token, no data; the token once,
/// then an HttpOnly SameSite=Strict cookie that is not the token; the token is never in
/// the server's output or a page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_on_a_public_listener() {
    let ws = Workspace::new(Backend::Sqlite, "\n[ui]\nauth = \"token\"\n", &[]).unwrap();
    let env = [("DECKHAND_UI_TOKEN", UI_TOKEN), ("RUST_LOG", "trace")];
    let server = Server::start_on(&ws, &env, "0.0.0.0");
    assert_eq!(ws.run(&["deploy", "staging", "abc1234"]).0, 0);
    let mut bodies = Vec::new();
    for path in [
        "/",
        "/environments/staging",
        "/jobs/1",
        "/jobs/1/events",
        "/incidents",
        "/audit",
    ] {
        let (s, h, body) = get(&server.url(path), &[]).await;
        assert_eq!(s, 401, "{path}: {body}");
        assert!(
            !body.contains("abc1234") && !body.contains("data-env"),
            "{path}: {body}"
        );
        assert!(h.get("set-cookie").is_none());
        bodies.push(body);
    }
    let (s, _, body) = get(&server.url("/?token=not-the-token"), &[]).await;
    assert_eq!(s, 401);
    assert!(body.contains("not right") && !body.contains("abc1234"));
    // The right token: a cookie, and the same address without the token.
    let (s, h, _) = get(
        &server.url(&format!("/audit?env=staging&token={UI_TOKEN}")),
        &[],
    )
    .await;
    assert_eq!(s, 303);
    assert_eq!(h["location"], "/audit?env=staging");
    let cookie = h["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains(UI_TOKEN),
        "the cookie is not the token: {cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_owned();
    for path in [
        "/",
        "/environments/staging",
        "/jobs/1",
        "/incidents",
        "/audit",
    ] {
        let (s, _, body) = get(&server.url(path), &[("cookie", &pair)]).await;
        assert_eq!(s, 200, "{path}: {body}");
        bodies.push(body);
    }
    assert!(bodies.iter().any(|b| b.contains("abc1234")));
    // A cookie that is nearly right is not.
    let mut wrong = pair.clone();
    wrong.pop();
    wrong.push('x');
    assert_eq!(get(&server.url("/"), &[("cookie", &wrong)]).await.0, 401);
    for b in &bodies {
        assert!(!b.contains(UI_TOKEN), "a page shows the token: {b}");
    }
    let log = server.output();
    assert!(log.contains("status pages"), "{log}");
    assert!(
        !log.contains(UI_TOKEN),
        "the server's output carries the token:\n{log}"
    );
    // `serve` does not start with auth = "token" and no usable token.
    let out = ws
        .cmd(&["serve", "--listen", &format!("0.0.0.0:{}", free_port())])
        .env("DECKHAND_UI_TOKEN", "short-one")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success() && text.contains("DECKHAND_UI_TOKEN, at least 16"),
        "{text}"
    );
    assert!(!text.contains("short-one"), "{text}");
}

/// `auth = "proxy"`: identity headers count only from `trusted_proxies`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_auth_believes_only_trusted_addresses() {
    let untrusted = "\n[ui]\nauth = \"proxy\"\ntrusted_proxies = [\"10.9.9.9\"]\n";
    let ws = Workspace::new(Backend::Sqlite, untrusted, &[]).unwrap();
    let server = Server::start_on(&ws, &[], "0.0.0.0");
    for h in ["x-forwarded-user", "x-auth-request-email"] {
        let (s, _, body) = get(&server.url("/"), &[(h, "alice@example.com")]).await;
        assert_eq!(s, 401, "{h} from an untrusted address is ignored: {body}");
        assert!(!body.contains("data-env"), "{body}");
    }
    drop(server);
    let trusted = "\n[ui]\nauth = \"proxy\"\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    let ws = Workspace::new(Backend::Sqlite, trusted, &[]).unwrap();
    let server = Server::start_on(&ws, &[], "0.0.0.0");
    assert_eq!(get(&server.url("/"), &[]).await.0, 401, "no user, no page");
    let (s, _, body) = get(&server.url("/"), &[("x-forwarded-user", "<b>alice</b>")]).await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("data-env=\"staging\""));
    assert!(
        body.contains("&lt;b&gt;alice&lt;/b&gt;") && !body.contains("<b>alice"),
        "{body}"
    );
    let (s, _, _) = get(
        &server.url("/audit"),
        &[("x-auth-request-email", "bob@example.com")],
    )
    .await;
    assert_eq!(s, 200);
}

/// A listener that is not loopback with no `[ui] auth`: the pages refuse, saying why; the
/// rest of the server works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_listener_without_auth_serves_no_data() {
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let server = Server::start_on(&ws, &[], "0.0.0.0");
    assert_eq!(ws.run(&["deploy", "staging", "abc1234"]).0, 0);
    for path in [
        "/",
        "/environments/staging",
        "/jobs/1",
        "/jobs/1/events",
        "/incidents",
        "/audit",
    ] {
        let (s, _, body) = get(&server.url(path), &[]).await;
        assert_eq!(s, 403, "{path}");
        assert!(body.contains("[ui] auth is not set"), "{body}");
        assert!(!body.contains("abc1234"), "{body}");
    }
    assert_eq!(get(&server.url("/health"), &[]).await.0, 200);
    assert!(
        server.output().contains("status pages: refused"),
        "{}",
        server.output()
    );
}

/// With `[ui] public_url`, job and lock reports link to their pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_reports_link_to_the_pages() {
    let cfg = "\n[ui]\npublic_url = \"https://deckhand.example.com/\"\n";
    let ws = Workspace::new(Backend::Sqlite, cfg, &[]).unwrap();
    let (code, out, err) = ws.run(&["deploy", "staging", "abc1234"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Page:") && out.contains("https://deckhand.example.com/jobs/1"),
        "{out}"
    );
    let app = ws.app(&[]).await;
    let bodies = app.db.newest_job_notices(1, 20).await.unwrap();
    let last = deckhand::domain::notice::Notice::from_json(&bodies[0]).unwrap();
    assert_eq!(
        last.fields
            .last()
            .map(|f| (f.label.as_str(), f.value.as_str())),
        Some(("Page", "https://deckhand.example.com/jobs/1"))
    );
    let (code, out, _) = ws.run(&["lock", "staging", "release freeze"]);
    assert_eq!(code, 0, "{out}");
    let lock: String = deckhand::on_db!(&app.db, p => {
        sqlx::query_scalar("SELECT body FROM outbox WHERE thread_key = 'lock:staging'")
            .fetch_one(p)
            .await
            .unwrap()
    });
    assert!(
        lock.contains("https://deckhand.example.com/environments/staging"),
        "{lock}"
    );
    // Without it, no link.
    let ws = Workspace::new(Backend::Sqlite, "", &[]).unwrap();
    let (_, out, _) = ws.run(&["deploy", "staging", "abc1234"]);
    assert!(!out.contains("Page:"), "{out}");
}

async fn uptime_counted(backend: Backend) {
    let Some(ws) = Workspace::new(backend, "\n[probes]\nenabled = false\n", &[]) else {
        return;
    };
    let server = Server::start(&ws, &[]);
    let app = ws.app(&[]).await;
    let day = 86_400_000i64;
    let today = deckhand::domain::time::now_ms() / day * day;
    let probe = |at: i64, ok: bool| {
        let db = app.db.clone();
        async move {
            deckhand::on_db!(&db, p => {
                sqlx::query(
                    "INSERT INTO probe_results (target, environment, at, ok, status, latency_ms) \
                     VALUES ('staging', 'staging', $1, $2, 200, 5)",
                )
                .bind(at)
                .bind(ok)
                .execute(p)
                .await
                .unwrap();
            })
        }
    };
    // Yesterday 3 of 4 good; today 1 of 1; nothing older than the week counts.
    for ok in [true, true, true, false] {
        probe(today - day + 1000, ok).await;
    }
    probe(today + 10, true).await;
    probe(today - 8 * day, false).await;
    let card = |body: &str| {
        body.split("data-env=\"staging\"")
            .nth(1)
            .unwrap()
            .split("</section>")
            .next()
            .unwrap()
            .to_owned()
    };
    let first = card(&get(&server.url("/"), &[]).await.2);
    assert!(first.contains("80.00 %"), "4 of 5: {first}");
    assert!(first.contains(": 75.00 %</title>") && first.contains(": 100.00 %</title>"));
    // Today's results are counted on every request (past days come from the cache).
    probe(today + 20, false).await;
    let second = card(&get(&server.url("/"), &[]).await.2);
    assert!(second.contains("66.67 %"), "4 of 6: {second}");
    let env = get(&server.url("/environments/staging"), &[]).await.2;
    assert!(env.contains("57.14 %"), "30 days, 4 of 7: {env}");
}
both!(uptime_is_counted_by_day, uptime_counted);
