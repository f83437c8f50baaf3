//! `GET /api/v1/users/me` and the admin listing `GET /api/v1/users`.

use actix_web::{web, HttpResponse};
use uuid::Uuid;

use super::errors::ApiError;
use super::identity::{AdminUser, AuthUser};
use super::pagination::{Page, PageQuery};
use super::schemas::ErrorEnvelope;
use crate::auth::accounts::Accounts;
use crate::domain::user::User;

#[utoipa::path(
    get,
    path = "/api/v1/users/me",
    tag = "users",
    security(("bearer" = [])),
    responses((status = 200, description = "The caller's account", body = User))
)]
pub async fn me(user: AuthUser, accounts: web::Data<Accounts>) -> Result<HttpResponse, ApiError> {
    // A valid token for an account that no longer exists proves nothing.
    let user = accounts
        .find(user.id.uuid())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(HttpResponse::Ok().json(user))
}

#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "users",
    security(("bearer" = [])),
    params(PageQuery),
    responses(
        (status = 200, description = "Accounts, ordered by id", body = Page<User>),
        (status = 400, description = "`invalid_query`: `limit` outside 1..=200 or an unusable `cursor`", body = ErrorEnvelope),
        (status = 403, description = "`forbidden`: not an admin", body = ErrorEnvelope),
    )
)]
pub async fn list(
    _admin: AdminUser,
    accounts: web::Data<Accounts>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    let after = query.cursor(Uuid::parse_str)?;
    let items: Vec<User> = accounts.list(after, query.fetch_limit()?).await?;
    Ok(HttpResponse::Ok().json(Page::from_overfetch(items, limit, |u| u.id.to_string())))
}
