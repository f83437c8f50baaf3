//! `/api/v1/inventory/{sku}` (admin): read stock, restock, adjust. Changes go
//! through the SKU's actor, which records them in the movements ledger and
//! emits `inventory.restocked` in the same transaction.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::Json;
use super::identity::AdminUser;
use super::products::path_sku;
use crate::actors::sku_batch::{self, LoadError};
use crate::actors::{Inventory, SkuSnapshot};
use crate::db::Database;
use crate::domain::inventory::Reservation;

const REASON_MAX_CHARS: usize = 500;

#[derive(Debug, Serialize)]
struct InventoryBody {
    sku: String,
    on_hand: i64,
    reserved: i64,
    available: i64,
    version: i64,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    quantity: i64,
    note: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adjust {
    delta: i64,
    reason: String,
}

/// Read from the database, which every engine process writes through.
pub async fn get(
    _admin: AdminUser,
    db: web::Data<Database>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&sku)?;
    let committed = match sku_batch::load(&db, sku.as_str()).await {
        Ok(committed) => committed,
        Err(LoadError::UnknownSku) => return Err(ApiError::NotFound),
        Err(LoadError::Db(e)) => return Err(e.into()),
        Err(LoadError::Corrupt(e)) => return Err(ApiError::Internal(anyhow::anyhow!(e))),
    };
    let snapshot = SkuSnapshot {
        sku: sku.as_str().to_owned(),
        levels: committed.stock.levels(),
        version: committed.version,
        reservations: committed.stock.reservations().cloned().collect(),
    };
    Ok(HttpResponse::Ok().json(InventoryBody::from(snapshot)))
}

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
