//! The checkout saga as a pure state machine.
//!
//! The saga's whole state is an [`OrderProgress`], persisted in the order row
//! (and the earliest unfinished refund). [`next_step`] reads it and names the
//! one step to run next; [`OrderProgress::apply`] takes that step's outcome
//! and gives the new progress, the status change and the domain events, which
//! the executor writes in one transaction. Because the decision depends only
//! on persisted facts, a saga resumed after a crash continues exactly where
//! its last committed step left it.
//!
//! Invariants, checked by the property tests below:
//! - I3: `captured <= authorized` and `refunded <= captured`, always.
//! - Terminal statuses (`cancelled`, `rejected`, `payment_failed`) never change.
//! - The saga always terminates: every step moves the progress forward.

use super::order::{
    CaptureMode, OrderStatus, PaymentStatus, RefundStatus, SagaState, StepName, StockState,
};

/// The earliest refund of the order that is not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRefund {
    pub id: String,
    pub amount: i64,
    pub status: RefundStatus,
    /// Items to put back once the money is returned.
    pub restock_pending: bool,
}

/// Everything the saga decides on. Persisted in the order row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderProgress {
    pub status: OrderStatus,
    pub payment: PaymentStatus,
    pub stock: StockState,
    pub capture_mode: CaptureMode,
    pub total: i64,
    pub authorized: i64,
    pub captured: i64,
    /// Returned or being returned: includes pending refunds, so that
    /// concurrent refund requests can never together exceed the capture.
    pub refunded: i64,
    pub cancel_requested: bool,
    pub capture_requested: bool,
    /// Refunds not finished, oldest first; the saga works on the first.
    pub open_refunds: Vec<OpenRefund>,
    /// A compensation failed for good: the saga needs a person.
    pub failed: bool,
}

/// What to run next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    ReserveInventory,
    AuthorizePayment,
    CapturePayment,
    CommitInventory,
    ConfirmOrder,
    ReleaseInventory,
    VoidPayment,
    /// Return the money of the open refund.
    RefundPayment {
        refund_id: String,
        amount: i64,
    },
    /// Put items back: those of the open refund, or (cancel) all not yet back.
    RestockInventory {
        refund_id: Option<String>,
    },
    /// Cancelling a captured order: open a refund of what is left.
    OpenCancelRefund {
        amount: i64,
    },
    /// All compensations done: the order is `cancelled`.
    FinishCancel,
}

impl Step {
    /// The name in the saga log; `None` for bookkeeping that is not a step.
    pub fn name(&self) -> Option<StepName> {
        Some(match self {
            Step::ReserveInventory => StepName::ReserveInventory,
            Step::AuthorizePayment => StepName::AuthorizePayment,
            Step::CapturePayment => StepName::CapturePayment,
            Step::CommitInventory => StepName::CommitInventory,
            Step::ConfirmOrder => StepName::ConfirmOrder,
            Step::ReleaseInventory => StepName::ReleaseInventory,
            Step::VoidPayment => StepName::VoidPayment,
            Step::RefundPayment { .. } => StepName::RefundPayment,
            Step::RestockInventory { .. } => StepName::RestockInventory,
            Step::FinishCancel => StepName::CancelOrder,
            Step::OpenCancelRefund { .. } => return None,
        })
    }
}

/// How a step ended. Transient failures are not outcomes: the executor
/// retries them and the progress does not change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Reserve: some SKU lacked stock; everything reserved was released.
    OutOfStock,
    /// Authorize or capture refused by the provider.
    Declined,
    /// Commit: the reservation had expired and the stock is gone; nothing
    /// is committed, and the order must be unwound.
    StockLost,
    /// Refund or void refused for good by the provider.
    Refused,
    /// OpenCancelRefund: the refund row was created with this id.
    RefundOpened(String),
    /// Before a compensation, the provider was asked about a payment call
    /// whose outcome had not been recorded, and it had happened: record it
    /// first (the compensation then unwinds it).
    PaymentFound(FoundPayment),
}

/// A payment operation found by a status lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundPayment {
    Authorization,
    Capture,
}

