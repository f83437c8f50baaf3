//! `POST /api/v1/events.track` (anyone) and `GET /api/v1/events` (admin):
//! analytics events, and every other event the engine records in the
//! `events` table (Stoq deliveries among them).

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::errors::ApiError;
use super::extract::Json;
use super::identity::{AdminUser, AuthUser};
use super::pagination::{Page, PageQuery};
use super::schemas::ErrorEnvelope;
use crate::db::events::{self as store, EventFilter, EventRow, NewEventRow};
use crate::db::Database;
use crate::events::analytics::{Analytics, TrackError, SOURCE};

const NAME_MAX: usize = 200;
/// Serialized `properties` above this are refused.
const PROPERTIES_MAX_BYTES: usize = 16 * 1024;
/// Clocks disagree; an `occurred_at` further ahead than this is a mistake.
const FUTURE_SKEW: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Track {
    /// 1..=200 characters, no control characters, e.g. `product_viewed`.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    /// Any JSON object, at most 16 KiB serialized.
    #[schema(value_type = Option<Object>)]
    properties: Option<Value>,
    /// When it happened (RFC 3339); default: when it was received. At most
    /// 24 hours ahead.
    occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Tracked {
    /// The event's id in the `events` table.
    id: String,
    #[schema(pattern = "^accepted$")]
    status: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Event)]
pub struct EventView {
    id: String,
    /// `api` for `events.track`, `stoq` for Stoq deliveries.
    source: String,
    /// The sender's own id, for events from other systems.
    external_id: Option<String>,
    name: String,
    user_id: Option<String>,
    #[schema(value_type = Object)]
    properties: Value,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
}

