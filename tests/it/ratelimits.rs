//! Rate budgets: `/slack`, `/discord` and `/alerts` each have their own; requests failing
//! their signature or token check spend a per-address bucket of their own and never the
//! budget of signed ones; signed Slack traffic counts per team and user, so one workspace's
//! many people behind Slack's few egress addresses are not refused, while one person over
//! their limit still is.

use std::time::Duration;

use crate::common::chat::*;
use crate::common::*;

/// Three at once, then one every ten seconds, per client.
const TIGHT: &[(&str, &str)] = &[
    ("DECKHAND__SERVER__RATE_LIMIT_PER_MINUTE", "6"),
    ("DECKHAND__SERVER__RATE_LIMIT_BURST", "3"),
];

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A Slack command signed with the wrong secret: (status, Retry-After if any).
async fn forged_slack(c: &Chat, path: &str, client: &str) -> (u16, Option<u64>) {
    let body = slash("T0TEAM", "UFORGER", "help", "f", &c.fake);
    let r = c.slack_as(path, &body, "not-the-secret", client).await;
    let after = r
        .headers()
        .contains_key("retry-after")
        .then(|| retry_after(&r));
    (r.status().as_u16(), after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_group_has_its_own_budget() {
    let c = Chat::start(Backend::Sqlite, "", &[], TIGHT).unwrap();
    let ip = "10.2.0.1";
    // A sender with the wrong alert token uses up its /alerts bucket...
    for i in 0..3 {
        assert_eq!(
            c.alert("wrong-token", ip).await,
            401,
            "alert {i} is within the burst"
        );
    }
    assert_eq!(c.alert("wrong-token", ip).await, 429);
    assert_eq!(
        c.alert(ALERT_TOKEN, ip).await,
        429,
        "checked before the body is read"
    );
    // ...and nothing of /slack or /discord: still 401 there, not 429.
    assert_eq!(forged_slack(&c, "/slack/commands", ip).await, (401, None));
    let forger = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
    let ping = serde_json::json!({"type": 1, "id": "p"});
    assert_eq!(c.discord_as(&ping, &forger, ip).await.status(), 401);
    // Signed Slack traffic from that address goes through.
    let (status, text) = c
        .command(&slash("T0TEAM", "U1", "help", "h1", &c.fake), ip)
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Commands you may run"), "{text}");
    // Both Slack routes share Slack's bucket: two more failures use it up.
    assert_eq!(forged_slack(&c, "/slack/interactions", ip).await.0, 401);
    assert_eq!(forged_slack(&c, "/slack/commands", ip).await.0, 401);
    let (status, after) = forged_slack(&c, "/slack/interactions", ip).await;
    assert_eq!(status, 429);
    assert!((1..=10).contains(&after.unwrap()), "Retry-After {after:?}");
    // Discord still has its own.
    assert_eq!(c.discord_as(&ping, &forger, ip).await.status(), 401);
    let (status, _) = c.discord(&ping, ip).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_requests_do_not_spend_the_signed_budget() {
    let c = Chat::start(Backend::Sqlite, "", &[], TIGHT).unwrap();
    // A forger floods from its address: three 401s, then 429s.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(forged_slack(&c, "/slack/commands", "10.2.0.9").await.0);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    // Slack's own address, and the user's budget, are untouched: the user's full burst
    // goes through, and then their own limit applies (429 with Retry-After).
    let slack_ip = "10.2.0.5";
    for i in 0..3 {
        let body = slash("T0TEAM", "UALICE", "help", &format!("a{i}"), &c.fake);
        assert_eq!(c.command(&body, slack_ip).await.0, 200, "command {i}");
    }
    let body = slash("T0TEAM", "UALICE", "help", "a3", &c.fake);
    let r = c
        .slack_as("/slack/commands", &body, SLACK_SECRET, slack_ip)
        .await;
    assert_eq!(r.status(), 429);
    assert!((1..=10).contains(&retry_after(&r)));
    // Another person of the same team, through the same address, has their own budget;
    // the same user id in another team is another person.
    let body = slash("T0TEAM", "UBOB", "help", "b0", &c.fake);
    assert_eq!(c.command(&body, slack_ip).await.0, 200);
    let body = slash("T0SISTER", "UALICE", "help", "s0", &c.fake);
    assert_eq!(c.command(&body, slack_ip).await.0, 200);
    // Signed requests did not spend the address's bucket for failed ones either.
    for _ in 0..3 {
        assert_eq!(forged_slack(&c, "/slack/commands", slack_ip).await.0, 401);
    }
    // Discord: the same per-person limit for signed interactions.
    let mut statuses = Vec::new();
    for i in 0..4 {
        let body = interaction(&format!("d{i}"), Some("31337"), "1001", "help", &[]);
        statuses.push(c.discord(&body, "10.2.0.6").await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let m = parse_metrics(&http_get(&c.server.url("/metrics")).unwrap().1);
    assert!(m["deckhand_http_rejected_total{reason=\"rate_limited\"}"] >= 9.0);
}

/// 300 people of one workspace at 100 commands a second, all through one Slack egress
/// address, with the default limits: none is refused (the per-address limit of before
/// refused all but the first 30). One of them sending 31 at once is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_workspace_at_100_per_second_is_not_refused() {
    let c = std::sync::Arc::new(Chat::start(Backend::Sqlite, "", &[], &[]).unwrap());
    let slack_ip = "10.2.0.7";
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 0..300 {
        tick.tick().await;
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = slash(
                "T0TEAM",
                &format!("U{i:04}"),
                "help",
                &format!("w{i}"),
                &c.fake,
            );
            c.command(&body, slack_ip).await.0
        }));
    }
    let mut refused = 0;
    for t in tasks {
        let status = t.await.unwrap();
        assert!(status == 200 || status == 429, "{status}");
        refused += usize::from(status == 429);
    }
    assert_eq!(
        refused, 0,
        "signed commands of many people refused as one client"
    );
    // The per-person limit (burst 30) still applies.
    let mut statuses = Vec::new();
    for i in 0..31 {
        let body = slash("T0TEAM", "UFAST", "help", &format!("u{i}"), &c.fake);
        statuses.push(c.command(&body, slack_ip).await.0);
    }
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[30], 429);
}
