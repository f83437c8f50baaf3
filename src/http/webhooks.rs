//! `/api/v1/webhooks` (admin): endpoints that receive domain events, their
//! deliveries, and replaying a delivery. See docs/webhooks.md.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, NaiveDateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::Json;
use super::identity::AdminUser;
use super::pagination::{Page, PageQuery};
use super::schemas::ErrorEnvelope;
use crate::db::webhooks::{self as store, DeliveryRow, WebhookRow};
use crate::db::Database;
use crate::events::{Events, EVENT_TYPES};

const URL_MAX: usize = 2048;
const SECRET_MIN: usize = 16;
const SECRET_MAX: usize = 256;
const STATUSES: &[&str] = &["pending", "succeeded", "failed", "dead"];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhook {
    /// Where events are POSTed: an absolute http or https URL without
    /// credentials, at most 2048 characters.
    #[schema(min_length = 1, max_length = 2048)]
    url: String,
    /// Event types to receive (see the event catalogue), or `["*"]` for all.
    #[schema(min_items = 1, max_items = 12)]
    events: Vec<String>,
    /// Key of the HMAC signature, 16..=256 visible ASCII characters;
    /// generated when absent.
    #[schema(min_length = 16, max_length = 256)]
    secret: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Webhook)]
pub struct WebhookView {
    id: String,
    url: String,
    events: Vec<String>,
    /// Only in the answer to the registration: store it then.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: DateTime<Utc>,
}

