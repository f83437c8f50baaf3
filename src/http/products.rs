//! `/api/v1/products`: admin writes, public reads.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::errors::ApiError;
use super::extract::Json;
use super::identity::{AdminUser, AuthUser};
use super::pagination::{Page, PageQuery};
use crate::actors::Inventory;
use crate::catalog::Catalog;
use crate::domain::inventory::Sku;
use crate::domain::product::{NewProduct, ProductPatch};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    sku: String,
    name: String,
    description: Option<String>,
    price: i64,
    currency: String,
    initial_stock: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchProduct {
    name: Option<String>,
    /// Absent leaves it; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    description: Option<Option<String>>,
    price: Option<i64>,
    active: Option<bool>,
}

/// Tells a field that is present (even `null`) from one that is absent.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// A sku in a path that is not a valid sku names nothing: 404.
pub fn path_sku(raw: &str) -> Result<Sku, ApiError> {
    Sku::parse(raw).map_err(|_| ApiError::NotFound)
}

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
