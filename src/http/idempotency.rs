//! The `Idempotency-Key` header on the POSTs that create or move money or
//! stock (checkout, `POST /orders`, refunds, cancel, capture); the rules are
//! in [`crate::idempotency`].
//!
//! A handler validates its input first (a request refused before any effect
//! stores nothing), then hands the effect to [`once`]. The keyed part runs
//! in a task of its own, so a client that hangs up mid-request cannot cut
//! it between the effect and the record of its answer; the key's lock is
//! renewed while it runs; a panic is answered as a 500 and gives the key
//! back.

use std::future::{ready, Future, Ready};
use std::panic::AssertUnwindSafe;

use actix_web::body::{self, BoxBody};
use actix_web::dev::Payload;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use futures_util::FutureExt;
use serde::Serialize;

use super::errors::ApiError;
use super::identity::AuthUser;
use crate::idempotency::{
    fingerprint, valid_key, Begin, Claim, Idempotency, IdempotencyError, Replay, MAX_KEY_LEN,
};

pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
pub const IDEMPOTENT_REPLAYED: &str = "Idempotent-Replayed";

/// Response headers kept with a stored answer.
const KEPT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::LOCATION];

/// The request's `Idempotency-Key`, if it sent one: 422 when it is not
/// 1..=255 visible ASCII characters, or sent twice.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let mut values = req.headers().get_all(IDEMPOTENCY_KEY);
        let key = match (values.next(), values.next()) {
            (None, _) => Ok(IdempotencyKey(None)),
            (Some(value), None) => match value.to_str() {
                Ok(key) if valid_key(key) => Ok(IdempotencyKey(Some(key.to_owned()))),
                _ => Err(invalid_key()),
            },
            (Some(_), Some(_)) => Err(invalid_key()),
        };
        ready(key)
    }
}

fn invalid_key() -> ApiError {
    ApiError::field(
        IDEMPOTENCY_KEY,
        format!("must be sent once, as 1-{MAX_KEY_LEN} visible ASCII characters"),
    )
}

/// Runs `effect` once per key: the first request with `key` runs it and its
/// answer is kept; a retry (same user, method, path and `body`) gets that
/// answer again. Without a key, `effect` simply runs. `effect` receives the
/// claim to bind in its transaction; a claim with a resource means the
/// effect already happened (its first run crashed or failed before
/// answering) and must only be answered from.
pub async fn once<B, F, Fut>(
    req: &HttpRequest,
    user: &AuthUser,
    key: IdempotencyKey,
    body: &B,
    effect: F,
) -> Result<HttpResponse, ApiError>
where
    B: Serialize,
    F: FnOnce(Option<Claim>) -> Fut + 'static,
    Fut: Future<Output = Result<HttpResponse, ApiError>> + 'static,
{
    let Some(key) = key.0 else {
        return effect(None).await;
    };
    let keys = req
        .app_data::<web::Data<Idempotency>>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("idempotency service not configured")))?
        .clone();
    let canonical = serde_json::to_string(body).map_err(|e| ApiError::Internal(e.into()))?;
    let print = fingerprint(req.method().as_str(), req.path(), &canonical);
    let user_id = user.id.to_string();
    // From taking the key to recording the answer, in a task of its own: a
    // client that hangs up cannot leave the key taken and unanswered.
    let task = actix_web::rt::spawn(async move {
        let claim = match keys.begin(&user_id, &key, &print).await {
            Ok(Begin::Run(claim)) => claim,
            Ok(Begin::Replay(answer)) => return Ok(replayed(answer)),
            Err(IdempotencyError::InUse) => return Err(ApiError::idempotency_key_in_use()),
            Err(IdempotencyError::Reused) => return Err(ApiError::idempotency_key_reused()),
            Err(IdempotencyError::Db(e)) => return Err(e.into()),
        };
        let binding = claim.binding.clone();
        let run = AssertUnwindSafe(effect(Some(claim))).catch_unwind();
        let response = match keys.hold_while(&binding, run).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => e.error_response(),
            // Answered as a 500 below, which gives the key back.
            Err(_) => ApiError::Internal(anyhow::anyhow!("an idempotent request panicked"))
                .error_response(),
        };
        let (head, body) = response.into_parts();
        let bytes = body::to_bytes(body).await.unwrap_or_default();
        let kept: Vec<(String, String)> = KEPT_HEADERS
            .iter()
            .filter_map(|name| {
                let value = head.headers().get(name)?.to_str().ok()?;
                Some((name.as_str().to_owned(), value.to_owned()))
            })
            .collect();
        keys.finish(
            &binding,
            head.status().as_u16(),
            &kept,
            &String::from_utf8_lossy(&bytes),
        )
        .await;
        Ok(head.set_body(BoxBody::new(bytes)))
    });
    task.await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("idempotent request task failed: {e}")))?
}

/// A stored answer, sent again.
fn replayed(answer: Replay) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.insert_header((name, value));
        }
    }
    response.insert_header((IDEMPOTENT_REPLAYED, "true"));
    response.body(answer.body)
}
