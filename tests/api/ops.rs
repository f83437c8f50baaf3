//! Operations endpoints: health, readiness, versions and Prometheus metrics.

use std::collections::HashMap;

use crate::backend_test;
use crate::support::Backend;

backend_test! {
    async fn healthz_is_200_ok(app) {
        let reply = app.get("/healthz", None).await;
        reply.assert_status(200);
        assert_eq!(reply.body, serde_json::json!({"status": "ok"}));
    }
}

backend_test! {
    async fn readyz_reports_each_component(app) {
        let reply = app.get("/readyz", None).await;
        reply.assert_status(200);
        assert_eq!(reply.body["status"], "ok");
        assert_eq!(reply.body["components"]["database"], "up");
        let redis = match app.backend {
            Backend::Postgres => "up",
            Backend::Sqlite => "disabled",
        };
        assert_eq!(reply.body["components"]["redis"], redis);
    }
}

backend_test! {
    async fn api_versions_lists_v1(app) {
        let reply = app.get("/api/versions", None).await;
        reply.assert_status(200);
        assert_eq!(reply.body["versions"][0]["version"], "v1");
        assert_eq!(reply.body["versions"][0]["status"], "stable");
    }
}

/// One sample of Prometheus text format: name, labels, value.
#[derive(Debug)]
pub struct Sample {
    pub name: String,
    pub labels: HashMap<String, String>,
    pub value: f64,
}

/// A strict parser for the subset of the text format the engine emits;
/// any line it cannot read fails the test.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment line: {line}");
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}"));
                let mut labels = HashMap::new();
                for pair in split_labels(body) {
                    let (k, v) = pair
                        .split_once('=')
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label: {line}"));
                    labels.insert(k.to_owned(), v.to_owned());
                }
                (name.to_owned(), labels)
            }
            None => (series.to_owned(), HashMap::new()),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

fn split_labels(body: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < body.len() {
        parts.push(&body[start..]);
    }
    parts
}

backend_test! {
    async fn metrics_parse_and_label_requests_by_route_template(app) {
        let token = app.customer_token().await;
        let count = |samples: &[Sample]| {
            samples
                .iter()
                .find(|s| {
                    s.name == "http_server_requests_seconds_count"
                        && s.labels.get("uri").map(String::as_str) == Some("/api/v1/users/me")
                        && s.labels.get("method").map(String::as_str) == Some("GET")
                        && s.labels.get("status").map(String::as_str) == Some("200")
                })
                .map_or(0.0, |s| s.value)
        };
        let before = count(&parse_prometheus(&app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap()));
        for _ in 0..3 {
            app.get("/api/v1/users/me", Some(&token)).await.assert_status(200);
        }
        app.get("/api/v1/no-such-thing/0191aaaa-raw-path-should-not-appear", None).await.assert_status(404);

        let reply = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(reply.status(), 200);
        assert!(reply.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
        let samples = parse_prometheus(&reply.text().await.unwrap());
        // Counts only grow, whatever other tests in this process do meanwhile.
        assert!(count(&samples) >= before + 3.0, "the three requests were not counted");

        for name in [
            "http_server_requests_seconds_count",
            "http_server_requests_seconds_sum",
            "http_server_requests_seconds_max",
        ] {
            let me = samples.iter().find(|s| {
                s.name == name
                    && s.labels.get("uri").map(String::as_str) == Some("/api/v1/users/me")
                    && s.labels.get("method").map(String::as_str) == Some("GET")
                    && s.labels.get("status").map(String::as_str) == Some("200")
            });
            assert!(me.is_some_and(|s| s.value > 0.0), "{name} for GET /api/v1/users/me 200 missing");
        }
        assert!(samples.iter().all(|s| !s.labels.values().any(|v| v.contains("raw-path"))), "raw paths leaked into labels");
        assert!(samples.iter().any(|s| s.labels.get("uri").map(String::as_str) == Some("UNMATCHED")));
        let db = samples.iter().find(|s| s.name == "service_health_status" && s.labels.get("component").map(String::as_str) == Some("database"));
        assert!(db.is_some(), "service_health_status{{component=\"database\"}} missing");
    }
}

backend_test! {
    async fn made_up_methods_share_one_metric_label(app) {
        let method = reqwest::Method::from_bytes(b"BREW").unwrap();
        app.call(method, "/api/v1/whatever", None, None).await;
        let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(!text.contains("BREW"), "client-chosen methods must not become label values");
        assert!(parse_prometheus(&text).iter().any(|s| s.labels.get("method").map(String::as_str) == Some("OTHER")));
    }
}
