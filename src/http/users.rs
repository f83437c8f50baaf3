//! `GET /api/v1/users/me` and the admin listing `GET /api/v1/users`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::errors::ApiError;
use super::identity::{AdminUser, AuthUser};
use crate::auth::accounts::Accounts;
use crate::domain::user::User;

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 200;

/// `{"items": [...], "next_cursor": ...}`, the shape of every list.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Ok(limit)
    }

    /// Cursors are opaque to clients; here, the id of the last item seen.
    fn after(&self) -> Result<Option<Uuid>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| ApiError::InvalidQuery("cursor is not valid".to_owned()))
            })
            .transpose()
    }
}

pub async fn me(user: AuthUser, accounts: web::Data<Accounts>) -> Result<HttpResponse, ApiError> {
    // A valid token for an account that no longer exists proves nothing.
    let user = accounts
        .find(user.id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    Ok(HttpResponse::Ok().json(user))
}

pub async fn list(
    _admin: AdminUser,
    accounts: web::Data<Accounts>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit()?;
    // One extra row tells whether another page exists.
    let mut items: Vec<User> = accounts.list(query.after()?, i64::from(limit) + 1).await?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|u| u.id.to_string())
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(Page { items, next_cursor }))
}
