//! Operations endpoints, outside `/api/v1`: liveness, readiness, metrics and
//! the supported API versions.

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::health::HealthMonitor;

/// 200 while the process serves requests; says nothing about dependencies.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when the engine can do its work (the database is up), else 503.
/// Redis being down leaves the engine ready but `degraded`.
pub async fn readyz(health: web::Data<HealthMonitor>) -> HttpResponse {
    let report = health.check().await;
    let status = if !report.is_ready() {
        "unavailable"
    } else if report.is_degraded() {
        "degraded"
    } else {
        "ok"
    };
    let body = json!({ "status": status, "components": report });
    if report.is_ready() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable()
            .insert_header(("Retry-After", "1"))
            .json(body)
    }
}

pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

pub async fn versions() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "versions": [
            { "version": "v1", "status": "stable", "base_path": "/api/v1" }
        ],
        "current": "v1"
    }))
}