impl From<EventRow> for EventView {
    fn from(r: EventRow) -> Self {
        EventView {
            properties: serde_json::from_str(&r.properties).unwrap_or(Value::Null),
            id: r.id,
            source: r.source,
            external_id: r.external_id,
            name: r.name,
            user_id: r.user_id,
            occurred_at: r.occurred_at.and_utc(),
            received_at: r.received_at.and_utc(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only events with this name.
    name: Option<String>,
    /// Only events from this source (`api`, `stoq`).
    source: Option<String>,
    /// Only events tracked by this user.
    user_id: Option<String>,
    /// Only events received at or after this time (RFC 3339).
    since: Option<String>,
    /// Only events received before this time (RFC 3339).
    until: Option<String>,
    /// Page size, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

fn checked(
    body: Track,
    user: Option<&AuthUser>,
    now: DateTime<Utc>,
) -> Result<NewEventRow, ApiError> {
    let mut errors = std::collections::BTreeMap::new();
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > NAME_MAX || name.chars().any(char::is_control) {
        errors.insert(
            "name".to_owned(),
            format!("must be 1-{NAME_MAX} characters without control characters"),
        );
    }
    let properties = match body.properties {
        None | Some(Value::Null) => json!({}),
        Some(object @ Value::Object(_)) => object,
        Some(_) => {
            errors.insert("properties".to_owned(), "must be a JSON object".to_owned());
            Value::Null
        }
    };
    let properties = properties.to_string();
    if properties.len() > PROPERTIES_MAX_BYTES {
        errors.insert(
            "properties".to_owned(),
            format!("must be at most {PROPERTIES_MAX_BYTES} bytes"),
        );
    }
    let occurred_at = body.occurred_at.unwrap_or(now);
    if occurred_at > now + FUTURE_SKEW {
        errors.insert(
            "occurred_at".to_owned(),
            "must not be more than 24 hours ahead".to_owned(),
        );
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(NewEventRow {
        id: uuid::Uuid::now_v7().to_string(),
        source: SOURCE.to_owned(),
        external_id: None,
        name: name.to_owned(),
        user_id: user.map(|u| u.id.to_string()),
        properties,
        occurred_at: occurred_at.naive_utc(),
        received_at: now.naive_utc(),
    })
}

#[utoipa::path(
    post,
    path = "/api/v1/events.track",
    tag = "analytics",
    security((), ("bearer" = [])),
    request_body = Track,
    responses(
        (status = 202, description = "Accepted: written to the `events` table within `analytics.flush_interval_ms`; with a valid token the event carries the user's id", body = Tracked),
        (status = 422, description = "`validation_failed`: a bad `name`, `properties` that are not an object or too large, `occurred_at` too far ahead", body = ErrorEnvelope),
        (status = 503, description = "`overloaded`: the buffer is full (with `Retry-After`)", body = ErrorEnvelope),
    )
)]
pub async fn track(
    user: Option<AuthUser>,
    analytics: web::Data<Analytics>,
    Json(body): Json<Track>,
) -> Result<HttpResponse, ApiError> {
    let row = checked(body, user.as_ref(), Utc::now())?;
    let id = row.id.clone();
    match analytics.track(row) {
        Ok(()) => Ok(HttpResponse::Accepted().json(Tracked {
            id,
            status: "accepted",
        })),
        Err(TrackError::Full) => Err(ApiError::Overloaded),
        Err(TrackError::Closed) => Err(ApiError::Unavailable("the engine is stopping".to_owned())),
    }
}

fn parse_time(field: &str, value: Option<&str>) -> Result<Option<chrono::NaiveDateTime>, ApiError> {
    value
        .map(|v| {
            DateTime::parse_from_rfc3339(v)
                .map(|t| t.naive_utc())
                .map_err(|_| ApiError::InvalidQuery(format!("{field} must be an RFC 3339 time")))
        })
        .transpose()
}

#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "analytics",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Recorded events, newest first", body = Page<EventView>),
        (status = 400, description = "`invalid_query`: a bad time, `limit` outside 1..=200, an unusable `cursor` or an unknown parameter", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
    )
)]
pub async fn list(
    _admin: AdminUser,
    db: web::Data<Database>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery::new(query.limit, query.cursor.clone());
    let limit = page.limit()?;
    let before = page.cursor(uuid::Uuid::parse_str)?.map(|u| u.to_string());
    let filter = EventFilter {
        name: query.name.clone(),
        source: query.source.clone(),
        user_id: query.user_id.clone(),
        since: parse_time("since", query.since.as_deref())?,
        until: parse_time("until", query.until.as_deref())?,
    };
    let rows = store::list(
        &mut db.conn().await?,
        &filter,
        before.as_deref(),
        page.fetch_limit()?,
    )
    .await?;
    let items = rows.into_iter().map(EventView::from).collect();
    Ok(
        HttpResponse::Ok().json(Page::from_overfetch(items, limit, |e: &EventView| {
            e.id.clone()
        })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(name: &str, properties: Option<Value>, occurred_at: Option<DateTime<Utc>>) -> Track {
        Track {
            name: name.to_owned(),
            properties,
            occurred_at,
        }
    }

    #[test]
    fn a_good_event_is_kept_as_sent() {
        let now = Utc::now();
        let row = checked(
            track(" product_viewed ", Some(json!({"sku": "A"})), None),
            None,
            now,
        )
        .unwrap();
        assert_eq!(row.name, "product_viewed");
        assert_eq!(row.source, "api");
        assert_eq!(row.properties, r#"{"sku":"A"}"#);
        assert_eq!(row.occurred_at, now.naive_utc());
        assert_eq!(row.user_id, None);
        let row = checked(track("x", None, None), None, now).unwrap();
        assert_eq!(row.properties, "{}");
    }

    #[test]
    fn bad_events_name_their_field() {
        let now = Utc::now();
        let field = |t: Track| match checked(t, None, now) {
            Err(ApiError::Validation(fields)) => {
                fields.keys().cloned().collect::<Vec<_>>().join(",")
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(field(track("  ", None, None)), "name");
        assert_eq!(field(track(&"n".repeat(201), None, None)), "name");
        assert_eq!(field(track("a\u{0}b", None, None)), "name");
        assert_eq!(field(track("x", Some(json!([1])), None)), "properties");
        assert_eq!(field(track("x", Some(json!("s")), None)), "properties");
        assert_eq!(
            field(track("x", Some(json!({"k": "v".repeat(17_000)})), None)),
            "properties"
        );
        assert_eq!(
            field(track("x", None, Some(now + chrono::Duration::hours(25)))),
            "occurred_at"
        );
    }
}
