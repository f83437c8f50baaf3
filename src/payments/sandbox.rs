//! The in-process sandbox provider: deterministic by token, with a ledger.
//!
//! Tokens:
//! - `tok_ok`: every operation is approved;
//! - `tok_declined`: authorization is declined;
//! - `tok_timeout`: authorization happens, but the call times out; a lookup
//!   under the same key reveals the approval;
//! - `tok_error_once`: the first call of each key fails with a transient
//!   error, the next one works;
//! - `tok_capture_declined`: authorization is approved, capture declined;
//! - any other token is declined as unknown.
//!
//! The provider keeps the money rules of a real one: capture at most what was
//! authorized, refund at most what was captured, nothing after a void. Its
//! ledger records every operation that moved (or held) money, once per
//! idempotency key, so tests can assert that nobody was charged twice.
//! Everything lives in memory: a restarted engine gets an empty sandbox.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Operation, PaymentError, PaymentProvider, PaymentRequest, PaymentResult};

/// One approved operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub operation: Operation,
    pub idempotency_key: String,
    pub order_id: String,
    pub amount: i64,
    pub reference: String,
}

#[derive(Debug, Default)]
struct Authorization {
    amount: i64,
    captured: i64,
    refunded: i64,
    voided: bool,
}

#[derive(Debug, Default)]
struct State {
    /// Outcome per idempotency key.
    outcomes: HashMap<String, PaymentResult>,
    /// Keys whose first call already failed (for `tok_error_once`).
    failed_once: HashSet<String>,
    /// Per authorization reference.
    authorizations: HashMap<String, Authorization>,
    ledger: Vec<LedgerEntry>,
    next_reference: u64,
}

#[derive(Debug, Default)]
pub struct SandboxProvider {
    state: Mutex<State>,
    /// When false, every call fails with a transient error (an outage).
    unavailable: AtomicBool,
    /// How long each call takes, like a real provider's round trip.
    latency: std::time::Duration,
}

impl SandboxProvider {
    pub fn new() -> SandboxProvider {
        SandboxProvider::default()
    }

    /// A sandbox whose every call (and lookup) answers after `latency`.
    pub fn with_latency(latency: std::time::Duration) -> SandboxProvider {
        SandboxProvider {
            latency,
            ..SandboxProvider::default()
        }
    }

    async fn round_trip(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// Every approved operation so far, in order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.lock().ledger.clone()
    }

    /// Approved captures of `order_id`: the charges its customer sees.
    pub fn charges(&self, order_id: &str) -> usize {
        self.lock()
            .ledger
            .iter()
            .filter(|e| e.order_id == order_id && e.operation == Operation::Capture)
            .count()
    }

    /// Simulates an outage: while set, every call fails transiently.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed
        // (every change is a single insert or push), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self, request: &PaymentRequest) -> Result<PaymentResult, PaymentError> {
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(PaymentError::Transient("sandbox outage".to_owned()));
        }
        let mut state = self.lock();
        if let Some(done) = state.outcomes.get(&request.idempotency_key) {
            return match (request.token.as_str(), request.operation) {
                ("tok_timeout", Operation::Authorize) => Err(PaymentError::Timeout),
                _ => Ok(done.clone()),
            };
        }
        if request.token == "tok_error_once"
            && state.failed_once.insert(request.idempotency_key.clone())
        {
            return Err(PaymentError::Transient(
                "sandbox: transient failure (tok_error_once)".to_owned(),
            ));
        }
        let result = match request.operation {
            Operation::Authorize => match request.token.as_str() {
                "tok_ok" | "tok_timeout" | "tok_error_once" | "tok_capture_declined" => {
                    state.next_reference += 1;
                    let reference = format!("sbx_auth_{}", state.next_reference);
                    state.authorizations.insert(
                        reference.clone(),
                        Authorization {
                            amount: request.amount,
                            ..Authorization::default()
                        },
                    );
                    PaymentResult::Approved { reference }
                }
                "tok_declined" => PaymentResult::Declined {
                    reason: "card declined".to_owned(),
                },
                _ => PaymentResult::Declined {
                    reason: "unknown sandbox token".to_owned(),
                },
            },
            Operation::Capture if request.token == "tok_capture_declined" => {
                PaymentResult::Declined {
                    reason: "capture declined".to_owned(),
                }
            }
            Operation::Capture | Operation::Void | Operation::Refund => {
                let reference = request
                    .reference
                    .clone()
                    .ok_or_else(|| PaymentError::Permanent("no authorization".to_owned()))?;
                let auth = state
                    .authorizations
                    .get_mut(&reference)
                    .ok_or_else(|| PaymentError::Permanent("unknown authorization".to_owned()))?;
                let allowed = match request.operation {
                    Operation::Capture => {
                        !auth.voided && auth.captured + request.amount <= auth.amount
                    }
                    Operation::Void => auth.captured == 0 && !auth.voided,
                    _ => auth.refunded + request.amount <= auth.captured,
                };
                if !allowed {
                    return Err(PaymentError::Permanent(format!(
                        "{} not allowed on this authorization",
                        request.operation.as_str()
                    )));
                }
                match request.operation {
                    Operation::Capture => auth.captured += request.amount,
                    Operation::Void => auth.voided = true,
                    _ => auth.refunded += request.amount,
                }
                PaymentResult::Approved { reference }
            }
        };
        if let PaymentResult::Approved { reference } = &result {
            state.ledger.push(LedgerEntry {
                operation: request.operation,
                idempotency_key: request.idempotency_key.clone(),
                order_id: request.order_id.clone(),
                amount: request.amount,
                reference: reference.clone(),
            });
        }
        state
            .outcomes
            .insert(request.idempotency_key.clone(), result.clone());
        if request.token == "tok_timeout" && request.operation == Operation::Authorize {
            return Err(PaymentError::Timeout);
        }
        Ok(result)
    }
}

