//! `POST /api/v1/integrations/stoq/events`: inbound events from the Stoq
//! inventory system.
//!
//! Every request must carry `X-Stoq-Signature: sha256=<hex HMAC-SHA256 of the
//! raw body>` under `integrations.stoq.secret`; without a configured secret
//! every event is refused. The signature is checked (in constant time) before
//! the body is even parsed; the event then goes to
//! `Inventory::receive_stoq_event` (`inventory::stoq`), which records it once
//! per Stoq event id and applies restocks.

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
use crate::inventory::stoq::{StoqError, StoqEvent};
use crate::inventory::Inventory;

pub const SIGNATURE_HEADER: &str = "x-stoq-signature";

/// The configured Stoq secret, as app data.
#[derive(Clone)]
pub struct StoqSecret(pub Option<SecretString>);

/// Stoq's envelope. Unknown top-level fields are tolerated: the sender is
/// another system that may add fields before we do.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = StoqEvent)]
pub struct StoqEventBody {
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

#[utoipa::path(
    post,
    path = "/api/v1/integrations/stoq/events",
    tag = "integrations",
    params(("X-Stoq-Signature" = String, Header, pattern = "^sha256=[0-9a-fA-F]{64}$",
        description = "`sha256=<hex HMAC-SHA256 of the raw body>` under `integrations.stoq.secret`")),
    request_body = StoqEventBody,
    responses(
        (status = 200, description = "Accepted (or acknowledged as a duplicate)", body = StoqAck),
        (status = 401, description = "`unauthorized`: a missing or wrong signature, or no secret configured", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 422, description = "`validation_failed`: an `id` or `type` outside 1-200 characters, a `data` that is not an object; also for a restock whose `data` is not `{sku, quantity}` of an existing product (not recorded, so a corrected redelivery applies)", body = ErrorEnvelope),
    )
)]
pub async fn stoq_events(
    req: HttpRequest,
    body: web::Bytes,
    secret: web::Data<StoqSecret>,
    inventory: web::Data<Inventory>,
) -> Result<HttpResponse, ApiError> {
    verify_signature(&req, &body, secret.0.as_ref())?;
    let event: StoqEventBody = parse_json(&body)?;
    if event.id.is_empty() || event.id.len() > 200 {
        return Err(ApiError::field("id", "must be 1-200 characters"));
    }
    if event.event_type.is_empty() || event.event_type.len() > 200 {
        return Err(ApiError::field("type", "must be 1-200 characters"));
    }
    if !event.data.is_object() {
        return Err(ApiError::field("data", "must be a JSON object"));
    }
    let id = event.id.clone();
    let outcome = inventory
        .receive_stoq_event(StoqEvent {
            id: event.id,
            event_type: event.event_type,
            occurred_at: event.occurred_at,
            data: event.data,
        })
        .await
        .map_err(|e| match e {
            StoqError::Invalid(field) => ApiError::field(field.field, field.message),
            StoqError::Inventory(e) => e.into(),
            StoqError::Db(e) => e.into(),
        })?;
    Ok(HttpResponse::Ok().json(json!({ "id": id, "status": outcome.as_str() })))
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
