//! Rate limits on writes: every POST, PUT, PATCH and DELETE under `/api/v1`
//! takes one unit from its client IP's budget (`rate_limits.writes_per_ip`)
//! and, when it carries a valid access token, one from its user's
//! (`rate_limits.writes_per_user`), each per `rate_limits.writes_window_s`.
//! Over either: 429 `rate_limited` with `Retry-After`, before the handler
//! runs, so nothing changes. Reads are not limited here (they are cheap and
//! cached; admission control bounds them), nor are signed partner deliveries
//! under `/api/v1/integrations/`.
//!
//! The budgets are GCRA in Redis when it is configured, shared by every
//! engine process, and in-process otherwise (see [`crate::rate_limit`]).
//! The client IP is the TCP peer, or the address a trusted proxy forwarded
//! (`http.trusted_proxies`, see [`super::client_ip`]).

use std::future::{ready, Ready};
use std::rc::Rc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::HttpMessage;
use actix_web::{Error, ResponseError};
use futures_util::future::LocalBoxFuture;

use super::client_ip::{ClientAddress, TrustedProxies};
use super::errors::ApiError;
use super::identity::{bearer_token, VerifiedToken};
use super::API_PREFIX;
use crate::auth::token::TokenService;
use crate::config::RateLimitSettings;
use crate::rate_limit::{Decision, Quota, RateLimiter};
use crate::redis_conn::RedisConn;

/// Counter of requests refused by a rate limit, by `limit`.
pub const RATE_LIMITED: &str = "http_server_requests_rate_limited_total";

#[derive(Clone)]
pub struct WriteLimits {
    per_user: Option<RateLimiter>,
    per_ip: Option<RateLimiter>,
    tokens: TokenService,
    proxies: TrustedProxies,
}

impl WriteLimits {
    pub fn new(
        settings: &RateLimitSettings,
        tokens: TokenService,
        proxies: TrustedProxies,
        redis: Option<RedisConn>,
    ) -> WriteLimits {
        let window = Duration::from_secs(settings.writes_window_s);
        let limiter = |name, limit: u32| {
            (limit > 0).then(|| RateLimiter::new(name, Quota { limit, window }, redis.clone()))
        };
        WriteLimits {
            per_user: limiter("writes_user", settings.writes_per_user),
            per_ip: limiter("writes_ip", settings.writes_per_ip),
            tokens,
            proxies,
        }
    }

    /// Takes one unit from each budget the request falls under; on a refusal
    /// gives back what it took, so a refused request costs nothing.
    async fn admit(&self, user: Option<String>, ip: Option<String>) -> Result<(), ApiError> {
        let mut taken: Vec<(&RateLimiter, String)> = Vec::new();
        let checks = [
            (self.per_ip.as_ref(), ip, "writes_per_ip"),
            (self.per_user.as_ref(), user, "writes_per_user"),
        ];
        for (limiter, key, name) in checks {
            let (Some(limiter), Some(key)) = (limiter, key) else {
                continue;
            };
            match limiter.record(&key).await {
                Decision::Allowed => taken.push((limiter, key)),
                Decision::Limited { retry_after } => {
                    for (limiter, key) in &taken {
                        limiter.refund(key).await;
                    }
                    metrics::counter!(RATE_LIMITED, "limit" => name).increment(1);
                    return Err(ApiError::RateLimited { retry_after });
                }
            }
        }
        Ok(())
    }

    /// The user of a valid bearer token, remembered on the request so that
    /// the handler's extractor does not verify it again; anything else is
    /// left to the handler's own authentication (401).
    fn user_of(&self, req: &ServiceRequest) -> Option<String> {
        let claims = self.tokens.verify(bearer_token(req.request())?).ok()?;
        let user = claims.sub.to_string();
        req.extensions_mut().insert(VerifiedToken(claims));
        Some(user)
    }
}

/// Signed partner deliveries (`/integrations/...`) come in bursts from one
/// address and are authenticated by their signature; they are not limited.
const EXEMPT: &str = "/api/v1/integrations/";

fn is_limited(req: &ServiceRequest) -> bool {
    matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && req.path().starts_with(API_PREFIX)
        && !req.path().starts_with(EXEMPT)
}

impl<S, B> Transform<S, ServiceRequest> for WriteLimits
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = WriteLimitsMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(WriteLimitsMiddleware {
            service: Rc::new(service),
            limits: self.clone(),
        }))
    }
}

pub struct WriteLimitsMiddleware<S> {
    service: Rc<S>,
    limits: WriteLimits,
}

impl<S, B> Service<ServiceRequest> for WriteLimitsMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        if !is_limited(&req) {
            return Box::pin(async move {
                service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body)
            });
        }
        let limits = self.limits.clone();
        let user = limits.user_of(&req);
        let ip = limits.proxies.of(req.request()).map(|ip| ip.to_string());
        Box::pin(async move {
            match limits.admit(user, ip).await {
                Ok(()) => service
                    .call(req)
                    .await
                    .map(ServiceResponse::map_into_left_body),
                Err(refused) => {
                    let response = refused.error_response();
                    Ok(req.into_response(response).map_into_right_body())
                }
            }
        })
    }
}
