//! The PayPal provider: an HTTP adapter for PayPal's v2 Orders and Payments
//! REST APIs.
//!
//! The customer approves a PayPal order in the browser; its id arrives here
//! as [`PaymentRequest::token`]. The operations map to:
//!
//! | operation | call | reference returned |
//! | --- | --- | --- |
//! | authorize | `POST /v2/checkout/orders/{token}/authorize` | the authorization id |
//! | capture | `POST /v2/payments/authorizations/{reference}/capture` | the capture id |
//! | void | `POST /v2/payments/authorizations/{reference}/void` | the authorization id |
//! | refund | `POST /v2/payments/captures/{reference}/refund` | the refund id |
//!
//! **Credentials.** An OAuth2 client-credentials token
//! (`POST /v1/oauth2/token`, HTTP Basic `client_id:client_secret`) is cached
//! until a minute (at most half its lifetime) before it expires. A 401 from
//! an API call drops it and the call is sent once more with a fresh token: a
//! 401 means PayPal did nothing. Neither the client secret nor a token ever
//! goes into an error message or a log line; PayPal's error bodies are cut
//! down to their codes (`name`, `details[].issue`, `debug_id`) and scrubbed
//! of both before they reach an error.
//!
//! **Idempotency.** Every mutating call carries
//! `PayPal-Request-Id: {idempotency_key}`. PayPal stores the response of a
//! request id and answers a repeated one with that stored response, without
//! acting again, so resending a call under the same key never moves money
//! twice.
//!
//! **Amounts** go out as exact decimal strings built from the integer minor
//! units: 2 decimals for most currencies, none for zero-decimal ones (JPY,
//! KRW, ...), 3 for the dinar-like ones. HUF and TWD have cents in ISO 4217
//! but PayPal takes only whole units there: an amount with cents is refused
//! rather than rounded.
//!
//! **Errors.** A call that gets no answer within the configured timeout is a
//! [`PaymentError::Timeout`] (unknown outcome); connection failures, 429 and
//! 5xx are transient; other 4xx are permanent, except the 422 answers that
//! are a payment decision (`INSTRUMENT_DECLINED`, `ORDER_NOT_APPROVED`, ...),
//! which are [`PaymentResult::Declined`].
//!
//! **Lookup** reads state first and only resends when state proves the
//! operation already happened:
//! - authorize: `GET /v2/checkout/orders/{token}`; no authorization under
//!   `purchase_units[0].payments.authorizations` (or an unknown order, 404)
//!   means PayPal never authorized. If there is one, the authorize is sent
//!   again under the same `PayPal-Request-Id`: PayPal replays it if it was
//!   ours, and refuses it if another request (another engine order with the
//!   same PayPal order) authorized it, which is then a decline, never an
//!   authorization adopted from someone else.
//! - capture: `GET /v2/payments/authorizations/{reference}`. Not `CAPTURED` /
//!   `PARTIALLY_CAPTURED` (or 404): nothing was captured, `None`. Captured:
//!   the authorization does not name its captures, so the capture is sent
//!   again under the same `PayPal-Request-Id` and PayPal replays the stored
//!   response, capture id included, with no new effect. (PayPal keeps
//!   request ids far longer than a saga retries; and our captures set
//!   `final_capture`, after which PayPal refuses further captures.)
//! - void: the same `GET`; `VOIDED` is the approval, anything else `None`.
//! - refund: `GET /v2/payments/captures/{reference}`; no refund on it (or
//!   404) means `None`. Otherwise the refund is sent again under the same
//!   request id, which PayPal answers from its stored response. This is safe
//!   even if a refund from another key is what moved the status: then ours
//!   never happened, and it happens now exactly once under its own key, which
//!   is what the caller would do next after a `None` anyway.
//!
//! **Proxies.** The client honours the environment's HTTP(S) proxy, as a
//! production egress path needs, except for loopback base URLs
//! (`localhost`, `127.0.0.0/8`, `[::1]`), used by local stubs and tests,
//! which a proxy cannot reach.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

mod wire;

use super::{Operation, PaymentError, PaymentProvider, PaymentRequest, PaymentResult};
use crate::config::PaypalSettings;
pub use wire::paypal_amount;
use wire::*;

