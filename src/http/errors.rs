//! The one error type of the HTTP layer and its envelope.
//!
//! Error policy: handlers return `Result<_, ApiError>`. Every variant has a
//! stable snake_case `code` and a status, chosen in exhaustive matches (no `_`
//! arm), so a new variant forces a decision. Unexpected errors (`Internal`) are
//! logged once, here, and the client sees a generic message: SQL, stack
//! traces and other internals never reach it. Every error body has the shape
//! `{"error": {"code", "message", "details"}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::ErrorHandlerResponse;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{json, Value};

use crate::auth::accounts::AccountError;
use crate::catalog::CatalogError;
use crate::db::DbError;
use crate::domain::FieldError;
use crate::inventory::InventoryError;

/// What a client is told to wait before retrying a 503.
const UNAVAILABLE_RETRY_AFTER_S: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the query string is invalid: {0}")]
    InvalidQuery(String),
    #[error("the request is invalid")]
    Validation(BTreeMap<String, String>),
    #[error("authentication is required")]
    Unauthorized,
    #[error("you are not allowed to do this")]
    Forbidden,
    #[error("no such resource")]
    NotFound,
    #[error("this method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("an account with this email already exists")]
    EmailTaken,
    /// A state conflict: duplicate key, or a change the current state forbids.
    #[error("{message}")]
    Conflict { message: String, details: Value },
    #[error("not enough stock")]
    OutOfStock { details: Value },
    /// A business rule of orders and carts refused the request: 402
    /// `payment_declined`, 409 `cart_checked_out` or `invalid_transition`,
    /// 422 `empty_cart` or `refund_exceeds_captured`.
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("too many requests; retry later")]
    RateLimited { retry_after: Duration },
    #[error("the engine is at capacity; retry shortly")]
    Overloaded,
    #[error("a dependency is unavailable; retry shortly")]
    Unavailable(String),
    /// Anything unexpected: a 500. Build it with `?` or `.into()` (see
    /// `From<anyhow::Error>`), which answers an outage hidden inside with
    /// 503 instead.
    #[error("internal error")]
    Internal(anyhow::Error),
}

/// An unexpected error, unless a database outage is what it carries: then
/// 503 `unavailable`, as every outage is.
impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        if carries_outage(&e) {
            ApiError::Unavailable(format!("{e:#}"))
        } else {
            ApiError::Internal(e)
        }
    }
}

/// Whether a database outage is in `e`'s chain of causes: an error wrapped
/// into `anyhow` keeps its type, so the classification survives the wrap.
fn carries_outage(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<DbError>()
            .is_some_and(DbError::is_unavailable)
            || cause
                .downcast_ref::<diesel::result::Error>()
                .is_some_and(crate::db::is_outage)
    })
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidQuery(_) => "invalid_query",
            ApiError::Validation(_) => "validation_failed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::EmailTaken => "email_taken",
            ApiError::Conflict { .. } => "conflict",
            ApiError::OutOfStock { .. } => "out_of_stock",
            ApiError::Refused { code, .. } => code,
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal_error",
        }
    }

    fn details(&self) -> Value {
        match self {
            ApiError::Validation(fields) => json!({ "fields": fields }),
            ApiError::PayloadTooLarge { limit } => json!({ "limit_bytes": limit }),
            ApiError::Conflict { details, .. }
            | ApiError::OutOfStock { details }
            | ApiError::Refused { details, .. } => details.clone(),
            ApiError::RateLimited { retry_after } => {
                json!({ "retry_after_s": retry_after_secs(*retry_after) })
            }
            ApiError::InvalidJson(_)
            | ApiError::InvalidQuery(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::EmailTaken
            | ApiError::UnsupportedMediaType
            | ApiError::Overloaded
            | ApiError::Unavailable(_)
            | ApiError::Internal(_) => json!({}),
        }
    }

    /// The message shown to clients. Internal causes stay in the logs.
    fn public_message(&self) -> String {
        match self {
            ApiError::Unavailable(_) => "a dependency is unavailable; retry shortly".to_owned(),
            ApiError::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after } => Some(retry_after_secs(*retry_after)),
            ApiError::Overloaded | ApiError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_S),
            ApiError::InvalidJson(_)
            | ApiError::InvalidQuery(_)
            | ApiError::Validation(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden
            | ApiError::NotFound
            | ApiError::MethodNotAllowed
            | ApiError::EmailTaken
            | ApiError::Conflict { .. }
            | ApiError::OutOfStock { .. }
            | ApiError::Refused { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UnsupportedMediaType
            | ApiError::Internal(_) => None,
        }
    }

    pub fn validation(errors: impl IntoIterator<Item = FieldError>) -> ApiError {
        let mut fields = BTreeMap::new();
        for e in errors {
            fields.entry(e.field.to_owned()).or_insert(e.message);
        }
        ApiError::Validation(fields)
    }

    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Validation(BTreeMap::from([(field.into(), message.into())]))
    }
}