impl WebhookView {
    fn from_row(row: WebhookRow, with_secret: bool) -> Self {
        WebhookView {
            events: row.event_filter(),
            secret: with_secret.then_some(row.secret),
            id: row.id,
            url: row.url,
            created_at: row.created_at.and_utc(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
pub struct DeliveryView {
    id: String,
    webhook_id: String,
    /// The event's id: the same in every attempt and in `X-Orderflow-Event-Id`.
    event_id: String,
    event_type: String,
    /// `pending` (not tried yet), `failed` (will be retried at
    /// `next_attempt_at`), `succeeded` or `dead` (no attempts left).
    #[schema(pattern = "^(pending|succeeded|failed|dead)$")]
    status: String,
    attempts: i32,
    next_attempt_at: Option<DateTime<Utc>>,
    /// HTTP status of the last attempt, when the endpoint answered.
    last_status_code: Option<i32>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    delivered_at: Option<DateTime<Utc>>,
}

fn utc(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
}

impl From<DeliveryRow> for DeliveryView {
    fn from(r: DeliveryRow) -> Self {
        DeliveryView {
            id: r.id,
            webhook_id: r.webhook_id,
            event_id: r.event_id,
            event_type: r.event_type,
            status: r.status,
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at.map(utc),
            last_status_code: r.last_status_code,
            last_error: r.last_error,
            created_at: utc(r.created_at),
            updated_at: utc(r.updated_at),
            delivered_at: r.delivered_at.map(utc),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Only deliveries in this status.
    #[param(pattern = "^(pending|succeeded|failed|dead)$")]
    status: Option<String>,
    /// Page size, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The checked registration: (url, events, secret).
fn validate(body: NewWebhook) -> Result<(String, Vec<String>, String), ApiError> {
    let mut errors = std::collections::BTreeMap::new();
    match check_url(&body.url) {
        Ok(()) => {}
        Err(message) => {
            errors.insert("url".to_owned(), message);
        }
    }
    let mut events: Vec<String> = Vec::new();
    for event in body.events {
        if !events.contains(&event) {
            events.push(event);
        }
    }
    if events.is_empty() {
        errors.insert(
            "events".to_owned(),
            "must name at least one event type, or \"*\"".to_owned(),
        );
    } else if events.iter().any(|e| e == "*") && events.len() > 1 {
        errors.insert(
            "events".to_owned(),
            "\"*\" takes every event type; list it alone".to_owned(),
        );
    } else if let Some(unknown) = events
        .iter()
        .find(|e| *e != "*" && !EVENT_TYPES.contains(&e.as_str()))
    {
        errors.insert(
            "events".to_owned(),
            format!(
                "unknown event type `{}`; known: {}",
                unknown.chars().take(64).collect::<String>(),
                EVENT_TYPES.join(", ")
            ),
        );
    }
    let secret = match body.secret {
        Some(secret) => {
            let length = secret.chars().count();
            if !(SECRET_MIN..=SECRET_MAX).contains(&length)
                || !secret.chars().all(|c| c.is_ascii_graphic())
            {
                errors.insert(
                    "secret".to_owned(),
                    format!("must be {SECRET_MIN}-{SECRET_MAX} visible ASCII characters"),
                );
            }
            secret
        }
        None => generate_secret(),
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok((body.url, events, secret))
}

/// Outbound requests go only to absolute http and https URLs.
fn check_url(raw: &str) -> Result<(), String> {
    if raw.is_empty() || raw.chars().count() > URL_MAX {
        return Err(format!("must be 1-{URL_MAX} characters"));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http or https URL".to_owned());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; requests are signed with the secret".to_owned());
    }
    Ok(())
}

fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

fn webhook_id(raw: &str) -> Result<String, ApiError> {
    super::extract::path_uuid(raw)
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    request_body = NewWebhook,
    responses(
        (status = 201, description = "The endpoint, with its `secret` (shown only here)", body = WebhookView),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`: a URL that is not http(s) or carries credentials, an unknown event type, a bad secret", body = ErrorEnvelope),
    )
)]
pub async fn create(
    _admin: AdminUser,
    db: web::Data<Database>,
    Json(body): Json<NewWebhook>,
) -> Result<HttpResponse, ApiError> {
    let (url, events, secret) = validate(body)?;
    let row = WebhookRow {
        id: uuid::Uuid::now_v7().to_string(),
        url,
        events: serde_json::to_string(&events).map_err(anyhow::Error::from)?,
        secret,
        created_at: Utc::now().naive_utc(),
    };
    store::insert(&mut db.conn().await?, &row).await?;
    tracing::info!(webhook.id = %row.id, webhook.url = %row.url, "webhook registered");
    Ok(HttpResponse::Created().json(WebhookView::from_row(row, true)))
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "Endpoints, oldest first, without their secrets", body = Page<WebhookView>),
        (status = 400, description = "`invalid_query`: `limit` outside 1..=200 or an unusable `cursor`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
    )
)]
pub async fn list(
    _admin: AdminUser,
    db: web::Data<Database>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let after = query.cursor(uuid::Uuid::parse_str)?.map(|u| u.to_string());
    let rows = store::page(
        &mut db.conn().await?,
        after.as_deref(),
        query.fetch_limit()?,
    )
    .await?;
    let items = rows
        .into_iter()
        .map(|r| WebhookView::from_row(r, false))
        .collect();
    Ok(
        HttpResponse::Ok().json(Page::from_overfetch(items, limit, |w: &WebhookView| {
            w.id.clone()
        })),
    )
}

#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{id}",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed, with its deliveries; nothing more is sent to it"),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such endpoint", body = ErrorEnvelope),
    )
)]
pub async fn delete(
    _admin: AdminUser,
    db: web::Data<Database>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    if !store::delete(&mut db.conn().await?, &id).await? {
        return Err(ApiError::NotFound);
    }
    tracing::info!(webhook.id = %id, "webhook removed");
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The endpoint's id"), DeliveriesQuery),
    responses(
        (status = 200, description = "The endpoint's deliveries, newest first", body = Page<DeliveryView>),
        (status = 400, description = "`invalid_query`: an unknown `status`, `limit` outside 1..=200, an unusable `cursor` or an unknown parameter", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such endpoint", body = ErrorEnvelope),
    )
)]
pub async fn deliveries(
    _admin: AdminUser,
    db: web::Data<Database>,
    path: web::Path<String>,
    query: web::Query<DeliveriesQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let page = PageQuery::new(query.limit, query.cursor.clone());
    let limit = page.limit()?;
    let before = page.cursor(uuid::Uuid::parse_str)?.map(|u| u.to_string());
    if let Some(status) = &query.status {
        if !STATUSES.contains(&status.as_str()) {
            return Err(ApiError::InvalidQuery(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
    }
    let mut conn = db.conn().await?;
    if store::find(&mut conn, &id).await?.is_none() {
        return Err(ApiError::NotFound);
    }
    let rows = store::deliveries(
        &mut conn,
        &id,
        query.status.as_deref(),
        before.as_deref(),
        page.fetch_limit()?,
    )
    .await?;
    let items = rows.into_iter().map(DeliveryView::from).collect();
    Ok(
        HttpResponse::Ok().json(Page::from_overfetch(items, limit, |d: &DeliveryView| {
            d.id.clone()
        })),
    )
}

#[utoipa::path(
    post,
    path = "/api/v1/webhooks/deliveries/{delivery_id}/replay",
    tag = "webhooks",
    security(("bearer" = [])),
    params(("delivery_id" = uuid::Uuid, Path, description = "The delivery's id")),
    responses(
        (status = 202, description = "The delivery is `pending` again with a fresh count of attempts and is sent at once (the same event id and body)", body = DeliveryView),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such delivery", body = ErrorEnvelope),
    )
)]
pub async fn replay(
    _admin: AdminUser,
    db: web::Data<Database>,
    events: web::Data<Events>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = webhook_id(&path)?;
    let row = store::replay(&mut db.conn().await?, &id, Utc::now().naive_utc())
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(delivery.id = %id, event.id = %row.event_id, "webhook delivery replayed");
    events.wake_deliveries();
    Ok(HttpResponse::Accepted().json(DeliveryView::from(row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(url: &str, events: &[&str], secret: Option<&str>) -> NewWebhook {
        NewWebhook {
            url: url.to_owned(),
            events: events.iter().map(|e| e.to_string()).collect(),
            secret: secret.map(str::to_owned),
        }
    }

    fn refused_field(result: Result<(String, Vec<String>, String), ApiError>) -> String {
        match result {
            Err(ApiError::Validation(fields)) => {
                fields.keys().cloned().collect::<Vec<_>>().join(",")
            }
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn only_http_and_https_urls_without_credentials_are_taken() {
        for url in ["http://127.0.0.1:9000/hook", "https://example.com/a?b=c"] {
            assert!(validate(body(url, &["*"], None)).is_ok(), "{url}");
        }
        for url in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "gopher://x",
            "/relative",
            "",
            "https://user:pw@example.com/",
            "http://",
        ] {
            assert_eq!(
                refused_field(validate(body(url, &["*"], None))),
                "url",
                "{url}"
            );
        }
        let long = format!("https://example.com/{}", "a".repeat(URL_MAX));
        assert_eq!(refused_field(validate(body(&long, &["*"], None))), "url");
    }

    #[test]
    fn event_filters_name_known_types_or_star_alone() {
        let (_, events, _) = validate(body(
            "http://h/",
            &["order.paid", "order.paid", "order.created"],
            None,
        ))
        .unwrap();
        assert_eq!(events, ["order.paid", "order.created"]);
        for bad in [&[][..], &["order.unknown"], &["*", "order.paid"]] {
            assert_eq!(
                refused_field(validate(body("http://h/", bad, None))),
                "events",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn secrets_are_generated_or_checked() {
        let (_, _, a) = validate(body("http://h/", &["*"], None)).unwrap();
        let (_, _, b) = validate(body("http://h/", &["*"], None)).unwrap();
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64);
        assert_ne!(a, b);
        let (_, _, given) = validate(body("http://h/", &["*"], Some("0123456789abcdef"))).unwrap();
        assert_eq!(given, "0123456789abcdef");
        for bad in ["short", "has a space in it ok", &"x".repeat(257)] {
            assert_eq!(
                refused_field(validate(body("http://h/", &["*"], Some(bad)))),
                "secret"
            );
        }
    }
}
