//! `/api/v1/products`: admin writes, public reads.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::errors::ApiError;
use super::extract::{path_sku, Json};
use super::identity::{AdminUser, AuthUser};
use super::pagination::{Page, PageQuery};
use super::schemas::ErrorEnvelope;
use crate::catalog::{Catalog, Product};
use crate::domain::inventory::Sku;
use crate::domain::product::{NewProduct, ProductPatch};
use crate::inventory::Inventory;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", example = "tee-red-m")]
    sku: String,
    /// Trimmed; no control characters.
    #[schema(min_length = 1, max_length = 200)]
    name: String,
    #[schema(max_length = 5000)]
    description: Option<String>,
    /// Minor units.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price: i64,
    /// ISO-4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "USD")]
    currency: String,
    /// Default 0.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    initial_stock: Option<i64>,
}

/// At least one field must be given.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchProduct {
    #[schema(min_length = 1, max_length = 200)]
    name: Option<String>,
    /// Absent leaves it; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 5000)]
    description: Option<Option<String>>,
    #[schema(minimum = 0, maximum = 1_000_000_000_000_i64)]
    price: Option<i64>,
    /// An inactive product is hidden from customers' lists and cannot be added to carts.
    active: Option<bool>,
}

/// Tells a field that is present (even `null`) from one that is absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[utoipa::path(
    post,
    path = "/api/v1/products",
    tag = "products",
    security(("bearer" = [])),
    request_body = CreateProduct,
    responses(
        (status = 201, description = "The product, with its `availability`", body = Product),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 409, description = "`conflict`: a product with this sku exists", body = ErrorEnvelope),
    )
)]
pub async fn create(
    _admin: AdminUser,
    catalog: web::Data<Catalog>,
    inventory: web::Data<Inventory>,
    Json(body): Json<CreateProduct>,
) -> Result<HttpResponse, ApiError> {
    let new = NewProduct::parse(
        &body.sku,
        &body.name,
        body.description.as_deref(),
        body.price,
        &body.currency,
        body.initial_stock,
    )
    .map_err(ApiError::validation)?;
    let product = catalog.create(&new).await?;
    // An actor that looked for this SKU before it existed must not answer
    // "unknown" any more.
    inventory.forget(&new.sku);
    Ok(HttpResponse::Created().json(product))
}

#[utoipa::path(
    get,
    path = "/api/v1/products",
    tag = "products",
    security((), ("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "Products ordered by sku, without `availability`; inactive ones only for an admin's token (any other token, valid or not, lists as anyone)", body = Page<Product>),
        (status = 400, description = "`invalid_query`: `limit` outside 1..=200 or an unusable `cursor`", body = ErrorEnvelope),
    )
)]
pub async fn list(
    user: Option<AuthUser>,
    catalog: web::Data<Catalog>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let after = query.cursor(Sku::parse)?;
    let admin = user.is_some_and(|u| u.is_admin());
    let items = catalog
        .list(after.as_ref(), query.fetch_limit()?, admin)
        .await?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |p| p.sku.clone())))
}

#[utoipa::path(
    get,
    path = "/api/v1/products/{sku}",
    tag = "products",
    params(("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product's sku")),
    responses(
        (status = 200, description = "The product with `availability: {on_hand, reserved, available}`; an inactive one too, with `active: false`", body = Product),
        (status = 404, description = "`not_found`: no such product (or not a valid sku)", body = ErrorEnvelope),
    )
)]
pub async fn get(
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&sku)?;
    let document = catalog
        .get_document(&sku)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .body(document.to_string()))
}

#[utoipa::path(
    patch,
    path = "/api/v1/products/{sku}",
    tag = "products",
    security(("bearer" = [])),
    params(("sku" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description = "The product's sku")),
    request_body = PatchProduct,
    responses(
        (status = 200, description = "The changed product", body = Product),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
        (status = 404, description = "`not_found`: no such product", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`, also for a patch that changes nothing", body = ErrorEnvelope),
    )
)]
pub async fn patch(
    _admin: AdminUser,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    Json(body): Json<PatchProduct>,
) -> Result<HttpResponse, ApiError> {
    let sku = path_sku(&sku)?;
    let patch = ProductPatch::parse(
        body.name.as_deref(),
        body.description.as_ref().map(|d| d.as_deref()),
        body.price,
        body.active,
    )
    .map_err(ApiError::validation)?;
    let product = catalog
        .patch(&sku, patch)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(product))
}
