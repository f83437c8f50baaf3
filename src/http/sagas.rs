//! `/api/v1/sagas`: inspection of checkout sagas for support staff, and the
//! operator's resume of a stuck one.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::errors::ApiError;
use super::identity::{AdminUser, AuthUser};
use super::orders::{order_id, visible};
use super::pagination::{Page, PageQuery};
use crate::orders::Orders;

const STATES: &[&str] = &["running", "completed", "compensated", "failed", "stuck"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

pub async fn get(
    user: AuthUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    visible(&orders, &user, &id).await?;
    Ok(HttpResponse::Ok().json(orders.saga(&id).await?))
}

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
    let order = id.clone();
    tokio::spawn(async move {
        if let Err(e) = runner.run_saga(&order, true).await {
            tracing::warn!(order.id = %order, error = %e, "resumed saga did not finish");
        }
    });
    Ok(HttpResponse::Accepted().json(json!({ "order_id": id, "state": "running" })))
}
