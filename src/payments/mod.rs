//! Payment providers behind one trait.
//!
//! Every call carries an idempotency key derived from the order and the saga
//! step (`{order_id}:authorize`, `{refund_id}:refund`, ...): a provider that
//! sees a key again answers with the first outcome and moves no money. A
//! timeout is an *unknown* outcome, never a failure: the saga asks
//! [`PaymentProvider::lookup`] under the same key before it retries, so a
//! payment that did happen is found rather than made twice.

pub mod paypal;
pub mod sandbox;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::config::{PaymentProviderKind, PaymentSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Authorize,
    Capture,
    Void,
    Refund,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Authorize => "authorize",
            Operation::Capture => "capture",
            Operation::Void => "void",
            Operation::Refund => "refund",
        }
    }
}

/// One call to the provider.
#[derive(Debug, Clone)]
pub struct PaymentRequest {
    pub operation: Operation,
    pub idempotency_key: String,
    pub order_id: String,
    /// The customer's payment token (sandbox: `tok_ok`, ...; PayPal: the
    /// approved PayPal order id).
    pub token: String,
    pub amount: i64,
    pub currency: String,
    /// The provider's reference of the authorization (capture, void) or
    /// capture (refund).
    pub reference: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentResult {
    Approved { reference: String },
    Declined { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// No answer in time: the outcome is unknown.
    #[error("the payment provider did not answer in time")]
    Timeout,
    /// Worth retrying (connection refused, 5xx, rate limited).
    #[error("transient payment provider error: {0}")]
    Transient(String),
    /// Retrying will not help (bad request, unknown reference).
    #[error("payment provider refused the request: {0}")]
    Permanent(String),
}

/// A payment service provider. Implementations must be idempotent per key.
pub trait PaymentProvider: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    fn execute<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<PaymentResult, PaymentError>>;

    /// The outcome of an earlier call under `request.idempotency_key`, or
    /// `None` if the provider never acted on it (safe to send again).
    fn lookup<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<Option<PaymentResult>, PaymentError>>;
}

/// The configured provider, plus the sandbox itself when that is the one in
/// use (tests read its ledger).
#[derive(Clone)]
pub struct Payments {
    pub provider: Arc<dyn PaymentProvider>,
    pub sandbox: Option<Arc<sandbox::SandboxProvider>>,
}

impl Payments {
    pub fn from_settings(settings: &PaymentSettings) -> anyhow::Result<Payments> {
        Ok(match settings.provider {
            PaymentProviderKind::Sandbox => {
                let sandbox = Arc::new(sandbox::SandboxProvider::with_latency(
                    std::time::Duration::from_millis(settings.sandbox_latency_ms),
                ));
                Payments {
                    provider: sandbox.clone(),
                    sandbox: Some(sandbox),
                }
            }
            PaymentProviderKind::Paypal => Payments {
                provider: Arc::new(paypal::PaypalProvider::new(
                    &settings.paypal,
                    std::time::Duration::from_millis(settings.timeout_ms),
                )?),
                sandbox: None,
            },
        })
    }
}
