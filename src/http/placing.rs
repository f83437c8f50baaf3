//! What the two ways of placing an order share (a cart's checkout and
//! `POST /orders`): the payment part of the body, `Prefer: respond-async`,
//! and the checkout's outcome as an HTTP answer.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::errors::{payment_declined, ApiError};
use crate::orders::{CheckoutOutcome, PaymentInput, Wait};
use crate::payments::Payments;

const TOKEN_MAX_CHARS: usize = 200;

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Payment)]
pub struct PaymentBody {
    /// Must be the provider this engine is configured with, if given.
    #[schema(example = "sandbox")]
    provider: Option<String>,
    /// The provider's payment token (sandbox: `tok_ok`, `tok_declined`, ...);
    /// 1..=200 characters after trimming, no control characters.
    #[schema(min_length = 1, max_length = 200, example = "tok_ok")]
    token: String,
}

/// The payment part of a checkout: the configured provider (or none named)
/// and a token.
pub fn parse_payment(body: &PaymentBody, payments: &Payments) -> Result<PaymentInput, ApiError> {
    let configured = payments.provider.name();
    if let Some(provider) = &body.provider {
        if provider != configured {
            return Err(ApiError::field(
                "payment.provider",
                format!("must be \"{configured}\", the provider this engine uses"),
            ));
        }
    }
    let token = body.token.trim();
    if token.is_empty()
        || token.chars().count() > TOKEN_MAX_CHARS
        || token.chars().any(char::is_control)
    {
        return Err(ApiError::field(
            "payment.token",
            format!("must be 1-{TOKEN_MAX_CHARS} characters"),
        ));
    }
    Ok(PaymentInput {
        token: token.to_owned(),
    })
}

/// `Prefer: respond-async` asks for a 202 at once instead of waiting for
/// the saga.
pub fn wait_of(req: &HttpRequest) -> Wait {
    let prefer_async = req
        .headers()
        .get_all("Prefer")
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        });
    if prefer_async {
        Wait::No
    } else {
        Wait::ForSaga
    }
}

/// 201 with the order, 202 while its saga goes on, 409 `out_of_stock` for
/// a rejected order, 402 `payment_declined` for a declined one.
pub fn checkout_answer(outcome: CheckoutOutcome) -> Result<HttpResponse, ApiError> {
    let location = format!("/api/v1/orders/{}", outcome.order_id());
    match outcome {
        CheckoutOutcome::Placed(view) => Ok(HttpResponse::Created()
            .insert_header((header::LOCATION, location))
            .json(view)),
        CheckoutOutcome::Accepted { order_id } => Ok(HttpResponse::Accepted()
            .insert_header((header::LOCATION, location))
            .json(json!({ "order_id": order_id, "status": "pending" }))),
        CheckoutOutcome::Rejected {
            order_id,
            mut details,
        } => {
            details["order_id"] = json!(order_id);
            Err(ApiError::OutOfStock { details })
        }
        CheckoutOutcome::Declined { order_id } => {
            Err(payment_declined(json!({ "order_id": order_id })))
        }
    }
}