/// A domain event to record, in the audit trail and (if `public`) the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainEvent {
    pub name: &'static str,
    pub public: bool,
}

const fn public(name: &'static str) -> DomainEvent {
    DomainEvent { name, public: true }
}

const fn audit(name: &'static str) -> DomainEvent {
    DomainEvent {
        name,
        public: false,
    }
}

/// The result of applying an outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub progress: OrderProgress,
    pub events: Vec<DomainEvent>,
}

/// The next step for this progress; `None` when the saga has nothing to do.
pub fn next_step(p: &OrderProgress) -> Option<Step> {
    if p.failed {
        return None;
    }
    if let Some(refund) = p.open_refunds.first() {
        return Some(match refund.status {
            RefundStatus::Pending => Step::RefundPayment {
                refund_id: refund.id.clone(),
                amount: refund.amount,
            },
            _ => Step::RestockInventory {
                refund_id: Some(refund.id.clone()),
            },
        });
    }
    if p.status.is_terminal() {
        return None;
    }
    if p.cancel_requested {
        return Some(match (p.payment, p.stock) {
            (PaymentStatus::Authorized, _) if p.captured == 0 => Step::VoidPayment,
            // A capture was declined: the authorization still holds funds.
            (PaymentStatus::Failed, _) if p.authorized > 0 && p.captured == 0 => Step::VoidPayment,
            // Whatever the label says: any captured money not yet returned
            // (or set aside for a refund) is refunded.
            (
                PaymentStatus::Captured
                | PaymentStatus::PartiallyRefunded
                | PaymentStatus::Refunded,
                _,
            ) if p.refunded < p.captured => Step::OpenCancelRefund {
                amount: p.captured - p.refunded,
            },
            // `None`: a reserve step may have reserved some lines before it
            // stopped; releasing what the order does not hold is a no-op.
            (_, StockState::Reserved | StockState::None) => Step::ReleaseInventory,
            (_, StockState::Committed) => Step::RestockInventory { refund_id: None },
            _ => Step::FinishCancel,
        });
    }
    match p.status {
        OrderStatus::Pending => Some(match (p.stock, p.payment) {
            (StockState::None, _) => Step::ReserveInventory,
            (StockState::Reserved, PaymentStatus::Failed) if p.authorized > 0 => {
                // The capture was declined: free the held funds first.
                Step::VoidPayment
            }
            (StockState::Reserved, PaymentStatus::Failed | PaymentStatus::Voided) => {
                Step::ReleaseInventory
            }
            (StockState::Reserved, PaymentStatus::None) => Step::AuthorizePayment,
            (_, PaymentStatus::Authorized) if p.capture_mode == CaptureMode::Automatic => {
                Step::CapturePayment
            }
            (StockState::Reserved, _) => Step::CommitInventory,
            // Committed (or, defensively, anything else): confirm.
            _ => Step::ConfirmOrder,
        }),
        OrderStatus::Authorized
            if p.capture_requested && p.payment == PaymentStatus::Authorized =>
        {
            Some(Step::CapturePayment)
        }
        _ => None,
    }
}

impl OrderProgress {
    /// The progress of a new order.
    pub fn new(total: i64, capture_mode: CaptureMode) -> OrderProgress {
        OrderProgress {
            status: OrderStatus::Pending,
            payment: PaymentStatus::None,
            stock: StockState::None,
            capture_mode,
            total,
            authorized: 0,
            captured: 0,
            refunded: 0,
            cancel_requested: false,
            capture_requested: false,
            open_refunds: Vec::new(),
            failed: false,
        }
    }

    /// What the saga's row should say about it.
    pub fn saga_state(&self) -> SagaState {
        if self.failed {
            return SagaState::Failed;
        }
        if next_step(self).is_some() {
            return SagaState::Running;
        }
        match self.status {
            OrderStatus::Cancelled | OrderStatus::Rejected | OrderStatus::PaymentFailed => {
                SagaState::Compensated
            }
            _ => SagaState::Completed,
        }
    }