/// Whole seconds, rounded up, never 0: `Retry-After: 0` invites a hot loop.
fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) | ApiError::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EmailTaken | ApiError::Conflict { .. } | ApiError::OutOfStock { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Refused { status, .. } => *status,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Built directly rather than through `From`: still never a 500.
            ApiError::Internal(e) if carries_outage(e) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(e) = self {
            if carries_outage(e) {
                return ApiError::Unavailable(format!("{e:#}")).error_response();
            }
        }
        match self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "request failed"),
            ApiError::Unavailable(cause) => {
                tracing::warn!(cause = %cause, "dependency unavailable")
            }
            _ => {}
        }
        let mut response = envelope(
            self.status_code(),
            self.code(),
            &self.public_message(),
            self.details(),
        );
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if matches!(self, ApiError::Unauthorized) {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

fn envelope(status: StatusCode, code: &str, message: &str, details: Value) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": { "code": code, "message": message, "details": details }
    }))
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        DbError::from(e).into()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        if e.is_unavailable() {
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.into())
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::SkuTaken => ApiError::Conflict {
                message: "a product with this sku already exists".to_owned(),
                details: json!({}),
            },
            CatalogError::Db(e) => e.into(),
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::UnknownSku | InventoryError::ReservationNotFound { .. } => {
                ApiError::NotFound
            }
            InventoryError::OutOfStock {
                requested,
                available,
            } => ApiError::OutOfStock {
                details: json!({ "requested": requested, "available": available }),
            },
            InventoryError::AdjustmentConflict {
                on_hand,
                reserved,
                delta,
            } => ApiError::Conflict {
                message: "the adjustment would take on_hand below what is reserved".to_owned(),
                details: json!({ "on_hand": on_hand, "reserved": reserved, "delta": delta }),
            },
            InventoryError::InvalidQuantity { field, message } => ApiError::field(field, message),
            InventoryError::Overloaded => ApiError::Overloaded,
            InventoryError::Unavailable(cause) => ApiError::Unavailable(cause),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(fields) => ApiError::validation(fields),
            AccountError::EmailTaken => ApiError::EmailTaken,
            AccountError::InvalidCredentials => ApiError::Unauthorized,
            AccountError::RateLimited { retry_after } => ApiError::RateLimited { retry_after },
            AccountError::Overloaded => ApiError::Overloaded,
            AccountError::Db(e) => e.into(),
            AccountError::Internal(e) => e.into(),
        }
    }
}

/// Last line of defence for error responses produced outside our handlers
/// (actix's own 405s, 404s of resources, extractor errors we did not map):
/// any error status without a JSON body gets the standard envelope.
pub fn envelope_fallback<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let (code, message) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request is malformed"),
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this method is not allowed on this resource",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the request body must be application/json",
        ),
        StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "the service is unavailable; retry shortly")
        }
        s if s.is_server_error() => ("internal_error", "internal error"),
        _ => ("bad_request", "the request was rejected"),
    };
    let (req, original) = res.into_parts();
    let mut replacement: HttpResponse<BoxBody> = envelope(status, code, message, json!({}));
    for (name, value) in original.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replacement
                .headers_mut()
                .insert(name.clone(), value.clone());
        }
    }
    let res: ServiceResponse<EitherBody<B, BoxBody>> =
        ServiceResponse::new(req, replacement).map_into_right_body();
    Ok(ErrorHandlerResponse::Response(res))
}

impl From<crate::orders::OrdersError> for ApiError {
    fn from(e: crate::orders::OrdersError) -> Self {
        use crate::orders::OrdersError;
        let refused = |status, code, message: String, details| ApiError::Refused {
            status,
            code,
            message,
            details,
        };
        match e {
            OrdersError::NotFound => ApiError::NotFound,
            OrdersError::Validation(errors) => ApiError::validation(errors),
            OrdersError::EmptyCart => refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty_cart",
                "the cart is empty".to_owned(),
                json!({}),
            ),
            OrdersError::CartCheckedOut { order_id } => refused(
                StatusCode::CONFLICT,
                "cart_checked_out",
                "the cart has been checked out".to_owned(),
                json!({ "order_id": order_id }),
            ),
            OrdersError::InvalidTransition { from, action } => refused(
                StatusCode::CONFLICT,
                "invalid_transition",
                format!("cannot {action} an order that is {from}"),
                json!({ "from": from.as_str(), "action": action }),
            ),
            OrdersError::RefundExceedsCaptured { refundable } => refused(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refund_exceeds_captured",
                format!("at most {refundable} can still be refunded"),
                json!({ "refundable": refundable }),
            ),
            OrdersError::Conflict(message) => ApiError::Conflict {
                message,
                details: json!({}),
            },
            OrdersError::IdempotencyKeyInUse => ApiError::idempotency_key_in_use(),
            OrdersError::Overloaded => ApiError::Overloaded,
            OrdersError::Unavailable(cause) => ApiError::Unavailable(cause),
            OrdersError::Db(e) => e.into(),
        }
    }
}

