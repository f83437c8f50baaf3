//! `/api/v1/carts`: a customer's carts and their checkout.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::{path_sku, Json, OptionalJson};
use super::idempotency::{once, IdempotencyKey};
use super::identity::AuthUser;
use super::placing::{checkout_answer, parse_payment, wait_of, PaymentBody};
use super::schemas::{CheckoutAccepted, ErrorEnvelope};
use crate::domain::ids::CartId;
use crate::domain::inventory::{Sku, MAX_LINE_QUANTITY};
use crate::domain::order::parse_quantity;
use crate::domain::product::Currency;
use crate::orders::views::OrderView;
use crate::orders::{CartView, Carts, Checkout, LineChange};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    /// ISO-4217; default `checkout.default_currency` (USD).
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "tee-red-m")]
    sku: String,
    /// Added to the line's quantity; a line holds at most 10 000.
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    /// The line's new quantity; 0 removes the line.
    #[schema(minimum = 0, maximum = 10_000)]
    quantity: i64,
}

#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Checkout)]
pub struct CheckoutBody {
    payment: PaymentBody,
}

/// A cart id that is not a UUID names nothing: 404.
fn cart_id(raw: &str) -> Result<CartId, ApiError> {
    CartId::parse(raw).ok_or(ApiError::NotFound)
}

#[utoipa::path(
    post,
    path = "/api/v1/carts",
    tag = "carts",
    security(("bearer" = [])),
    request_body(content = Option<CreateCart>, description = "Optional: a request without a body (and without a content type) makes a cart in the default currency"),
    responses(
        (status = 201, description = "The new, empty cart", body = CartView,
            headers(("Location" = String, description = "`/api/v1/carts/{id}`"))),
    )
)]
pub async fn create(
    user: AuthUser,
    carts: web::Data<Carts>,
    OptionalJson(body): OptionalJson<CreateCart>,
) -> Result<HttpResponse, ApiError> {
    let currency = body
        .and_then(|b| b.currency)
        .map(|c| Currency::parse(&c))
        .transpose()
        .map_err(|e| ApiError::validation([e]))?;
    let cart = carts.create(user.id, currency).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/api/v1/carts/{}", cart.id)))
        .json(cart))
}

#[utoipa::path(
    get,
    path = "/api/v1/carts/{id}",
    tag = "carts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The cart's id")),
    responses(
        (status = 200, description = "The cart (its owner's, or any for an admin)", body = CartView),
        (status = 404, description = "`not_found`: no such cart, or not the caller's", body = ErrorEnvelope),
    )
)]
pub async fn get(
    user: AuthUser,
    carts: web::Data<Carts>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&path)?;
    let cart = carts.get(user.id, user.is_admin(), &id).await?;
    Ok(HttpResponse::Ok().json(cart))
}

#[utoipa::path(
    post,
    path = "/api/v1/carts/{id}/items",
    tag = "carts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The cart's id")),
    request_body = AddItem,
    responses(
        (status = 200, description = "The cart; the quantity was added to the sku's line (made if new)", body = CartView),
        (status = 404, description = "`not_found`: no such cart, or not the caller's", body = ErrorEnvelope),
        (status = 409, description = "`cart_checked_out` (`details.order_id`): the cart was checked out; `conflict`: the cart was changed by another engine process meanwhile (retry)", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`, also for an unknown, inactive or other-currency product, a line over 10 000 units, or more than 100 lines", body = ErrorEnvelope),
    )
)]
pub async fn add_item(
    user: AuthUser,
    carts: web::Data<Carts>,
    path: web::Path<String>,
    Json(body): Json<AddItem>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&path)?;
    let sku = Sku::parse(&body.sku);
    let quantity = parse_quantity(body.quantity, "quantity");
    let (sku, quantity) = match (sku, quantity) {
        (Ok(s), Ok(q)) => (s, q),
        (s, q) => return Err(ApiError::validation(s.err().into_iter().chain(q.err()))),
    };
    let cart = carts
        .change(user.id, &id, LineChange::Add(sku, quantity))
        .await?;
    Ok(HttpResponse::Ok().json(cart))
}

#[utoipa::path(
    put,
    path = "/api/v1/carts/{id}/items/{sku}",
    tag = "carts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The cart's id"), ("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The line's sku")),
    request_body = SetQuantity,
    responses(
        (status = 200, description = "The cart with the line set (or removed, for 0)", body = CartView),
        (status = 404, description = "`not_found`: no such cart, or not the caller's, or (for 0) no such line", body = ErrorEnvelope),
        (status = 409, description = "`cart_checked_out` (`details.order_id`): the cart was checked out; `conflict`: the cart was changed by another engine process meanwhile (retry)", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`, also for an unknown, inactive or other-currency product, or more than 100 lines", body = ErrorEnvelope),
    )
)]
pub async fn set_item(
    user: AuthUser,
    carts: web::Data<Carts>,
    path: web::Path<(String, String)>,
    Json(body): Json<SetQuantity>,
) -> Result<HttpResponse, ApiError> {
    let (id, sku) = path.into_inner();
    let id = cart_id(&id)?;
    let sku = path_sku(&sku)?;
    if !(0..=MAX_LINE_QUANTITY).contains(&body.quantity) {
        return Err(ApiError::field(
            "quantity",
            format!("must be between 0 and {MAX_LINE_QUANTITY} (0 removes the line)"),
        ));
    }
    let change = if body.quantity == 0 {
        LineChange::Remove(sku)
    } else {
        LineChange::Set(sku, body.quantity)
    };
    let cart = carts.change(user.id, &id, change).await?;
    Ok(HttpResponse::Ok().json(cart))
}