    /// How much may still be refunded.
    pub fn refundable(&self) -> i64 {
        self.captured - self.refunded
    }

    /// The payment status from the money actually returned: `refunded`
    /// less the refunds still pending.
    fn settled_payment_status(&self) -> PaymentStatus {
        let pending: i64 = self
            .open_refunds
            .iter()
            .filter(|r| r.status == RefundStatus::Pending)
            .map(|r| r.amount)
            .sum();
        match self.refunded - pending {
            0 => PaymentStatus::Captured,
            returned if returned >= self.captured => PaymentStatus::Refunded,
            _ => PaymentStatus::PartiallyRefunded,
        }
    }

    /// Applies the outcome of `step`. An outcome that does not belong to the
    /// step leaves the progress as it is (the executor never produces one).
    pub fn apply(&self, step: &Step, outcome: &Outcome) -> Applied {
        let mut p = self.clone();
        let mut events = Vec::new();
        match (step, outcome) {
            (Step::ReserveInventory, Outcome::Done) => p.stock = StockState::Reserved,
            (Step::ReserveInventory, Outcome::OutOfStock) => {
                p.stock = StockState::Released;
                p.status = OrderStatus::Rejected;
                events.push(audit("order.rejected"));
            }
            (Step::AuthorizePayment, Outcome::Done) => {
                p.payment = PaymentStatus::Authorized;
                p.authorized = p.total;
            }
            (Step::AuthorizePayment, Outcome::Declined) => {
                p.payment = PaymentStatus::Failed;
                events.push(public("payment.failed"));
            }
            (Step::CapturePayment, Outcome::Done) => {
                p.payment = PaymentStatus::Captured;
                p.captured = p.authorized;
                p.capture_requested = false;
                if p.status == OrderStatus::Authorized {
                    p.status = OrderStatus::Paid;
                    events.push(public("order.paid"));
                }
            }
            (Step::CapturePayment, Outcome::Declined) => {
                p.payment = PaymentStatus::Failed;
                p.capture_requested = false;
                events.push(public("payment.failed"));
                if p.status != OrderStatus::Pending {
                    // Manual capture refused: the stock is sold; unwind it.
                    p.cancel_requested = true;
                }
            }
            (Step::CommitInventory, Outcome::Done) => p.stock = StockState::Committed,
            (Step::CommitInventory, Outcome::StockLost) => {
                p.stock = StockState::Released;
                p.cancel_requested = true;
            }
            (Step::ConfirmOrder, Outcome::Done) => {
                if p.payment == PaymentStatus::Captured {
                    p.status = OrderStatus::Paid;
                    events.push(public("order.paid"));
                } else {
                    p.status = OrderStatus::Authorized;
                    events.push(audit("order.authorized"));
                }
            }
            (Step::ReleaseInventory, Outcome::Done) => {
                p.stock = StockState::Released;
                if p.status == OrderStatus::Pending
                    && matches!(p.payment, PaymentStatus::Failed | PaymentStatus::Voided)
                    && !p.cancel_requested
                {
                    p.status = OrderStatus::PaymentFailed;
                    events.push(audit("order.payment_failed"));
                }
            }
            (Step::VoidPayment, Outcome::Done) => p.payment = PaymentStatus::Voided,
            (Step::VoidPayment, Outcome::Refused) => {
                // Not voided and not captured (a lookup said so): a person
                // must look rather than the saga pretend the hold is gone.
                p.failed = true;
                events.push(audit("payment.void_failed"));
            }
            (_, Outcome::PaymentFound(FoundPayment::Authorization))
                if p.payment == PaymentStatus::None =>
            {
                p.payment = PaymentStatus::Authorized;
                p.authorized = p.total;
            }
            (_, Outcome::PaymentFound(FoundPayment::Capture))
                if p.payment == PaymentStatus::Authorized && p.captured == 0 =>
            {
                p.payment = PaymentStatus::Captured;
                p.captured = p.authorized;
            }
            (Step::OpenCancelRefund { amount }, Outcome::RefundOpened(id))
                if *amount > 0 && *amount <= p.refundable() =>
            {
                p.refunded += amount;
                p.open_refunds.push(OpenRefund {
                    id: id.clone(),
                    amount: *amount,
                    status: RefundStatus::Pending,
                    restock_pending: false,
                });
            }
            (Step::RefundPayment { refund_id, .. }, Outcome::Done) => {
                if let Some(index) = p.open_refunds.iter().position(|r| &r.id == refund_id) {
                    events.push(public("order.refunded"));
                    if p.open_refunds[index].restock_pending {
                        p.open_refunds[index].status = RefundStatus::Succeeded;
                    } else {
                        p.open_refunds.remove(index);
                    }
                    p.payment = p.settled_payment_status();
                }
            }
            (Step::RefundPayment { refund_id, amount }, Outcome::Refused)
                if p.open_refunds.iter().any(|r| &r.id == refund_id) =>
            {
                p.refunded -= amount;
                p.open_refunds.retain(|r| &r.id != refund_id);
                p.payment = p.settled_payment_status();
                events.push(audit("refund.failed"));
                if p.cancel_requested {
                    // The money cannot be returned: a person must look.
                    p.failed = true;
                }
            }
            (
                Step::RestockInventory {
                    refund_id: Some(id),
                },
                Outcome::Done,
            ) if p.open_refunds.iter().any(|r| &r.id == id) => {
                p.open_refunds.retain(|r| &r.id != id);
            }
            (Step::RestockInventory { refund_id: None }, Outcome::Done) => {
                p.stock = StockState::Released;
            }
            (Step::FinishCancel, Outcome::Done) => {
                p.status = OrderStatus::Cancelled;
                p.cancel_requested = false;
                events.push(public("order.cancelled"));
            }
            _ => {}
        }
        Applied {
            progress: p,
            events,
        }
    }
}