impl PaymentProvider for SandboxProvider {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    fn execute<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<PaymentResult, PaymentError>> {
        async move {
            self.round_trip().await;
            self.run(request)
        }
        .boxed()
    }

    fn lookup<'a>(
        &'a self,
        request: &'a PaymentRequest,
    ) -> BoxFuture<'a, Result<Option<PaymentResult>, PaymentError>> {
        async move {
            self.round_trip().await;
            if self.unavailable.load(Ordering::SeqCst) {
                return Err(PaymentError::Transient("sandbox outage".to_owned()));
            }
            Ok(self.lock().outcomes.get(&request.idempotency_key).cloned())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(
        op: Operation,
        key: &str,
        token: &str,
        amount: i64,
        reference: Option<&str>,
    ) -> PaymentRequest {
        PaymentRequest {
            operation: op,
            idempotency_key: key.to_owned(),
            order_id: "o1".to_owned(),
            token: token.to_owned(),
            amount,
            currency: "USD".to_owned(),
            reference: reference.map(str::to_owned),
        }
    }

    fn approved(r: Result<PaymentResult, PaymentError>) -> String {
        match r {
            Ok(PaymentResult::Approved { reference }) => reference,
            other => panic!("expected approval, got {other:?}"),
        }
    }

    #[test]
    fn same_key_charges_once() {
        let s = SandboxProvider::new();
        let auth = approved(s.run(&request(Operation::Authorize, "o1:a", "tok_ok", 100, None)));
        let cap = request(Operation::Capture, "o1:c", "tok_ok", 100, Some(&auth));
        approved(s.run(&cap));
        approved(s.run(&cap));
        assert_eq!(s.charges("o1"), 1);
    }

    #[test]
    fn timeout_happened_and_lookup_reveals_it() {
        let s = SandboxProvider::new();
        let r = request(Operation::Authorize, "o1:a", "tok_timeout", 100, None);
        assert_eq!(s.run(&r), Err(PaymentError::Timeout));
        let found = futures_util::FutureExt::now_or_never(s.lookup(&r)).unwrap();
        assert!(matches!(found, Ok(Some(PaymentResult::Approved { .. }))));
    }

    #[test]
    fn error_once_then_works() {
        let s = SandboxProvider::new();
        let r = request(Operation::Authorize, "o1:a", "tok_error_once", 100, None);
        assert!(matches!(s.run(&r), Err(PaymentError::Transient(_))));
        approved(s.run(&r));
    }

    #[test]
    fn declined_moves_no_money() {
        let s = SandboxProvider::new();
        let r = request(Operation::Authorize, "o1:a", "tok_declined", 100, None);
        assert!(matches!(s.run(&r), Ok(PaymentResult::Declined { .. })));
        assert!(s.ledger().is_empty());
    }

    proptest! {
        /// Whatever is asked, the provider never captures more than it
        /// authorized nor refunds more than it captured, and each key moves
        /// money at most once.
        #[test]
        fn money_rules_hold(ops in proptest::collection::vec((0u8..4, 0u8..6, 1i64..80), 0..40)) {
            let s = SandboxProvider::new();
            let auth = approved(s.run(&request(Operation::Authorize, "a", "tok_ok", 100, None)));
            for (op, key, amount) in ops {
                let op = [Operation::Capture, Operation::Refund, Operation::Void, Operation::Capture][op as usize];
                let _ = s.run(&request(op, &format!("k{key}"), "tok_ok", amount, Some(&auth)));
            }
            let ledger = s.ledger();
            let sum = |op| ledger.iter().filter(|e| e.operation == op).map(|e| e.amount).sum::<i64>();
            prop_assert!(sum(Operation::Capture) <= 100);
            prop_assert!(sum(Operation::Refund) <= sum(Operation::Capture));
            let mut keys: Vec<_> = ledger.iter().map(|e| &e.idempotency_key).collect();
            let n = keys.len();
            keys.sort();
            keys.dedup();
            prop_assert_eq!(keys.len(), n);
        }
    }
}
