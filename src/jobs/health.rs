//! Health verification: poll an environment's health URL until it answers as expected.

use std::time::Duration;

use crate::config::EnvironmentConfig;

/// The result of a verification, in words for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthOutcome {
    pub ok: bool,
    /// "returning 200", or what went wrong: "returned 503", "reports version 9f8e7d6,
    /// expected abc1234", "unreachable: connection refused".
    pub detail: String,
}

/// What one answer says, judged against the expectations.
pub fn judge(
    status: u16,
    body: &str,
    expect_status: u16,
    expect_version: Option<&str>,
    version: Option<&str>,
) -> HealthOutcome {
    if status != expect_status {
        return HealthOutcome {
            ok: false,
            detail: format!("returned {status}, expected {expect_status}"),
        };
    }
    if let (Some(mode), Some(v)) = (expect_version, version) {
        let reported = if mode == "body" {
            body.contains(v).then(|| v.to_owned())
        } else {
            let field = mode.strip_prefix("json:").unwrap_or(mode);
            serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|j| j.pointer(&format!("/{}", field.replace('.', "/"))).cloned())
                .map(|x| {
                    x.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| x.to_string())
                })
        };
        match reported {
            Some(r) if r == v => {}
            Some(r) => {
                return HealthOutcome {
                    ok: false,
                    detail: format!("returning {status} but reports version {r}, expected {v}"),
                };
            }
            None => {
                return HealthOutcome {
                    ok: false,
                    detail: format!("returning {status} but does not report version {v}"),
                };
            }
        }
    }
    HealthOutcome {
        ok: true,
        detail: format!("returning {status}"),
    }
}

/// Poll `env.health_url` until it answers as expected or `env.health_timeout_seconds`
/// pass. Each request has its own timeout, so a hanging endpoint cannot stall the job.
pub async fn verify(
    http: &reqwest::Client,
    env: &EnvironmentConfig,
    version: Option<&str>,
) -> HealthOutcome {
    let Some(url) = &env.health_url else {
        return HealthOutcome {
            ok: true,
            detail: "not configured".into(),
        };
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(env.health_timeout_seconds);
    let per_request = Duration::from_secs(env.health_timeout_seconds.clamp(1, 5));
    let mut last;
    loop {
        last = check_once(http, url, per_request, env, version).await;
        if last.ok || tokio::time::Instant::now() + Duration::from_millis(200) >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !last.ok {
        last.detail = format!(
            "{} (gave up after {} s)",
            last.detail, env.health_timeout_seconds
        );
    }
    last
}

pub async fn check_once(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    env: &EnvironmentConfig,
    version: Option<&str>,
) -> HealthOutcome {
    match http.get(url).timeout(timeout).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Bodies of health endpoints are small; cap what we read anyway.
            let body = match resp.bytes().await {
                Ok(b) => String::from_utf8_lossy(&b[..b.len().min(64 * 1024)]).into_owned(),
                Err(_) => String::new(),
            };
            judge(
                status,
                &body,
                env.expect_status,
                env.expect_version.as_deref(),
                version,
            )
        }
        Err(e) => HealthOutcome {
            ok: false,
            detail: format!("unreachable: {}", describe(&e)),
        },
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        "request failed".into()
    }
}

#[cfg(test)]
mod tests {
    use super::judge;

    #[test]
    fn judges_status_and_version() {
        let ok = judge(
            200,
            r#"{"version":"abc1234"}"#,
            200,
            Some("json:version"),
            Some("abc1234"),
        );
        assert!(ok.ok);
        assert_eq!(ok.detail, "returning 200");
        let wrong = judge(
            200,
            r#"{"version":"9f8e7d6"}"#,
            200,
            Some("json:version"),
            Some("abc1234"),
        );
        assert!(!wrong.ok);
        assert!(
            wrong
                .detail
                .contains("reports version 9f8e7d6, expected abc1234")
        );
        assert!(!judge(503, "", 200, None, None).ok);
        assert!(judge(200, "build abc1234 ok", 200, Some("body"), Some("abc1234")).ok);
        assert!(!judge(200, "build zzz ok", 200, Some("body"), Some("abc1234")).ok);
        assert!(judge(200, "whatever", 200, None, Some("abc1234")).ok);
    }
}