impl ApiError {
    /// 409 `idempotency_key_in_use`: the first request with this key is
    /// still running.
    pub fn idempotency_key_in_use() -> ApiError {
        ApiError::Refused {
            status: StatusCode::CONFLICT,
            code: "idempotency_key_in_use",
            message: "a request with this Idempotency-Key is still in progress; retry shortly"
                .to_owned(),
            details: json!({}),
        }
    }

    /// 422 `idempotency_key_reused`: the key was used for another request.
    pub fn idempotency_key_reused() -> ApiError {
        ApiError::Refused {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            code: "idempotency_key_reused",
            message: "this Idempotency-Key was used for a different request".to_owned(),
            details: json!({}),
        }
    }
}

/// 402 `payment_declined`, with the provider's reason when it gave one.
pub fn payment_declined(details: Value) -> ApiError {
    ApiError::Refused {
        status: StatusCode::PAYMENT_REQUIRED,
        code: "payment_declined",
        message: "the payment was declined".to_owned(),
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(e: ApiError) -> (StatusCode, Value, Option<String>) {
        let res = e.error_response();
        let status = res.status();
        let retry = res
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let bytes = res.into_body().try_into_bytes().unwrap();
        (status, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let (status, body, _) =
            body_of(ApiError::Internal(anyhow::anyhow!("SELECT * FROM secret")));
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("SELECT"));
    }

    #[test]
    fn validation_lists_fields() {
        let (status, body, _) = body_of(ApiError::validation([FieldError::new("email", "bad")]));
        assert_eq!(status, 422);
        assert_eq!(body["error"]["details"]["fields"]["email"], "bad");
    }

    #[test]
    fn rate_limited_rounds_retry_after_up() {
        let (status, body, retry) = body_of(ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        });
        assert_eq!(status, 429);
        assert_eq!(retry.as_deref(), Some("2"));
        assert_eq!(body["error"]["details"]["retry_after_s"], 2);
    }

    #[test]
    fn overload_says_when_to_retry() {
        let (status, body, retry) = body_of(ApiError::Overloaded);
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "overloaded");
        assert_eq!(retry.as_deref(), Some("1"));
    }

    fn terminated() -> diesel::result::Error {
        diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new("terminating connection due to administrator command".to_owned()),
        )
    }

    #[track_caller]
    fn assert_unavailable(e: ApiError) {
        assert_eq!(e.status_code(), 503, "{e:?}");
        let (status, body, retry) = body_of(e);
        assert_eq!(status, 503);
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(!body.to_string().contains("administrator"), "{body}");
    }

    #[test]
    fn outages_are_503_by_every_path() {
        assert_unavailable(terminated().into());
        assert_unavailable(DbError::Query(terminated()).into());
        assert_unavailable(CatalogError::Db(DbError::Query(terminated())).into());
        assert_unavailable(
            crate::orders::OrdersError::Db(DbError::Query(
                diesel::result::Error::BrokenTransactionManager,
            ))
            .into(),
        );
        assert_unavailable(AccountError::Db(DbError::Unavailable("pool timed out".into())).into());
        // Wrapped into anyhow, by `?` or by hand, with context on top.
        let wrapped =
            anyhow::Error::from(DbError::Query(terminated())).context("placing the order");
        assert_unavailable(wrapped.into());
        assert_unavailable(AccountError::Internal(anyhow::Error::from(terminated())).into());
        assert_unavailable(ApiError::Internal(anyhow::Error::from(terminated())));
    }

    #[test]
    fn faults_stay_500() {
        let fault = diesel::result::Error::DeserializationError("bad column".into());
        let (status, body, retry) = body_of(fault.into());
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "internal_error");
        assert_eq!(retry, None);
        let (status, _, _) = body_of(anyhow::anyhow!("connection closed").into());
        assert_eq!(
            status, 500,
            "only a typed database error counts, never a message"
        );
    }
}
