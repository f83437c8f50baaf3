//! `/api/v1/orders`: placing orders, reading them and their audit trail,
//! and the commands of their life cycle (capture, cancel, ship, deliver,
//! refunds).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::{Json, OptionalJson};
use super::idempotency::{once, IdempotencyKey};
use super::identity::{AdminUser, AuthUser};
use super::order_access::{order_id, visible};
use super::pagination::{Page, PageQuery};
use super::placing::{checkout_answer, parse_payment, wait_of, PaymentBody};
use super::schemas::{CheckoutAccepted, ErrorEnvelope};
use crate::domain::ids::{OrderId, UserId};
use crate::domain::inventory::Sku;
use crate::domain::order::{parse_quantity, OrderStatus};
use crate::domain::product::MAX_AMOUNT;
use crate::domain::FieldError;
use crate::idempotency::{Claim, Resource};
use crate::orders::views::{OrderEventView, OrderQuery, OrderView, RefundView};
use crate::orders::{Actor, Checkout, Command, CommandResult, Orders};

const TEXT_MAX_CHARS: usize = 200;

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Line)]
pub struct LineBody {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "tee-red-m")]
    sku: String,
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i64,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewOrder)]
pub struct PlaceBody {
    /// Each sku at most once; an empty list is 422 `empty_cart`.
    #[schema(max_items = 100)]
    items: Vec<LineBody>,
    payment: PaymentBody,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Shipment)]
pub struct ShipBody {
    /// 1..=200 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    carrier: Option<String>,
    /// 1..=200 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    tracking_number: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewRefund)]
pub struct RefundBody {
    /// Minor units; at most what was captured and not yet refunded.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    amount: i64,
    /// 1..=200 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 200)]
    reason: Option<String>,
    /// Lines to put back in stock once the refund is paid out.
    restock: Option<Vec<LineBody>>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Admin only: that user's orders (ignored for customers, who see only theirs).
    #[param(format = Uuid)]
    user_id: Option<String>,
    /// Only orders with this status.
    #[param(value_type = Option<OrderStatus>)]
    status: Option<String>,
}

#[utoipa::path(
    post,
    path = "/api/v1/orders",
    tag = "orders",
    security(("bearer" = [])),
    params(("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once instead of waiting for the saga")),
    request_body = PlaceBody,
    responses(
        (status = 201, description = "The saga finished: the order, `paid` (or `authorized` where capture is manual)", body = OrderView,
            headers(("Location" = String, description = "`/api/v1/orders/{id}`"))),
        (status = 202, description = "The saga goes on (the client sent `Prefer: respond-async`, or it did not finish within `checkout.sync_wait_ms`); poll the order", body = CheckoutAccepted,
            headers(("Location" = String, description = "`/api/v1/orders/{id}`"))),
        (status = 402, description = "`payment_declined`: the provider declined; `details.order_id` names the order, now `payment_failed`", body = ErrorEnvelope),
        (status = 409, description = "`out_of_stock`: `details.items: [{sku, requested, available}]` and `details.order_id` (the order, now `rejected`)", body = ErrorEnvelope),
        (status = 422, description = "`empty_cart`: no items; `validation_failed`, also for an unknown or inactive product, a sku listed twice, a total over 10^12, a payment provider other than the engine's or a bad payment token", body = ErrorEnvelope),
    )
)]
pub async fn place(
    req: HttpRequest,
    user: AuthUser,
    checkout: web::Data<Checkout>,
    key: IdempotencyKey,
    Json(body): Json<PlaceBody>,
) -> Result<HttpResponse, ApiError> {
    let payment = parse_payment(&body.payment, checkout.payments())?;
    let lines = parse_lines(&body.items, "items")?;
    let (user_id, wait) = (user.id, wait_of(&req));
    once(&req, &user, key, &body, move |claim| async move {
        let outcome = checkout.lines(user_id, lines, payment, claim, wait).await?;
        checkout_answer(outcome)
    })
    .await
}

