//! `POST /api/v1/auth/register` and `POST /api/v1/auth/login`.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};

use super::errors::ApiError;
use super::extract::Json;
use crate::auth::accounts::Accounts;
use crate::auth::token::IssuedToken;
use crate::domain::user::User;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    email: String,
    password: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
}

#[derive(Debug, Serialize)]
pub struct SessionResponse {
    user: User,
    access_token: String,
    token_type: &'static str,
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

pub async fn register(
    accounts: web::Data<Accounts>,
    Json(body): Json<RegisterRequest>,
) -> Result<HttpResponse, ApiError> {
    let (user, token) = accounts
        .register(&body.email, &body.password, &body.name)
        .await?;
    Ok(HttpResponse::Created().json(SessionResponse::new(user, token)))
}

pub async fn login(
    req: HttpRequest,
    accounts: web::Data<Accounts>,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let client_ip = req.peer_addr().map(|addr| addr.ip());
    let (user, token) = accounts
        .login(&body.email, &body.password, client_ip)
        .await?;
    Ok(HttpResponse::Ok().json(SessionResponse::new(user, token)))
}