/// Why a command on an order is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    InvalidTransition {
        from: OrderStatus,
        action: &'static str,
    },
    RefundExceedsCaptured {
        refundable: i64,
    },
}

impl OrderProgress {
    /// Cancel: allowed before shipping. Idempotent on a cancelled order.
    pub fn request_cancel(&self) -> Result<OrderProgress, CommandError> {
        match self.status {
            OrderStatus::Pending | OrderStatus::Authorized | OrderStatus::Paid => {
                let mut p = self.clone();
                p.cancel_requested = true;
                Ok(p)
            }
            from => Err(CommandError::InvalidTransition {
                from,
                action: "cancel",
            }),
        }
    }

    /// Manual capture: only an authorized, not yet captured order.
    pub fn request_capture(&self) -> Result<OrderProgress, CommandError> {
        if self.status == OrderStatus::Authorized
            && self.payment == PaymentStatus::Authorized
            && !self.cancel_requested
        {
            let mut p = self.clone();
            p.capture_requested = true;
            Ok(p)
        } else {
            Err(CommandError::InvalidTransition {
                from: self.status,
                action: "capture",
            })
        }
    }

    /// Opens a refund of `amount` (already validated as 1..=MAX_AMOUNT).
    pub fn request_refund(
        &self,
        id: String,
        amount: i64,
        restock: bool,
    ) -> Result<OrderProgress, CommandError> {
        let refundable_status = matches!(
            self.status,
            OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Delivered
        ) && matches!(
            self.payment,
            PaymentStatus::Captured | PaymentStatus::PartiallyRefunded | PaymentStatus::Refunded
        ) && !self.cancel_requested;
        if !refundable_status {
            return Err(CommandError::InvalidTransition {
                from: self.status,
                action: "refund",
            });
        }
        if amount > self.refundable() {
            return Err(CommandError::RefundExceedsCaptured {
                refundable: self.refundable(),
            });
        }
        let mut p = self.clone();
        p.refunded += amount;
        p.open_refunds.push(OpenRefund {
            id,
            amount,
            status: RefundStatus::Pending,
            restock_pending: restock,
        });
        Ok(p)
    }

    pub fn request_ship(&self) -> Result<OrderProgress, CommandError> {
        self.move_status(OrderStatus::Paid, OrderStatus::Shipped, "ship")
    }