fn parse_lines(lines: &[LineBody], field: &'static str) -> Result<Vec<(Sku, i64)>, ApiError> {
    let mut errors: Vec<FieldError> = Vec::new();
    let mut parsed = Vec::with_capacity(lines.len());
    for line in lines {
        match (Sku::parse(&line.sku), parse_quantity(line.quantity, field)) {
            (Ok(sku), Ok(q)) => parsed.push((sku, q)),
            (s, q) => errors.extend(
                s.err()
                    .map(|e| FieldError::new(field, format!("sku {}", e.message)))
                    .into_iter()
                    .chain(q.err()),
            ),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(ApiError::validation(errors))
    }
}

#[utoipa::path(
    get,
    path = "/api/v1/orders",
    tag = "orders",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "Orders, newest first: the caller's own, or for an admin everyone's (filtered by `user_id`)", body = Page<OrderView>),
        (status = 400, description = "`invalid_query`: `limit` outside 1..=200, an unusable `cursor`, an unknown `status`, a `user_id` that is not a UUID (admins), or an unknown parameter", body = ErrorEnvelope),
    )
)]
pub async fn list(
    user: AuthUser,
    orders: web::Data<Orders>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let page = PageQuery::new(query.limit, query.cursor.clone());
    let limit = page.limit()?;
    let after = page.cursor(|raw| OrderId::parse(raw).ok_or(()))?;
    let status = match &query.status {
        Some(raw) => Some(
            OrderStatus::parse(raw)
                .ok_or_else(|| ApiError::InvalidQuery(format!("unknown status {raw:?}")))?,
        ),
        None => None,
    };
    let owner = if user.is_admin() {
        match &query.user_id {
            Some(raw) => Some(
                UserId::parse(raw)
                    .ok_or_else(|| ApiError::InvalidQuery("user_id must be a UUID".to_owned()))?,
            ),
            None => None,
        }
    } else {
        Some(user.id)
    };
    let filter = OrderQuery {
        owner,
        status,
        after,
    };
    let items = orders.list(&filter, page.fetch_limit()?).await?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |o| o.id.clone())))
}

#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order (its owner's, or any for an admin)", body = OrderView),
        (status = 404, description = "`not_found`: no such order, or not the caller's", body = ErrorEnvelope),
    )
)]
pub async fn get(
    user: AuthUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    // One read: the order says whose it is.
    let view = orders.view(&id).await?;
    if !user.is_admin() && view.user_id != user.id {
        return Err(ApiError::NotFound);
    }
    Ok(HttpResponse::Ok().json(view))
}

#[utoipa::path(
    get,
    path = "/api/v1/orders/{id}/events",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order's audit trail, oldest first; `actor` is `user:<id>`, `admin:<id>` or `system`", body = Vec<OrderEventView>),
        (status = 404, description = "`not_found`: no such order, or not the caller's", body = ErrorEnvelope),
    )
)]
pub async fn events(
    user: AuthUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    visible(&orders, &user, &id).await?;
    // api.md: the audit trail is a plain array, oldest first.
    Ok(HttpResponse::Ok().json(orders.events(&id).await?))
}

/// The order an idempotency key was bound to.
fn order_id_of_claim(stored: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(stored).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "an idempotency key is bound to {stored:?}, not an order id"
        ))
    })
}

/// Runs a command on an order; under an idempotency key whose first run
/// already moved the order, answers from what it moved instead.
async fn run(
    orders: &Orders,
    id: &OrderId,
    actor: Actor,
    command: Command,
    claim: Option<Claim>,
) -> Result<HttpResponse, ApiError> {
    let result = match claim {
        Some(Claim {
            resource: Some(Resource::Order(order_id)),
            ..
        }) => CommandResult::Order(orders.view(&order_id_of_claim(&order_id)?).await?),
        Some(Claim {
            resource: Some(Resource::Refund(refund_id)),
            ..
        }) => CommandResult::Refund(orders.refund(&refund_id).await?),
        claim => {
            orders
                .command(id, actor, command, claim.map(|c| c.binding))
                .await?
        }
    };
    match result {
        CommandResult::Order(view) => Ok(HttpResponse::Ok().json(view)),
        // No Location: refunds have no route of their own to point at.
        CommandResult::Refund(refund) => Ok(HttpResponse::Created().json(refund)),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/capture",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order, `paid` (manual capture mode)", body = OrderView),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such order", body = ErrorEnvelope),
        (status = 409, description = "`invalid_transition`: the order is not `authorized`; also any command while the order's saga is `failed`; `details: {from, action}`", body = ErrorEnvelope),
    )
)]
pub async fn capture(
    req: HttpRequest,
    admin: AdminUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
    key: IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    let actor = Actor::Admin(admin.0.id);
    once(&req, &admin.0, key, &(), move |claim| async move {
        run(&orders, &id, actor, Command::Capture, claim).await
    })
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/cancel",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order, `cancelled` (its authorization voided or its capture refunded in full, its items released or restocked); a cancelled order is answered as it is", body = OrderView),
        (status = 404, description = "`not_found`: no such order, or not the caller's", body = ErrorEnvelope),
        (status = 409, description = "`invalid_transition`: the order is shipped, delivered, rejected or its payment failed; also any command while the order's saga is `failed`; `details: {from, action}`", body = ErrorEnvelope),
    )
)]
pub async fn cancel(
    req: HttpRequest,
    user: AuthUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
    key: IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    visible(&orders, &user, &id).await?;
    let actor = if user.is_admin() {
        Actor::Admin(user.id)
    } else {
        Actor::User(user.id)
    };
    once(&req, &user, key, &(), move |claim| async move {
        run(&orders, &id, actor, Command::Cancel, claim).await
    })
    .await
}

