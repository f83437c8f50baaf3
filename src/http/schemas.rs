//! Response bodies that several routes share and that exist only on the
//! wire (the error envelope, the 202 bodies, health and versions), with
//! their OpenAPI schemas. Handlers and the document (`http::openapi`) both
//! use them; they use neither.

use serde::Serialize;
use utoipa::openapi::schema::Schema;
use utoipa::ToSchema;

use crate::health::HealthReport;
use crate::orders::views::string_enum;

/// The error envelope every error response has.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable, snake_case: what went wrong, for programs. Each response
    /// lists the codes it can carry.
    #[schema(pattern = "^[a-z][a-z_]*$", example = "validation_failed")]
    pub code: String,
    /// For humans; may change.
    pub message: String,
    /// Always an object, empty when there is nothing to add:
    /// `validation_failed` has `fields` (field name -> reason),
    /// `rate_limited` has `retry_after_s`, `payload_too_large` has
    /// `limit_bytes`, the order refusals name `order_id` and what was refused.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// 202 of a checkout (or `POST /orders`) whose saga goes on.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutAccepted {
    #[schema(format = Uuid)]
    pub order_id: String,
    #[schema(schema_with = pending_status)]
    pub status: String,
}

/// 202 of `POST /sagas/{id}/resume`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SagaResumed {
    #[schema(format = Uuid)]
    pub order_id: String,
    #[schema(schema_with = running_state)]
    pub state: String,
}

/// 200 of an accepted Stoq event.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoqAck {
    /// The Stoq event id.
    pub id: String,
    /// `applied` (a restock), `recorded` (another type), `duplicate` (seen
    /// before: acknowledged, not applied again).
    #[schema(schema_with = stoq_status)]
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(schema_with = ok_status)]
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`, `degraded` (Redis configured but down) or `unavailable` (the
    /// database is down: 503).
    #[schema(schema_with = readiness_status)]
    pub status: String,
    pub components: HealthReport,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiVersion {
    pub version: String,
    pub status: String,
    pub base_path: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiVersions {
    pub versions: Vec<ApiVersion>,
    pub current: String,
}

fn pending_status() -> Schema {
    string_enum(["pending"])
}

fn running_state() -> Schema {
    string_enum(["running"])
}

fn stoq_status() -> Schema {
    string_enum(["applied", "recorded", "duplicate"])
}

fn ok_status() -> Schema {
    string_enum(["ok"])
}

fn readiness_status() -> Schema {
    string_enum(["ok", "degraded", "unavailable"])
}
