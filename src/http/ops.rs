//! Operations endpoints, outside `/api/v1`: liveness, readiness, metrics and
//! the supported API versions.

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use super::schemas::{ApiVersions, Health, Readiness};
use crate::health::HealthMonitor;

/// 200 while the process serves requests; says nothing about dependencies.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    responses((status = 200, description = "The process serves requests", body = Health))
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when the engine can do its work (the database is up), else 503.
/// Redis being down leaves the engine ready but `degraded`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "ops",
    responses(
        (status = 200, description = "Ready: the database is up (`ok`, or `degraded` when Redis is configured but down)", body = Readiness),
        (status = 503, description = "Not ready: the database is down (`unavailable`)", body = Readiness,
            headers(("Retry-After" = String, description = "Seconds to wait before retrying"))),
    )
)]
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

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "ops",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain", body = String))
)]
pub async fn metrics(handle: web::Data<PrometheusHandle>) -> HttpResponse {
    handle.run_upkeep();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(handle.render())
}

#[utoipa::path(
    get,
    path = "/api/versions",
    tag = "ops",
    responses((status = 200, description = "The supported API versions and their status", body = ApiVersions))
)]
pub async fn versions() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "versions": [
            { "version": "v1", "status": "stable", "base_path": "/api/v1" }
        ],
        "current": "v1"
    }))
}
