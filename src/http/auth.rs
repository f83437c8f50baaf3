//! `POST /api/v1/auth/register` and `POST /api/v1/auth/login`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::client_ip::client_ip;
use super::errors::ApiError;
use super::extract::Json;
use super::schemas::ErrorEnvelope;
use crate::auth::accounts::Accounts;
use crate::auth::token::IssuedToken;
use crate::domain::user::User;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Trimmed and lower-cased: one account per address however it is typed.
    #[schema(format = Email, max_length = 254, example = "ada@example.com")]
    email: String,
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    /// Without control characters; trimmed.
    #[schema(min_length = 1, max_length = 200, example = "Ada")]
    name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionResponse {
    user: User,
    /// A JWT (HS256) to send as `Authorization: Bearer <token>`.
    access_token: String,
    #[schema(value_type = String, example = "Bearer")]
    token_type: &'static str,
    /// Seconds until the token expires.
    expires_in: u64,
}

impl SessionResponse {
    fn new(user: User, token: IssuedToken) -> Self {
        SessionResponse {
            user,
            access_token: token.access_token,
            token_type: "Bearer",
            expires_in: token.expires_in,
        }
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/register",
    tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "The account, and a token for it", body = SessionResponse),
        (status = 409, description = "`email_taken`: an account with this email exists", body = ErrorEnvelope),
        (status = 422, description = "`validation_failed`: a bad email, a password outside 8..=1024 characters, or a bad name", body = ErrorEnvelope),
    )
)]
pub async fn register(
    accounts: web::Data<Accounts>,
    Json(body): Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let (user, token) = accounts
        .register(&body.email, &body.password, &body.name)
        .await?;
    Ok(HttpResponse::Created().json(SessionResponse::new(user, token)))
}

#[utoipa::path(
    post,
    path = "/api/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "A token for the account", body = SessionResponse),
        (status = 401, description = "`unauthorized`: wrong email or password (no hint which)", body = ErrorEnvelope,
            headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
        (status = 429, description = "`rate_limited`: too many failed logins for this email or client address", body = ErrorEnvelope),
    )
)]
pub async fn login(
    req: HttpRequest,
    accounts: web::Data<Accounts>,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let client_ip = client_ip(&req);
    let (user, token) = accounts
        .login(&body.email, &body.password, client_ip)
        .await?;
    Ok(HttpResponse::Ok().json(SessionResponse::new(user, token)))
}