#[utoipa::path(
    delete,
    path = "/api/v1/carts/{id}/items/{sku}",
    tag = "carts",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The cart's id"), ("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The line's sku")),
    responses(
        (status = 200, description = "The cart without the line", body = CartView),
        (status = 404, description = "`not_found`: no such cart, or not the caller's, or no such line", body = ErrorEnvelope),
        (status = 409, description = "`cart_checked_out` (`details.order_id`): the cart was checked out; `conflict`: the cart was changed by another engine process meanwhile (retry)", body = ErrorEnvelope),
    )
)]
pub async fn remove_item(
    user: AuthUser,
    carts: web::Data<Carts>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, sku) = path.into_inner();
    let id = cart_id(&id)?;
    let sku = path_sku(&sku)?;
    let cart = carts.change(user.id, &id, LineChange::Remove(sku)).await?;
    Ok(HttpResponse::Ok().json(cart))
}

#[utoipa::path(
    post,
    path = "/api/v1/carts/{id}/checkout",
    tag = "carts",
    security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "The cart's id"),
        ("Prefer" = Option<String>, Header, description = "`respond-async`: answer 202 at once instead of waiting for the saga"),
    ),
    request_body = CheckoutBody,
    responses(
        (status = 201, description = "The saga finished: the order, `paid` (or `authorized` where capture is manual)", body = OrderView,
            headers(("Location" = String, description = "`/api/v1/orders/{id}`"))),
        (status = 202, description = "The saga goes on (the client sent `Prefer: respond-async`, or it did not finish within `checkout.sync_wait_ms`); poll the order", body = CheckoutAccepted,
            headers(("Location" = String, description = "`/api/v1/orders/{id}`"))),
        (status = 402, description = "`payment_declined`: the provider declined; `details.order_id` names the order, now `payment_failed`", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such cart, or not the caller's", body = ErrorEnvelope),
        (status = 409, description = "`out_of_stock`: `details.items: [{sku, requested, available}]` and `details.order_id` (the order, now `rejected`); `cart_checked_out`: the cart was checked out before, `details.order_id`; `conflict`: the cart was changed by another engine process meanwhile (retry)", body = ErrorEnvelope),
        (status = 422, description = "`empty_cart`: the cart has no lines; `validation_failed`, also for a payment provider other than the engine's or a bad payment token", body = ErrorEnvelope),
    )
)]
pub async fn checkout(
    req: HttpRequest,
    user: AuthUser,
    checkout: web::Data<Checkout>,
    path: web::Path<String>,
    key: IdempotencyKey,
    Json(body): Json<CheckoutBody>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&path)?;
    let payment = parse_payment(&body.payment, checkout.payments())?;
    let (user_id, wait) = (user.id, wait_of(&req));
    once(&req, &user, key, &body, move |claim| async move {
        let outcome = checkout.cart(user_id, &id, payment, claim, wait).await?;
        checkout_answer(outcome)
    })
    .await
}
