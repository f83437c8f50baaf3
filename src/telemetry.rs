//! Logs, traces and metrics.
//!
//! tracing: one span per request (see `http::request_telemetry`), JSON lines in
//! production, readable lines in development. Metrics: the `metrics` facade
//! with a Prometheus recorder. A metrics recorder is process-wide by nature,
//! so it is installed once per process, whatever the number of apps built.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use dashmap::DashMap;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter};

use crate::config::{LogFormat, TelemetrySettings};

pub const HTTP_REQUESTS: &str = "http_server_requests_seconds";
pub const HTTP_REQUESTS_MAX: &str = "http_server_requests_seconds_max";
pub const HEALTH_STATUS: &str = "service_health_status";
pub const REQUESTS_SHED: &str = "http_server_requests_shed_total";

/// Installs the global tracing subscriber. Later calls are no-ops, so tests
/// may call it freely.
pub fn init_tracing(settings: &TelemetrySettings) {
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|e| {
        eprintln!(
            "telemetry.log_level `{}` is invalid ({e}); using `info`",
            settings.log_level
        );
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
    };
    // Already installed (tests, or a second app in one process): keep it.
    drop(result);
}

/// The process's Prometheus handle, installing the recorder on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        let upkeep = handle.clone();
        // Histograms are drained into summaries by upkeep; keep it running.
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the metrics upkeep thread");
        }
        describe_metrics();
        handle
    })
}

fn describe_metrics() {
    metrics::describe_histogram!(
        HTTP_REQUESTS,
        metrics::Unit::Seconds,
        "HTTP requests served, by method, route template and status"
    );
    metrics::describe_gauge!(
        HTTP_REQUESTS_MAX,
        metrics::Unit::Seconds,
        "Slowest HTTP request since start, by method, route template and status"
    );
    metrics::describe_gauge!(HEALTH_STATUS, "1 when the component is up, 0 when down");
    metrics::describe_counter!(
        REQUESTS_SHED,
        "Requests refused with 503 because the engine was at max_in_flight"
    );
}

/// Records one served request.
pub fn record_http_request(method: &str, uri: &str, status: u16, elapsed: Duration) {
    static MAX: OnceLock<DashMap<(String, String, u16), f64>> = OnceLock::new();
    let seconds = elapsed.as_secs_f64();
    let status_label = status.to_string();
    let labels = [
        ("method", method.to_owned()),
        ("uri", uri.to_owned()),
        ("status", status_label),
    ];
    metrics::histogram!(HTTP_REQUESTS, &labels).record(seconds);
    let maxima = MAX.get_or_init(DashMap::new);
    let mut max = maxima
        .entry((method.to_owned(), uri.to_owned(), status))
        .or_insert(0.0);
    if seconds > *max {
        *max = seconds;
        metrics::gauge!(HTTP_REQUESTS_MAX, &labels).set(seconds);
    }
}