    pub fn request_deliver(&self) -> Result<OrderProgress, CommandError> {
        self.move_status(OrderStatus::Shipped, OrderStatus::Delivered, "deliver")
    }

    fn move_status(
        &self,
        from: OrderStatus,
        to: OrderStatus,
        action: &'static str,
    ) -> Result<OrderProgress, CommandError> {
        if self.status == from && !self.cancel_requested && self.open_refunds.is_empty() {
            let mut p = self.clone();
            p.status = to;
            Ok(p)
        } else {
            Err(CommandError::InvalidTransition {
                from: self.status,
                action,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::order::*;
    use proptest::prelude::*;

    /// What the world does to a saga: step outcomes and commands.
    #[derive(Debug, Clone)]
    enum Event {
        /// The next step succeeds (or its natural refusal, by index).
        Run(u8),
        Cancel,
        Capture,
        Refund(i64, bool),
        Ship,
        Deliver,
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            6 => any::<u8>().prop_map(Event::Run),
            1 => Just(Event::Cancel),
            1 => Just(Event::Capture),
            1 => (1i64..1500, any::<bool>()).prop_map(|(a, r)| Event::Refund(a, r)),
            1 => Just(Event::Ship),
            1 => Just(Event::Deliver),
        ]
    }

    /// The outcomes a step can really have, picked by `choice`.
    fn outcome_for(p: &OrderProgress, step: &Step, choice: u8, n: usize) -> Outcome {
        let capture_found = p.payment == PaymentStatus::Authorized && p.captured == 0;
        let alternatives: &[Outcome] = match step {
            Step::VoidPayment if capture_found => &[
                Outcome::Done,
                Outcome::Refused,
                Outcome::PaymentFound(FoundPayment::Capture),
            ],
            Step::FinishCancel if p.payment == PaymentStatus::None => &[
                Outcome::Done,
                Outcome::PaymentFound(FoundPayment::Authorization),
            ],
            Step::ReserveInventory => &[Outcome::Done, Outcome::OutOfStock],
            Step::AuthorizePayment | Step::CapturePayment => &[Outcome::Done, Outcome::Declined],
            Step::CommitInventory => &[Outcome::Done, Outcome::StockLost],
            Step::RefundPayment { .. } => &[Outcome::Done, Outcome::Refused],
            Step::VoidPayment => &[Outcome::Done, Outcome::Refused],
            Step::OpenCancelRefund { .. } => {
                return Outcome::RefundOpened(format!("cancel-{n}"));
            }
            _ => &[Outcome::Done],
        };
        // Mostly success, so that sagas get far.
        if choice < 200 {
            alternatives[0].clone()
        } else {
            alternatives[choice as usize % alternatives.len()].clone()
        }
    }

    fn check_invariants(p: &OrderProgress) {
        assert!(0 <= p.captured && p.captured <= p.authorized, "{p:?}");
        assert!(0 <= p.refunded && p.refunded <= p.captured, "{p:?}");
        assert!(p.authorized <= p.total, "{p:?}");
    }

    proptest! {
        /// I3 holds after any interleaving of steps and commands; terminal
        /// statuses stay terminal; a saga left alone always finishes.
        #[test]
        fn saga_invariants_hold(
            manual in any::<bool>(),
            total in 1i64..1000,
            events in proptest::collection::vec(event(), 0..80),
        ) {
            let mode = if manual { CaptureMode::Manual } else { CaptureMode::Automatic };
            let mut p = OrderProgress::new(total, mode);
            let mut refunds = 0usize;
            for (n, e) in events.iter().enumerate() {
                let before = p.clone();
                let next = match e {
                    Event::Run(choice) => match next_step(&p) {
                        Some(step) => {
                            let applied = p.apply(&step, &outcome_for(&p, &step, *choice, n));
                            prop_assert_ne!(&applied.progress, &p, "step {:?} made no progress", step);
                            applied.progress
                        }
                        None => p.clone(),
                    },
                    Event::Cancel => p.request_cancel().unwrap_or(p.clone()),
                    Event::Capture => p.request_capture().unwrap_or(p.clone()),
                    Event::Refund(amount, restock) => {
                        refunds += 1;
                        match p.request_refund(format!("r{refunds}"), *amount, *restock) {
                            Ok(next) => next,
                            Err(CommandError::RefundExceedsCaptured { refundable }) => {
                                prop_assert!(*amount > refundable);
                                p.clone()
                            }
                            Err(_) => p.clone(),
                        }
                    }
                    Event::Ship => p.request_ship().unwrap_or(p.clone()),
                    Event::Deliver => p.request_deliver().unwrap_or(p.clone()),
                };
                check_invariants(&next);
                if before.status.is_terminal() {
                    prop_assert_eq!(before.status, next.status);
                }
                p = next;
            }
            // Left alone, the saga finishes within a bounded number of steps.
            for n in 0..30 {
                match next_step(&p) {
                    Some(step) => {
                        p = p.apply(&step, &outcome_for(&p, &step, 0, 1000 + n)).progress;
                        check_invariants(&p);
                    }
                    None => break,
                }
            }
            prop_assert!(next_step(&p).is_none(), "saga did not finish: {:?}", p);
            prop_assert_ne!(p.saga_state(), SagaState::Running);
            // A cancelled order keeps none of the customer's money.
            if p.status == OrderStatus::Cancelled && !p.failed {
                prop_assert_eq!(p.refunded, p.captured, "{:?}", p);
                prop_assert!(p.open_refunds.is_empty(), "{:?}", p);
            }
            // A finished saga holds no stock reservation (unless it failed
            // and waits for a person; the reservation then expires).
            if !p.failed {
                prop_assert_ne!(p.stock, StockState::Reserved, "{:?}", p);
            }
        }
    }

    fn run_to_end(mut p: OrderProgress, outcomes: &[(StepName, Outcome)]) -> OrderProgress {
        while let Some(step) = next_step(&p) {
            let name = step.name();
            let outcome = outcomes
                .iter()
                .find(|(n, _)| Some(*n) == name)
                .map(|(_, o)| o.clone())
                .unwrap_or(match step {
                    Step::OpenCancelRefund { .. } => Outcome::RefundOpened("c".into()),
                    _ => Outcome::Done,
                });
            p = p.apply(&step, &outcome).progress;
        }
        p
    }

    #[test]
    fn happy_path_pays_and_commits() {
        let p = run_to_end(OrderProgress::new(500, CaptureMode::Automatic), &[]);
        assert_eq!(p.status, OrderStatus::Paid);
        assert_eq!(p.payment, PaymentStatus::Captured);
        assert_eq!(p.stock, StockState::Committed);
        assert_eq!((p.authorized, p.captured), (500, 500));
        assert_eq!(p.saga_state(), SagaState::Completed);
    }

    #[test]
    fn decline_releases_stock_and_fails_payment() {
        let p = run_to_end(
            OrderProgress::new(500, CaptureMode::Automatic),
            &[(StepName::AuthorizePayment, Outcome::Declined)],
        );
        assert_eq!(p.status, OrderStatus::PaymentFailed);
        assert_eq!(p.stock, StockState::Released);
        assert_eq!(p.saga_state(), SagaState::Compensated);
    }

    #[test]
    fn manual_capture_stops_at_authorized_then_pays() {
        let p = run_to_end(OrderProgress::new(500, CaptureMode::Manual), &[]);
        assert_eq!(p.status, OrderStatus::Authorized);
        assert_eq!(p.stock, StockState::Committed);
        assert_eq!(p.captured, 0);
        let p = run_to_end(p.request_capture().unwrap(), &[]);
        assert_eq!(p.status, OrderStatus::Paid);
        assert_eq!(p.captured, 500);
    }

    #[test]
    fn cancel_after_capture_refunds_in_full_and_restocks() {
        let paid = run_to_end(OrderProgress::new(500, CaptureMode::Automatic), &[]);
        let p = run_to_end(paid.request_cancel().unwrap(), &[]);
        assert_eq!(p.status, OrderStatus::Cancelled);
        assert_eq!(p.payment, PaymentStatus::Refunded);
        assert_eq!(p.refunded, 500);
        assert_eq!(p.stock, StockState::Released);
        assert_eq!(p.saga_state(), SagaState::Compensated);
    }

    #[test]
    fn cancel_finds_an_unrecorded_capture_and_refunds_it() {
        let mut p = OrderProgress::new(500, CaptureMode::Automatic);
        for step in [Step::ReserveInventory, Step::AuthorizePayment] {
            p = p.apply(&step, &Outcome::Done).progress;
        }
        // The capture happened, but its outcome was never recorded.
        p = p.request_cancel().unwrap();
        assert_eq!(next_step(&p), Some(Step::VoidPayment));
        p = p
            .apply(
                &Step::VoidPayment,
                &Outcome::PaymentFound(FoundPayment::Capture),
            )
            .progress;
        assert_eq!(p.captured, 500);
        let p = run_to_end(p, &[]);
        assert_eq!(p.status, OrderStatus::Cancelled);
        assert_eq!((p.refunded, p.payment), (500, PaymentStatus::Refunded));
    }

    #[test]
    fn a_declined_capture_voids_the_authorization() {
        let p = run_to_end(
            OrderProgress::new(500, CaptureMode::Automatic),
            &[(StepName::CapturePayment, Outcome::Declined)],
        );
        assert_eq!(p.status, OrderStatus::PaymentFailed);
        assert_eq!(p.payment, PaymentStatus::Voided);
        assert_eq!(p.stock, StockState::Released);
    }

    #[test]
    fn cancel_releases_a_partial_reservation_and_finds_an_unrecorded_authorization() {
        let p = OrderProgress::new(500, CaptureMode::Automatic)
            .request_cancel()
            .unwrap();
        assert_eq!(next_step(&p), Some(Step::ReleaseInventory));
        let p = p.apply(&Step::ReleaseInventory, &Outcome::Done).progress;
        assert_eq!(next_step(&p), Some(Step::FinishCancel));
        let p = p
            .apply(
                &Step::FinishCancel,
                &Outcome::PaymentFound(FoundPayment::Authorization),
            )
            .progress;
        assert_eq!(next_step(&p), Some(Step::VoidPayment));
        let p = run_to_end(p, &[]);
        assert_eq!(
            (p.status, p.payment),
            (OrderStatus::Cancelled, PaymentStatus::Voided)
        );
    }

    #[test]
    fn refunds_never_exceed_the_capture() {
        let paid = run_to_end(OrderProgress::new(500, CaptureMode::Automatic), &[]);
        let first = paid.request_refund("a".into(), 300, false).unwrap();
        // While the first is open, a second that fits is queued behind it;
        // one that does not fit is refused at once.
        assert_eq!(
            first.request_refund("b".into(), 201, false),
            Err(CommandError::RefundExceedsCaptured { refundable: 200 })
        );
        let both = first.request_refund("b".into(), 150, false).unwrap();
        let both = run_to_end(both, &[]);
        assert_eq!(
            (both.refunded, both.payment),
            (450, PaymentStatus::PartiallyRefunded)
        );
        assert!(both.open_refunds.is_empty());
        let done = run_to_end(first, &[]);
        assert_eq!(done.payment, PaymentStatus::PartiallyRefunded);
        assert_eq!(
            done.request_refund("b".into(), 201, false),
            Err(CommandError::RefundExceedsCaptured { refundable: 200 })
        );
        let all = run_to_end(done.request_refund("b".into(), 200, false).unwrap(), &[]);
        assert_eq!(all.payment, PaymentStatus::Refunded);
        assert_eq!(all.status, OrderStatus::Paid);
    }

    #[test]
    fn totals_are_bounded() {
        assert_eq!(order_total(&[(100, 3), (5, 2)]), Ok(310));
        assert!(order_total(&[(1_000_000_000_000, 2)]).is_err());
        assert!(order_total(&[(i64::MAX, 10_000)]).is_err());
    }
}
