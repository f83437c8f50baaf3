//! Who is calling: bearer-token extractors.
//!
//! [`AuthUser`] accepts any valid access token (401 otherwise); [`AdminUser`]
//! also requires the admin role (403 otherwise). Verification is local (the
//! signature and expiry); handlers that need the account itself load it.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use uuid::Uuid;

use super::errors::ApiError;
use crate::auth::token::TokenService;
use crate::domain::user::Role;

#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
    pub role: Role,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub AuthUser);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req).and_then(|user| {
            if user.is_admin() {
                Ok(AdminUser(user))
            } else {
                Err(ApiError::Forbidden)
            }
        }))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, ApiError> {
    let tokens = req
        .app_data::<web::Data<TokenService>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("TokenService missing from app data")))?;
    let token = bearer_token(req).ok_or(ApiError::Unauthorized)?;
    let claims = tokens.verify(token).map_err(|e| {
        tracing::debug!(error = %e, "rejected access token");
        ApiError::Unauthorized
    })?;
    Ok(AuthUser {
        id: claims.sub,
        role: claims.role,
    })
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
