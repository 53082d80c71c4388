//! Prometheus instant queries over its HTTP API (`GET {url}/api/v1/query?query=…`). Every
//! way a query can fail to give one number (unreachable, timed out, an error answer, an
//! empty result, NaN) is "no data" with its reason, never a value.

use std::time::Duration;

/// Where to query and how.
pub struct PromQuery<'a> {
    pub http: &'a reqwest::Client,
    /// Base URL, without `/api/v1/query`.
    pub url: &'a str,
    /// Sent as `Authorization: Bearer …`; never logged or shown.
    pub token: Option<&'a str>,
    pub timeout: Duration,
}

/// The query's value: the first sample of a vector, or a scalar. `Err`: why there is no data,
/// in words without the URL or the token ("timed out", "empty result").
pub async fn instant(q: &PromQuery<'_>, query: &str) -> Result<f64, String> {
    let endpoint = format!("{}/api/v1/query", q.url.trim_end_matches('/'));
    let mut req = q
        .http
        .get(&endpoint)
        .query(&[("query", query)])
        .timeout(q.timeout);
    if let Some(t) = q.token {
        req = req.bearer_auth(t);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| crate::support::net::net_reason(&e))?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(q.timeout, resp.bytes())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| crate::support::net::net_reason(&e))?;
    parse(status, &body)
}

/// One answer of the query API, judged.
pub fn parse(status: u16, body: &[u8]) -> Result<f64, String> {
    let j: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| format!("Prometheus answered {status} with no JSON"))?;
    if j["status"] != "success" {
        let err = j["error"].as_str().unwrap_or("no reason given");
        let err: String = err.chars().take(200).collect();
        return Err(format!("query error ({status}): {err}"));
    }
    let data = &j["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .and_then(|r| r.first())
            .map(|s| &s["value"]),
        Some("scalar") => Some(&data["result"]),
        Some(other) => {
            return Err(format!(
                "the query gives a {other}; accepted: an instant vector or a scalar"
            ));
        }
        None => return Err("answer without a result type".into()),
    };
    let Some(sample) = sample else {
        return Err("empty result".into());
    };
    let v = sample[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .ok_or_else(|| "answer without a number".to_owned())?;
    if v.is_nan() {
        return Err("the value is NaN (no traffic?)".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::{PromQuery, instant, parse};

    #[tokio::test]
    async fn an_unreachable_prometheus_is_no_data() {
        // A port nobody listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}");
        let q = PromQuery {
            http: &http,
            url: &url,
            token: Some("never-shown-token"),
            timeout: std::time::Duration::from_secs(2),
        };
        let why = instant(&q, "up").await.unwrap_err();
        assert_eq!(why, "cannot connect");
        assert!(
            !why.contains("never-shown-token") && !why.contains(&url),
            "{why}"
        );
    }

    #[test]
    fn answers_are_values_or_no_data() {
        let ok = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(parse(200, ok), Ok(0.25));
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"3"]}}"#;
        assert_eq!(parse(200, scalar), Ok(3.0));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse(200, empty), Err("empty result".into()));
        let nan = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"NaN"]}]}}"#;
        assert!(parse(200, nan).is_err());
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#;
        assert_eq!(
            parse(400, bad),
            Err("query error (400): parse error at char 3".into())
        );
        assert!(parse(502, b"<html>").is_err());
    }
}
