//! Who is calling: bearer-token extractors.
//!
//! [`AuthUser`] accepts a valid access token (signature, algorithm, expiry)
//! whose account still exists (401 otherwise), with the account's current
//! role; [`AdminUser`] also requires the admin role (403 otherwise).

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;

use super::errors::ApiError;
use crate::auth::accounts::Accounts;
use crate::auth::token::{Claims, TokenService};
use crate::domain::ids::UserId;
use crate::domain::user::Role;

#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: UserId,
    pub role: Role,
}

impl AuthUser {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AdminUser(pub AuthUser);

/// The request's bearer token, already verified by a middleware (the write
/// limits), so the extractor does not verify it again.
#[derive(Debug, Clone)]
pub struct VerifiedToken(pub Claims);

impl FromRequest for AuthUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        Box::pin(authenticate(req.clone()))
    }
}

impl FromRequest for AdminUser {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let user = authenticate(req.clone());
        Box::pin(async move {
            let user = user.await?;
            if user.is_admin() {
                Ok(AdminUser(user))
            } else {
                Err(ApiError::Forbidden)
            }
        })
    }
}

async fn authenticate(req: HttpRequest) -> Result<AuthUser, ApiError> {
    let missing = |what| ApiError::Internal(anyhow::anyhow!("{what} missing from app data"));
    let tokens = req
        .app_data::<web::Data<TokenService>>()
        .ok_or_else(|| missing("TokenService"))?;
    let accounts = req
        .app_data::<web::Data<Accounts>>()
        .ok_or_else(|| missing("Accounts"))?;
    let verified = req.extensions().get::<VerifiedToken>().map(|v| v.0.clone());
    let claims = match verified {
        Some(claims) => claims,
        None => {
            let token = bearer_token(&req).ok_or(ApiError::Unauthorized)?;
            tokens.verify(token).map_err(|e| {
                tracing::debug!(error = %e, "rejected access token");
                ApiError::Unauthorized
            })?
        }
    };
    let role = accounts.role_now(claims.sub).await?.ok_or_else(|| {
        tracing::debug!(user.id = %claims.sub, "token of an account that does not exist");
        ApiError::Unauthorized
    })?;
    Ok(AuthUser {
        id: UserId::from(claims.sub),
        role,
    })
}

pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
