//! `POST /api/v1/integrations/stoq/events`: inbound events from the Stoq
//! inventory system.
//!
//! Every request must carry `X-Stoq-Signature: sha256=<hex HMAC-SHA256 of the
//! raw body>` under `integrations.stoq.secret`; without a configured secret
//! every event is refused. The signature is checked (in constant time) before
//! the body is even parsed. Accepted events are recorded in `events` once per
//! Stoq event id: a restock is recorded in the same transaction as the stock
//! change, so a redelivered event is acknowledged and never applied twice.

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::errors::ApiError;
use super::extract::parse_json;
use super::schemas::{ErrorEnvelope, StoqAck};
use crate::db::events::{self, NewEventRow};
use crate::db::Database;
use crate::domain::inventory::{Sku, MAX_STOCK_CHANGE};
use crate::inventory::{EventRestock, Inventory};

pub const SIGNATURE_HEADER: &str = "x-stoq-signature";
pub const RESTOCK_SUBMITTED: &str = "stoq:restock-modal:submitted";
const SOURCE: &str = "stoq";

/// The configured Stoq secret, as app data.
#[derive(Clone)]
pub struct StoqSecret(pub Option<SecretString>);

/// Stoq's envelope. Unknown top-level fields are tolerated: the sender is
/// another system that may add fields before we do.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StoqEvent {
    /// Stoq's event id: an event is applied once per id.
    #[schema(min_length = 1, max_length = 200)]
    id: String,
    /// `stoq:restock-modal:submitted` (with `data: {sku, quantity}`) restocks;
    /// other types are recorded only. At most 200 bytes.
    #[serde(rename = "type")]
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "stoq:restock-modal:submitted"
    )]
    event_type: String,
    occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestockData {
    sku: String,
    quantity: i64,
}

#[utoipa::path(
    post,
    path = "/api/v1/integrations/stoq/events",
    tag = "integrations",
    params(("X-Stoq-Signature" = String, Header, pattern = "^sha256=[0-9a-fA-F]{64}$",
        description = "`sha256=<hex HMAC-SHA256 of the raw body>` under `integrations.stoq.secret`")),
    request_body = StoqEvent,
    responses(
        (status = 200, description = "Accepted (or acknowledged as a duplicate)", body = StoqAck),
        (status = 401, description = "`unauthorized`: a missing or wrong signature, or no secret configured", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`validation_failed`, also for a restock whose `data` is not `{sku, quantity}` of an existing product (not recorded, so a corrected redelivery applies)", body = ErrorEnvelope),
    )
)]
pub async fn stoq_events(
    req: HttpRequest,
    body: web::Bytes,
    secret: web::Data<StoqSecret>,
    inventory: web::Data<Inventory>,
    db: web::Data<Database>,
) -> Result<HttpResponse, ApiError> {
    verify_signature(&req, &body, secret.0.as_ref())?;
    let event: StoqEvent = parse_json(&body)?;
    if event.id.is_empty() || event.id.len() > 200 {
        return Err(ApiError::field("id", "must be 1-200 characters"));
    }
    if event.event_type.is_empty() || event.event_type.len() > 200 {
        return Err(ApiError::field("type", "must be 1-200 characters"));
    }
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
    let status = if event.event_type == RESTOCK_SUBMITTED {
        let data: RestockData = serde_json::from_value(event.data.clone())
            .map_err(|e| ApiError::field("data", format!("must be {{sku, quantity}}: {e}")))?;
        let sku = Sku::parse(&data.sku).map_err(|e| ApiError::field("data.sku", e.message))?;
        if !(1..=MAX_STOCK_CHANGE).contains(&data.quantity) {
            return Err(ApiError::field(
                "data.quantity",
                format!("must be between 1 and {MAX_STOCK_CHANGE}"),
            ));
        }
        let note = Some(format!("stoq event {}", event.id));
        match inventory
            .restock_for_event(&sku, data.quantity, note, row)
            .await
        {
            Ok(EventRestock::Applied(_)) => "applied",
            Ok(EventRestock::Duplicate) => "duplicate",
            Err(crate::inventory::InventoryError::UnknownSku) => {
                return Err(ApiError::field("data.sku", "no such product"));
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        // Other event types are recorded for the record; nothing to apply.
        let mut conn = db.conn().await?;
        if events::insert_if_new(&mut conn, &row)
            .await
            .map_err(crate::db::DbError::from)?
        {
            "recorded"
        } else {
            "duplicate"
        }
    };
    Ok(HttpResponse::Ok().json(json!({ "id": event.id, "status": status })))
}

fn verify_signature(
    req: &HttpRequest,
    body: &[u8],
    secret: Option<&SecretString>,
) -> Result<(), ApiError> {
    let Some(secret) = secret else {
        tracing::warn!("Stoq event refused: integrations.stoq.secret is not configured");
        return Err(ApiError::Unauthorized);
    };
    let provided = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("sha256="))
        .and_then(|hex_sig| hex::decode(hex_sig).ok())
        .ok_or(ApiError::Unauthorized)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("bad HMAC key: {e}")))?;
    mac.update(body);
    mac.verify_slice(&provided)
        .map_err(|_| ApiError::Unauthorized)
}
