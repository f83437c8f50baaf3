//! The engine's REST API as the virtual customers use it. Every call is
//! timed and recorded under its operation's name; an answer that is not a
//! success is recorded under its error code (`error.code` of the envelope),
//! `http_<status>` when it has none, or `transport` when there was no
//! answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::stats::Recorder;

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    recorder: Arc<Recorder>,
}

/// One answer: its status, body and how long it took.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    pub fn error_code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }

    /// The order an answer names: a placed order's `id`, an accepted
    /// checkout's `order_id`, or an error's `details.order_id`.
    pub fn order_id(&self) -> Option<String> {
        if self.ok() {
            self.body["id"]
                .as_str()
                .or(self.body["order_id"].as_str())
                .map(str::to_owned)
        } else {
            self.body["error"]["details"]["order_id"]
                .as_str()
                .map(str::to_owned)
        }
    }
}

impl Api {
    pub fn new(base: &str, connections: usize, recorder: Arc<Recorder>) -> anyhow::Result<Api> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Api {
            http,
            base: base.trim_end_matches('/').to_owned(),
            recorder,
        })
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// One timed call. Transport failures are answers with status 0 here
    /// (recorded as `transport`), so a customer goes on after a refused
    /// connection instead of ending the run.
    pub async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.json::<Value>().await.unwrap_or(Value::Null);
                Answer { status, body }
            }
            Err(e) => Answer {
                status: StatusCode::from_u16(599).expect("a valid status"),
                body: json!({"error": {"code": "transport", "message": e.to_string()}}),
            },
        };
        let error = (!answer.ok()).then(|| {
            answer
                .error_code()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("http_{}", answer.status.as_u16()))
        });
        self.recorder.request(op, started.elapsed(), error);
        answer
    }

    /// A call during set-up, which must succeed.
    pub async fn expect(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let answer = self.call(op, method, path, token, body).await;
        if !answer.ok() {
            bail!("{op} {path}: {} {}", answer.status.as_u16(), answer.body);
        }
        Ok(answer.body)
    }

    pub async fn login(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body = self
            .expect(
                "setup",
                Method::POST,
                "/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await
            .context("logging in as the admin")?;
        token_of(&body)
    }

    pub async fn register(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let body = self
            .expect(
                "setup",
                Method::POST,
                "/auth/register",
                None,
                Some(json!({"email": email, "password": password, "name": "Bench customer"})),
            )
            .await?;
        token_of(&body)
    }

    /// The engine's Prometheus exposition, parsed into `name{labels}` →
    /// value (not recorded as an operation).
    pub async fn metrics(&self) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .context("reading /metrics")?
            .text()
            .await?;
        Ok(parse_prometheus(&text))
    }
}

fn token_of(body: &Value) -> anyhow::Result<String> {
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no access_token in {body}"))
}

/// Samples of the text exposition format; comments and histogram buckets
/// are skipped (their `_sum` and `_count` are kept).
pub fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            if name.contains("_bucket{") {
                return None;
            }
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_samples_are_parsed_without_buckets() {
        let text = "# HELP x\n# TYPE x counter\nhttp_requests_total{method=\"GET\"} 12\n\
                    lat_bucket{le=\"0.1\"} 3\nlat_sum 0.5\nlat_count 3\nup 1\n";
        let parsed = parse_prometheus(text);
        assert_eq!(parsed["http_requests_total{method=\"GET\"}"], 12.0);
        assert_eq!(parsed["lat_count"], 3.0);
        assert_eq!(parsed["up"], 1.0);
        assert!(!parsed.keys().any(|k| k.contains("_bucket")));
    }

    #[test]
    fn the_order_is_found_in_successes_and_errors() {
        let placed = Answer {
            status: StatusCode::CREATED,
            body: json!({"id": "o1", "status": "paid"}),
        };
        let accepted = Answer {
            status: StatusCode::ACCEPTED,
            body: json!({"order_id": "o2", "status": "pending"}),
        };
        let declined = Answer {
            status: StatusCode::PAYMENT_REQUIRED,
            body: json!({"error": {"code": "payment_declined", "details": {"order_id": "o3"}}}),
        };
        let refused = Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: json!({"error": {"code": "overloaded"}}),
        };
        assert_eq!(placed.order_id().as_deref(), Some("o1"));
        assert_eq!(accepted.order_id().as_deref(), Some("o2"));
        assert_eq!(declined.order_id().as_deref(), Some("o3"));
        assert_eq!(declined.error_code(), Some("payment_declined"));
        assert_eq!(refused.order_id(), None);
    }
}
