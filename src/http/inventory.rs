//! `/api/v1/inventory/{sku}` (admin): read stock, restock, adjust. Changes go
//! through the SKU's actor, which records them in the movements ledger and
//! emits `inventory.restocked` in the same transaction.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::path_sku;
use super::extract::Json;
use super::identity::AdminUser;
use super::schemas::ErrorEnvelope;
use crate::domain::inventory::Reservation;
use crate::inventory::{Inventory, SkuSnapshot, StockLoadError};

const REASON_MAX_CHARS: usize = 500;

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Inventory)]
struct InventoryBody {
    sku: String,
    on_hand: i64,
    reserved: i64,
    available: i64,
    /// Bumped by every change to the SKU's stock.
    version: i64,
    /// Open reservations, soonest to expire first.
    reservations: Vec<Reservation>,
}

impl From<SkuSnapshot> for InventoryBody {
    fn from(s: SkuSnapshot) -> Self {
        let mut reservations = s.reservations;
        reservations.sort_by_key(|r| r.expires_at);
        InventoryBody {
            sku: s.sku,
            on_hand: s.levels.on_hand,
            reserved: s.levels.reserved,
            available: s.levels.available(),
            version: s.version,
            reservations,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add; on_hand may not exceed 10^10.
    #[schema(minimum = 1, maximum = 1_000_000_000)]
    quantity: i64,
    #[schema(max_length = 500)]
    note: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    /// Non-zero units to add (positive) or remove (negative).
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000)]
    delta: i64,
    /// 1..=500 characters after trimming.
    #[schema(min_length = 1, max_length = 500)]
    reason: String,
}

/// Read from the database, which every engine process writes through.
#[utoipa::path(
    get,
    path = "/api/v1/inventory/{sku}",
    tag = "inventory",
    security(("bearer" = [])),
    params(("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product's sku")),
    responses(
        (status = 200, description = "The SKU's stock and open reservations", body = InventoryBody),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such product", body = ErrorEnvelope),
    )
)]
pub async fn get(
    _admin: AdminUser,
    inventory: web::Data<Inventory>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&sku)?;
    let snapshot = match inventory.stored(&sku).await {
        Ok(snapshot) => snapshot,
        Err(StockLoadError::UnknownSku) => return Err(ApiError::NotFound),
        Err(StockLoadError::Db(e)) => return Err(e.into()),
        Err(StockLoadError::Corrupt(e)) => return Err(ApiError::Internal(anyhow::anyhow!(e))),
    };
    Ok(HttpResponse::Ok().json(InventoryBody::from(snapshot)))
}

#[utoipa::path(
    post,
    path = "/api/v1/inventory/{sku}/restock",
    tag = "inventory",
    security(("bearer" = [])),
    params(("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product's sku")),
    request_body = Restock,
    responses(
        (status = 200, description = "The SKU's stock after the restock", body = InventoryBody),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such product", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`, also when on_hand would exceed the supported maximum", body = ErrorEnvelope),
    )
)]
pub async fn restock(
    _admin: AdminUser,
    inventory: web::Data<Inventory>,
    sku: web::Path<String>,
    Json(body): Json<Restock>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&sku)?;
    if body
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > REASON_MAX_CHARS)
    {
        return Err(ApiError::field(
            "note",
            format!("must be at most {REASON_MAX_CHARS} characters"),
        ));
    }
    let snapshot = inventory.restock(&sku, body.quantity, body.note).await?;
    Ok(HttpResponse::Ok().json(InventoryBody::from(snapshot)))
}

#[utoipa::path(
    post,
    path = "/api/v1/inventory/{sku}/adjust",
    tag = "inventory",
    security(("bearer" = [])),
    params(("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product's sku")),
    request_body = Adjust,
    responses(
        (status = 200, description = "The SKU's stock after the adjustment", body = InventoryBody),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such product", body = ErrorEnvelope),
        (status = 409, description = "`conflict`: on_hand would fall below what is reserved; `details: {on_hand, reserved, delta}`", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`, also when on_hand would exceed the supported maximum", body = ErrorEnvelope),
    )
)]
pub async fn adjust(
    _admin: AdminUser,
    inventory: web::Data<Inventory>,
    sku: web::Path<String>,
    Json(body): Json<Adjust>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&sku)?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > REASON_MAX_CHARS {
        return Err(ApiError::field(
            "reason",
            format!("must be 1-{REASON_MAX_CHARS} characters"),
        ));
    }
    let snapshot = inventory
        .adjust(&sku, body.delta, reason.to_owned())
        .await?;
    Ok(HttpResponse::Ok().json(InventoryBody::from(snapshot)))
}
