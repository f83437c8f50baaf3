//! `/api/v1/carts`: a customer's carts and their checkout.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::{Json, OptionalJson};
use super::idempotency::{once, IdempotencyKey};
use super::identity::AuthUser;
use super::orders::{
    parse_payment, placement, respond_with_saga, CheckoutWait, PaymentBody, Placement,
};
use super::products::path_sku;
use crate::carts::{Carts, LineChange};
use crate::domain::inventory::{Sku, MAX_LINE_QUANTITY};
use crate::domain::order::parse_quantity;
use crate::domain::product::Currency;
use crate::orders::Orders;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCart {
    currency: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddItem {
    sku: String,
    quantity: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuantity {
    quantity: i64,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Checkout {
    payment: PaymentBody,
}

/// A cart id that is not a UUID names nothing: 404.
fn cart_id(raw: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(raw)
        .map(|id| id.to_string())
        .map_err(|_| ApiError::NotFound)
}

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

pub async fn get(
    user: AuthUser,
    carts: web::Data<Carts>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&path)?;
    let cart = carts.get(user.id, user.is_admin(), &id).await?;
    Ok(HttpResponse::Ok().json(cart))
}

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

// Each argument is an extractor; bundling them would only hide what the handler reads.
#[allow(clippy::too_many_arguments)]
pub async fn checkout(
    req: HttpRequest,
    user: AuthUser,
    carts: web::Data<Carts>,
    orders: web::Data<Orders>,
    wait: web::Data<CheckoutWait>,
    path: web::Path<String>,
    key: IdempotencyKey,
    Json(body): Json<Checkout>,
) -> Result<HttpResponse, ApiError> {
    let id = cart_id(&path)?;
    let payment = parse_payment(&body.payment, &orders)?;
    let user_id = user.id;
    let request = req.clone();
    once(&req, &user, key, &body, move |claim| async move {
        let order_id = match placement(claim) {
            Placement::Placed(order_id) => order_id,
            Placement::ToPlace(idempotency) => {
                carts.checkout(user_id, &id, payment, idempotency).await?
            }
        };
        respond_with_saga(&request, &orders, &order_id, wait.0).await
    })
    .await
}