fn optional_text(value: Option<String>, field: &'static str) -> Result<Option<String>, ApiError> {
    match value.map(|v| v.trim().to_owned()) {
        Some(v)
            if v.is_empty()
                || v.chars().count() > TEXT_MAX_CHARS
                || v.chars().any(char::is_control) =>
        {
            Err(ApiError::field(
                field,
                format!("must be 1-{TEXT_MAX_CHARS} characters"),
            ))
        }
        other => Ok(other),
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/ship",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    request_body(content = Option<ShipBody>, description = "Optional: a request without a body (and without a content type) ships without carrier and tracking number"),
    responses(
        (status = 200, description = "The order, `shipped`", body = OrderView),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such order", body = ErrorEnvelope),
        (status = 409, description = "`invalid_transition`: the order is not `paid`, or has refunds still pending; also any command while the order's saga is `failed`; `details: {from, action}`", body = ErrorEnvelope),
    )
)]
pub async fn ship(
    admin: AdminUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
    OptionalJson(body): OptionalJson<ShipBody>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    let (carrier, tracking_number) = match body {
        Some(b) => (
            optional_text(b.carrier, "carrier")?,
            optional_text(b.tracking_number, "tracking_number")?,
        ),
        None => (None, None),
    };
    let command = Command::Ship {
        carrier,
        tracking_number,
    };
    run(&orders, &id, Actor::Admin(admin.0.id), command, None).await
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/deliver",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order, `delivered`", body = OrderView),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such order", body = ErrorEnvelope),
        (status = 409, description = "`invalid_transition`: the order is not `shipped`, or has refunds still pending; also any command while the order's saga is `failed`; `details: {from, action}`", body = ErrorEnvelope),
    )
)]
pub async fn deliver(
    admin: AdminUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    run(
        &orders,
        &id,
        Actor::Admin(admin.0.id),
        Command::Deliver,
        None,
    )
    .await
}

#[utoipa::path(
    post,
    path = "/api/v1/orders/{id}/refunds",
    tag = "orders",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The order's id")),
    request_body = RefundBody,
    responses(
        (status = 201, description = "The refund: `succeeded`, `failed` (the provider refused) or `pending` (paid out when the saga resumes)", body = RefundView),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such order", body = ErrorEnvelope),
        (status = 409, description = "`invalid_transition`: the order is not `paid`, `shipped` or `delivered`; also any command while the order's saga is `failed`; `details: {from, action}`", body = ErrorEnvelope),
        (status = 422, description = "`refund_exceeds_captured`: with the refunds already accepted, more than was captured; `details.refundable`", body = ErrorEnvelope),
    )
)]
pub async fn refund(
    req: HttpRequest,
    admin: AdminUser,
    orders: web::Data<Orders>,
    path: web::Path<String>,
    key: IdempotencyKey,
    Json(body): Json<RefundBody>,
) -> Result<HttpResponse, ApiError> {
    let id = order_id(&path)?;
    if !(1..=MAX_AMOUNT).contains(&body.amount) {
        return Err(ApiError::field(
            "amount",
            format!("must be between 1 and {MAX_AMOUNT} (minor units)"),
        ));
    }
    let reason = optional_text(body.reason.clone(), "reason")?;
    let restock = parse_lines(body.restock.as_deref().unwrap_or_default(), "restock")?
        .into_iter()
        .map(|(sku, q)| (sku.as_str().to_owned(), q))
        .collect();
    let command = Command::Refund {
        amount: body.amount,
        reason,
        restock,
    };
    let actor = Actor::Admin(admin.0.id);
    once(&req, &admin.0, key, &body, move |claim| async move {
        run(&orders, &id, actor, command, claim).await
    })
    .await
}
