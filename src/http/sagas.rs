//! `/api/v1/sagas`: inspection of checkout sagas for support staff, and the
//! operator's resume of a stuck one.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::errors::ApiError;
use super::identity::{AdminUser, AuthUser};
use super::order_access::{order_id, visible};
use super::pagination::{Page, PageQuery};
use super::schemas::{ErrorEnvelope, SagaResumed};
use crate::orders::views::SagaView;
use crate::orders::Orders;

const STATES: &[&str] = &["running", "completed", "compensated", "failed", "stuck"];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only sagas in this state; `stuck`: running but not advanced for `sagas.stuck_after_s`.
    #[param(schema_with = crate::orders::views::saga_state)]
    state: Option<String>,
    /// Page size, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/sagas/{id}",
    tag = "sagas",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id (a saga has its order's id)")),
    responses(
        (status = 200, description = "The order's saga: its steps and compensations with timings, and its actor", body = SagaView),
        (status = 404, description = "`not_found`: no such saga, or not the caller's order", body = ErrorEnvelope),
    )
)]
pub async fn get(
    user: AuthUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    visible(&orders, &user, &id).await?;
    Ok(HttpResponse::Ok().json(orders.saga(&id).await?))
}

#[utoipa::path(
    get,
    path = "/api/v1/sagas",
    tag = "sagas",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Sagas, newest first", body = Page<SagaView>),
        (status = 400, description = "`invalid_query`: `limit` outside 1..=200, an unusable `cursor`, an unknown `state` or an unknown parameter", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
    )
)]
pub async fn list(
    _admin: AdminUser,
    orders: web::Data<Orders>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery::new(query.limit, query.cursor.clone());
    let limit = page.limit()?;
    let after = page.cursor(uuid::Uuid::parse_str)?.map(|u| u.to_string());
    if let Some(state) = &query.state {
        if !STATES.contains(&state.as_str()) {
            return Err(ApiError::InvalidQuery(format!(
                "state must be one of {}",
                STATES.join(", ")
            )));
        }
    }
    let items = orders
        .sagas(
            query.state.as_deref(),
            after.as_deref(),
            page.fetch_limit()?,
        )
        .await?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |s| s.order_id.clone())))
}

#[utoipa::path(
    post,
    path = "/api/v1/sagas/{id}/resume",
    tag = "sagas",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id (a saga has its order's id)")),
    responses(
        (status = 202, description = "The saga (`running`, `stuck` or `failed`) is resumed from its last persisted step", body = SagaResumed),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such saga", body = ErrorEnvelope),
        (status = 409, description = "`invalid_transition`: the saga is `completed` or `compensated`; `details: {from, action}`", body = ErrorEnvelope),
    )
)]
pub async fn resume(
    _admin: AdminUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    let saga = orders.saga(&id).await?;
    if !matches!(saga.state.as_str(), "running" | "stuck" | "failed") {
        return Err(ApiError::Refused {
            status: actix_web::http::StatusCode::CONFLICT,
            code: "invalid_transition",
            message: format!("cannot resume a saga that is {}", saga.state),
            details: json!({ "from": saga.state, "action": "resume" }),
        });
    }
    let runner = orders.get_ref().clone();
    let order = id;
    tokio::spawn(async move {
        if let Err(e) = runner.run_saga(&order, true).await {
            tracing::warn!(order.id = %order, error = %e, "resumed saga did not finish");
        }
    });
    Ok(HttpResponse::Accepted().json(json!({ "order_id": id.to_string(), "state": "running" })))
}