/// 422 issues that are a decision about the payment, not a bad request.
pub(super) const DECLINE_ISSUES: &[&str] = &[
    "INSTRUMENT_DECLINED",
    "ORDER_NOT_APPROVED",
    "PAYER_ACTION_REQUIRED",
    "PAYER_CANNOT_PAY",
    "TRANSACTION_REFUSED",
    "PAYEE_BLOCKED_TRANSACTION",
    "REDIRECT_PAYER_FOR_ALTERNATE_FUNDING",
    "COMPLIANCE_VIOLATION",
    "MAX_NUMBER_OF_PAYMENT_ATTEMPTS_EXCEEDED",
];

/// A token is never trusted for longer than this, whatever PayPal says.
const MAX_TOKEN_LIFETIME_S: u64 = 24 * 3600;

/// Longest `PayPal-Request-Id` PayPal accepts.
const MAX_REQUEST_ID: usize = 108;

pub struct PaypalProvider {
    client: reqwest::Client,
    /// Base URL without a trailing slash.
    base: String,
    client_id: String,
    client_secret: SecretString,
    token: Mutex<Option<AccessToken>>,
}

struct AccessToken {
    value: SecretString,
    fresh_until: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

/// An API answer: status, JSON body (`Null` when empty or not JSON) and, for
/// a failure, a scrubbed summary of PayPal's error.
pub(super) struct Reply {
    status: StatusCode,
    body: Value,
    summary: String,
}

impl fmt::Debug for PaypalProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaypalProvider")
            .field("base", &self.base)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl PaypalProvider {
    pub fn new(settings: &PaypalSettings, timeout: Duration) -> anyhow::Result<PaypalProvider> {
        let base_url = settings
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .context("payments.paypal.base_url is not set")?;
        let url = Url::parse(base_url).context("payments.paypal.base_url is not a valid URL")?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "payments.paypal.base_url must be an http or https URL"
        );
        anyhow::ensure!(
            url.host_str().is_some()
                && url.username().is_empty()
                && url.password().is_none()
                && url.query().is_none()
                && url.fragment().is_none(),
            "payments.paypal.base_url must be a plain URL with a host (no credentials, query or fragment)"
        );
        let client_id = settings
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .context("payments.paypal.client_id is not set")?
            .to_owned();
        let client_secret = settings
            .client_secret
            .clone()
            .filter(|s| !s.expose_secret().is_empty())
            .context("payments.paypal.client_secret is not set")?;

        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("orderflow/", env!("CARGO_PKG_VERSION")));
        if crate::outbound::is_loopback(&url) {
            builder = builder.no_proxy();
        }
        let client = builder.build().context("building the PayPal HTTP client")?;
        Ok(PaypalProvider {
            client,
            base: url.as_str().trim_end_matches('/').to_owned(),
            client_id,
            client_secret,
            token: Mutex::new(None),
        })
    }

    async fn run(&self, request: &PaymentRequest) -> Result<PaymentResult, PaymentError> {
        match request.operation {
            Operation::Authorize => self.authorize(request).await,
            Operation::Capture => self.capture(request).await,
            Operation::Void => self.void(request).await,
            Operation::Refund => self.refund(request).await,
        }
    }

    async fn authorize(&self, request: &PaymentRequest) -> Result<PaymentResult, PaymentError> {
        let order = checked_id("order id (token)", &request.token)?;
        let path = format!("/v2/checkout/orders/{order}/authorize");
        let reply = self.post(&path, request, &json!({})).await?;
        if let Some(declined) = decline(&reply) {
            return Ok(declined);
        }
        let body = reply.success("authorize")?;
        let authorization = first_authorization(&body).ok_or_else(|| {
            PaymentError::Permanent("authorize: the answer holds no authorization".to_owned())
        })?;
        authorization_result(authorization)
    }

    async fn capture(&self, request: &PaymentRequest) -> Result<PaymentResult, PaymentError> {
        let authorization = checked_id("authorization id", reference(request)?)?;
        let body = json!({ "amount": money(request)?, "final_capture": true });
        let path = format!("/v2/payments/authorizations/{authorization}/capture");
        let reply = self.post(&path, request, &body).await?;
        if let Some(declined) = decline(&reply) {
            return Ok(declined);
        }
        let body = reply.success("capture")?;
        match (id_of(&body), status_of(&body)) {
            (Some(id), "COMPLETED" | "PENDING" | "PARTIALLY_REFUNDED" | "REFUNDED") => {
                Ok(PaymentResult::Approved { reference: id })
            }
            (_, status @ ("DECLINED" | "FAILED")) => Ok(PaymentResult::Declined {
                reason: format!("capture {status}"),
            }),
            (_, status) => Err(unexpected("capture", status)),
        }
    }

    async fn void(&self, request: &PaymentRequest) -> Result<PaymentResult, PaymentError> {
        let authorization = checked_id("authorization id", reference(request)?)?;
        let path = format!("/v2/payments/authorizations/{authorization}/void");
        let reply = self.post(&path, request, &json!({})).await?;
        if let Some(declined) = decline(&reply) {
            return Ok(declined);
        }
        reply.success("void")?;
        Ok(PaymentResult::Approved {
            reference: authorization.to_owned(),
        })
    }

    async fn refund(&self, request: &PaymentRequest) -> Result<PaymentResult, PaymentError> {
        let capture = checked_id("capture id", reference(request)?)?;
        let body = json!({ "amount": money(request)? });
        let path = format!("/v2/payments/captures/{capture}/refund");
        let reply = self.post(&path, request, &body).await?;
        if let Some(declined) = decline(&reply) {
            return Ok(declined);
        }
        let body = reply.success("refund")?;
        match (id_of(&body), status_of(&body)) {
            (Some(id), "COMPLETED" | "PENDING") => Ok(PaymentResult::Approved { reference: id }),
            (_, status @ ("CANCELLED" | "FAILED")) => Ok(PaymentResult::Declined {
                reason: format!("refund {status}"),
            }),
            (_, status) => Err(unexpected("refund", status)),
        }
    }

    async fn find(&self, request: &PaymentRequest) -> Result<Option<PaymentResult>, PaymentError> {
        match request.operation {
            Operation::Authorize => {
                let order = checked_id("order id (token)", &request.token)?;
                let Some(body) = self.get(&format!("/v2/checkout/orders/{order}")).await? else {
                    return Ok(None);
                };
                if first_authorization(&body).is_none() {
                    return Ok(None);
                }
                // Authorized, but perhaps by another engine order that used
                // the same PayPal order: only a replay under our own request
                // id proves it is ours (another's is refused, a decline).
                match self.authorize(request).await {
                    Err(PaymentError::Permanent(reason)) => {
                        Ok(Some(PaymentResult::Declined { reason }))
                    }
                    other => other.map(Some),
                }
            }
            Operation::Capture | Operation::Void => {
                let authorization = checked_id("authorization id", reference(request)?)?;
                let path = format!("/v2/payments/authorizations/{authorization}");
                let Some(body) = self.get(&path).await? else {
                    return Ok(None);
                };
                match (request.operation, status_of(&body)) {
                    (Operation::Capture, "CAPTURED" | "PARTIALLY_CAPTURED") => {
                        // Replayed by PayPal under the same request id (module doc).
                        self.capture(request).await.map(Some)
                    }
                    (Operation::Void, "VOIDED") => Ok(Some(PaymentResult::Approved {
                        reference: authorization.to_owned(),
                    })),
                    _ => Ok(None),
                }
            }
            Operation::Refund => {
                let capture = checked_id("capture id", reference(request)?)?;
                let Some(body) = self
                    .get(&format!("/v2/payments/captures/{capture}"))
                    .await?
                else {
                    return Ok(None);
                };
                match status_of(&body) {
                    // Replayed by PayPal under the same request id (module doc).
                    "REFUNDED" | "PARTIALLY_REFUNDED" => self.refund(request).await.map(Some),
                    _ => Ok(None),
                }
            }
        }
    }

    /// A mutating call under the request's idempotency key.
    async fn post(
        &self,
        path: &str,
        request: &PaymentRequest,
        body: &Value,
    ) -> Result<Reply, PaymentError> {
        let key = request.idempotency_key.as_str();
        if key.is_empty()
            || key.len() > MAX_REQUEST_ID
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(PaymentError::Permanent(format!(
                "the idempotency key must be 1 to {MAX_REQUEST_ID} visible ASCII characters"
            )));
        }
        self.call(Method::POST, path, Some(key), Some(body)).await
    }

    /// A read: the body, or `None` for 404.
    async fn get(&self, path: &str) -> Result<Option<Value>, PaymentError> {
        let reply = self.call(Method::GET, path, None, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        reply.success("lookup").map(Some)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        request_id: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Reply, PaymentError> {
        let url = format!("{}{path}", self.base);
        let mut renewed = false;
        loop {
            let token = self.access_token().await?;
            let mut builder = self
                .client
                .request(method.clone(), &url)
                .bearer_auth(token.expose_secret())
                .header(ACCEPT, "application/json");
            if let Some(id) = request_id {
                builder = builder
                    .header("PayPal-Request-Id", id)
                    .header("Prefer", "return=representation");
            }
            if let Some(body) = body {
                builder = builder.json(body);
            }
            let response = builder.send().await.map_err(|e| transport(path, &e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                // PayPal refused the token and did nothing: renew and resend.
                tracing::info!(path, "paypal rejected the access token; renewing it");
                self.forget_token(&token).await;
                renewed = true;
                continue;
            }
            let bytes = response.bytes().await.map_err(|e| transport(path, &e))?;
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let summary = if status.is_success() {
                String::new()
            } else {
                summarize(
                    &body,
                    &[self.client_secret.expose_secret(), token.expose_secret()],
                )
            };
            return Ok(Reply {
                status,
                body,
                summary,
            });
        }
    }

    async fn access_token(&self) -> Result<SecretString, PaymentError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.fresh_until {
                return Ok(token.value.clone());
            }
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Drops the cached token if it is still `used` (another call may have
    /// renewed it already).
    async fn forget_token(&self, used: &SecretString) {
        let mut cached = self.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|t| t.value.expose_secret() == used.expose_secret())
        {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<AccessToken, PaymentError> {
        const WHAT: &str = "oauth token";
        let asked_at = Instant::now();
        let response = self
            .client
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(&self.client_id, Some(self.client_secret.expose_secret()))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| transport(WHAT, &e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| transport(WHAT, &e))?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let summary = summarize(&body, &[self.client_secret.expose_secret()]);
            return Err(status_error(WHAT, status, &summary));
        }
        // The parser's message could quote the token: keep it out.
        let token: TokenResponse = serde_json::from_slice(&bytes).map_err(|_| {
            PaymentError::Transient(format!("{WHAT}: malformed answer from PayPal"))
        })?;
        let lifetime = token.expires_in.min(MAX_TOKEN_LIFETIME_S);
        let margin = (lifetime / 2).min(60);
        Ok(AccessToken {
            value: SecretString::from(token.access_token),
            fresh_until: asked_at + Duration::from_secs(lifetime - margin),
        })
    }
}

impl Reply {
    fn success(self, what: &str) -> Result<Value, PaymentError> {
        if self.status.is_success() {
            Ok(self.body)
        } else {
            Err(status_error(what, self.status, &self.summary))
        }
    }
}

impl PaymentProvider for PaypalProvider {
    fn name(&self) -> &'static str {
        "paypal"
    }

    fn execute<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<PaymentResult, PaymentError>> {
        self.run(request).boxed()
    }

    fn lookup<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<Option<PaymentResult>, PaymentError>> {
        self.find(request).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact_decimal_strings() {
        let ok = |minor, currency| paypal_amount(minor, currency).unwrap();
        assert_eq!(ok(1999, "USD"), "19.99");
        assert_eq!(ok(5, "EUR"), "0.05");
        assert_eq!(ok(0, "USD"), "0.00");
        assert_eq!(ok(500, "JPY"), "500");
        assert_eq!(ok(12_000, "KRW"), "12000");
        assert_eq!(ok(1234, "KWD"), "1.234");
        assert_eq!(ok(12_300, "HUF"), "123");
        assert_eq!(ok(i64::MAX, "USD"), "92233720368547758.07");
        assert!(paypal_amount(12_345, "HUF").is_err());
        assert!(paypal_amount(-1, "USD").is_err());
        assert!(paypal_amount(100, "usd").is_err());
    }

    #[test]
    fn summaries_keep_codes_and_drop_text_and_secrets() {
        let body = json!({
            "name": "UNPROCESSABLE_ENTITY",
            "message": "free text with hunter2 inside",
            "details": [{"issue": "hunter2"}, {"issue": "INSTRUMENT_DECLINED"}],
            "debug_id": "f00d",
        });
        let summary = summarize(&body, &["hunter2"]);
        assert_eq!(
            summary,
            "UNPROCESSABLE_ENTITY, [redacted], INSTRUMENT_DECLINED, debug_id f00d"
        );
    }
}
