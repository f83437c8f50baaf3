//! Inbound events from the Stoq inventory system, once their signature and
//! envelope have been checked at the edge. Every event is recorded in
//! `events` once per Stoq event id; a restock (`stoq:restock-modal:submitted`
//! with `data: {sku, quantity}`) is recorded in the same transaction as the
//! stock change, so a redelivered event is acknowledged and never applied
//! twice. A restock that cannot apply (bad data, unknown SKU) is not
//! recorded, so a corrected redelivery applies.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{EventRestock, Inventory, InventoryError};
use crate::db::events::{self, NewEventRow};
use crate::db::DbError;
use crate::domain::inventory::{Sku, MAX_STOCK_CHANGE};
use crate::domain::FieldError;

/// The event type that restocks.
pub const RESTOCK_SUBMITTED: &str = "stoq:restock-modal:submitted";
const SOURCE: &str = "stoq";

/// A Stoq event as the edge parsed it.
#[derive(Debug, Clone)]
pub struct StoqEvent {
    /// Stoq's event id: an event is applied once per id.
    pub id: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub data: serde_json::Value,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoqOutcome {
    /// A restock, applied.
    Applied,
    /// Another type, recorded for the record.
    Recorded,
    /// Seen before: acknowledged, not applied again.
    Duplicate,
}

impl StoqOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            StoqOutcome::Applied => "applied",
            StoqOutcome::Recorded => "recorded",
            StoqOutcome::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoqError {
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    #[error(transparent)]
    Inventory(InventoryError),
    #[error(transparent)]
    Db(#[from] DbError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockData {
    sku: String,
    quantity: i64,
}

impl Inventory {
    /// Records `event` once, and applies it if it is a restock.
    pub async fn receive_stoq_event(&self, event: StoqEvent) -> Result<StoqOutcome, StoqError> {
        let row = NewEventRow {
            id: uuid::Uuid::now_v7().to_string(),
            source: SOURCE.to_owned(),
            external_id: Some(event.id.clone()),
            name: event.event_type.clone(),
            user_id: None,
            properties: event.data.to_string(),
            occurred_at: event.occurred_at.naive_utc(),
            received_at: Utc::now().naive_utc(),
        };
        if event.event_type != RESTOCK_SUBMITTED {
            let mut conn = self.inner.db.conn().await?;
            let new = events::insert_if_new(&mut conn, &row)
                .await
                .map_err(DbError::from)?;
            return Ok(if new {
                StoqOutcome::Recorded
            } else {
                StoqOutcome::Duplicate
            });
        }
        let data: RestockData = serde_json::from_value(event.data).map_err(|e| {
            StoqError::Invalid(FieldError::new(
                "data",
                format!("must be {{sku, quantity}}: {e}"),
            ))
        })?;
        let sku = Sku::parse(&data.sku)
            .map_err(|e| StoqError::Invalid(FieldError::new("data.sku", e.message)))?;
        if !(1..=MAX_STOCK_CHANGE).contains(&data.quantity) {
            return Err(StoqError::Invalid(FieldError::new(
                "data.quantity",
                format!("must be between 1 and {MAX_STOCK_CHANGE}"),
            )));
        }
        let note = Some(format!("stoq event {}", event.id));
        match self.restock_for_event(&sku, data.quantity, note, row).await {
            Ok(EventRestock::Applied(_)) => Ok(StoqOutcome::Applied),
            Ok(EventRestock::Duplicate) => Ok(StoqOutcome::Duplicate),
            Err(InventoryError::UnknownSku) => Err(StoqError::Invalid(FieldError::new(
                "data.sku",
                "no such product",
            ))),
            Err(e) => Err(StoqError::Inventory(e)),
        }
    }
}
