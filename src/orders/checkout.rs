//! Checkout: a cart, or a list of lines, becomes an order whose saga runs in
//! its actor. [`Checkout`] is the one service the HTTP layer calls for it;
//! it answers with a typed [`CheckoutOutcome`] and never with HTTP.
//!
//! The engine's own way to check a cart out is the saga. An embedding may
//! register another [`CheckoutEngine`] under a name at start-up (the load
//! benches register their one-transaction baseline); `checkout.engine`
//! chooses among them once, when the service is built.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::carts::Carts;
use super::views::OrderView;
use super::{LineInput, Orders, OrdersError, PaymentInput, PlaceOrder};
use crate::db::idempotency::Binding;
use crate::domain::ids::{CartId, OrderId, UserId};
use crate::domain::inventory::Sku;
use crate::domain::order::OrderStatus;
use crate::idempotency::{Claim, Resource};

/// A cart checkout as an alternative engine receives it.
#[derive(Debug, Clone)]
pub struct CartCheckout {
    pub user: UserId,
    pub cart_id: CartId,
    pub payment: PaymentInput,
    /// The request's idempotency key, to bind to the order it records.
    pub idempotency: Option<Binding>,
}

/// Another way to check a cart out, registered at start-up under a name
/// (`checkout.engine`). It runs the checkout to a final order and returns
/// the order's id; [`Checkout`] answers from that order as it does for the
/// saga. It writes the database behind the cart actors' backs: the service
/// makes the cart's actor reload afterwards.
pub trait CheckoutEngine: Send + Sync + 'static {
    fn check_out<'a>(
        &'a self,
        orders: &'a Orders,
        checkout: CartCheckout,
    ) -> BoxFuture<'a, Result<OrderId, OrdersError>>;
}

/// Checkout engines an embedding offers besides the saga, by name.
pub type CheckoutEngines = Vec<(&'static str, Arc<dyn CheckoutEngine>)>;

/// How a checkout (or a placement) ended, as far as the caller waited.
#[derive(Debug)]
pub enum CheckoutOutcome {
    /// The saga finished: the order is `paid` (`authorized` with manual
    /// capture), or it moved on since.
    Placed(Box<OrderView>),
    /// The saga goes on; the order is `pending`.
    Accepted { order_id: OrderId },
    /// Out of stock: the order is `rejected`; `details` has the shortfalls.
    Rejected {
        order_id: OrderId,
        details: serde_json::Value,
    },
    /// The provider declined: the order is `payment_failed`.
    Declined { order_id: OrderId },
}

impl CheckoutOutcome {
    /// The order's id, as the wire has it.
    pub fn order_id(&self) -> String {
        match self {
            CheckoutOutcome::Placed(view) => view.id.clone(),
            CheckoutOutcome::Accepted { order_id }
            | CheckoutOutcome::Rejected { order_id, .. }
            | CheckoutOutcome::Declined { order_id } => order_id.to_string(),
        }
    }
}

/// Whether the caller waits for the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Up to `checkout.sync_wait_ms`.
    ForSaga,
    /// Not at all: answer `Accepted` as soon as the order is recorded.
    No,
}

/// What a request that places an order must do under its idempotency key.
enum Placement {
    /// An earlier run with this key placed this order: answer from it.
    Placed(OrderId),
    /// Place the order, binding it to the key (if one was sent).
    ToPlace(Option<Binding>),
}

impl Placement {
    fn of(claim: Option<Claim>) -> Result<Placement, OrdersError> {
        match claim {
            Some(Claim {
                resource: Some(Resource::Order(id)),
                ..
            }) => match OrderId::parse(&id) {
                Some(id) => Ok(Placement::Placed(id)),
                // Never placed afresh: that could charge twice under one key.
                None => Err(OrdersError::from(
                    diesel::result::Error::DeserializationError(
                        format!("an idempotency key is bound to {id:?}, not an order id").into(),
                    ),
                )),
            },
            other => Ok(Placement::ToPlace(other.map(|c| c.binding))),
        }
    }
}

/// The engine named `name` (`checkout.engine`): `None` for the saga
/// (`orderflow`), or one of `alternatives`; any other name is an error that
/// says where the engine is to be found.
pub fn choose_engine(
    name: &str,
    alternatives: &CheckoutEngines,
) -> anyhow::Result<Option<Arc<dyn CheckoutEngine>>> {
    if name == crate::config::ORDERFLOW_CHECKOUT {
        return Ok(None);
    }
    if let Some((_, chosen)) = alternatives.iter().find(|(n, _)| *n == name) {
        return Ok(Some(chosen.clone()));
    }
    if name == "baseline" {
        anyhow::bail!(
            "checkout.engine = \"baseline\" is not part of the engine: the baseline checkout \
             lives in the orderflow-bench crate; run it with \
             `cargo run --release -p orderflow-bench --bin orderflow-bench-engine -- serve --engine baseline` \
             (docs/benchmarks.md)"
        )
    }
    anyhow::bail!("checkout.engine: no checkout engine is called `{name}`; use `orderflow`")
}

#[derive(Clone)]
pub struct Checkout {
    orders: Orders,
    carts: Carts,
    /// `checkout.sync_wait_ms`.
    wait: Duration,
    /// The engine `checkout.engine` chose, when it is not the saga.
    engine: Option<Arc<dyn CheckoutEngine>>,
}

impl Checkout {
    /// `engine`: the one [`choose_engine`] chose.
    pub fn new(
        orders: Orders,
        carts: Carts,
        wait: Duration,
        engine: Option<Arc<dyn CheckoutEngine>>,
    ) -> Checkout {
        Checkout {
            orders,
            carts,
            wait,
            engine,
        }
    }

    pub fn payments(&self) -> &crate::payments::Payments {
        self.orders.payments()
    }

    /// Checks `user`'s cart out under the request's idempotency `claim`.
    pub async fn cart(
        &self,
        user: UserId,
        cart_id: &CartId,
        payment: PaymentInput,
        claim: Option<Claim>,
        wait: Wait,
    ) -> Result<CheckoutOutcome, OrdersError> {
        let idempotency = match Placement::of(claim)? {
            // A retry of a checkout that placed its order: the saga runs
            // (it may have been interrupted) and is waited for as the first
            // time.
            Placement::Placed(order_id) => return self.run_saga(&order_id, wait).await,
            Placement::ToPlace(idempotency) => idempotency,
        };
        let Some(engine) = &self.engine else {
            let order_id = self
                .carts
                .checkout(user, cart_id, payment, idempotency)
                .await?;
            return self.run_saga(&order_id, wait).await;
        };
        // Spawned: the engine runs to its end (commit or rollback) even if
        // the client goes away.
        let (run, orders) = (engine.clone(), self.orders.clone());
        let checkout = CartCheckout {
            user,
            cart_id: *cart_id,
            payment,
            idempotency,
        };
        let placed = tokio::spawn(async move { run.check_out(&orders, checkout).await })
            .await
            .map_err(|e| OrdersError::Unavailable(format!("checkout task: {e}")))?;
        // The cart's actor still holds the cart as it was.
        self.carts.forget(cart_id).await;
        self.outcome_of(&placed?).await
    }

    /// Places an order of `lines` for `user` (`POST /orders`).
    pub async fn lines(
        &self,
        user: UserId,
        lines: Vec<(Sku, i64)>,
        payment: PaymentInput,
        claim: Option<Claim>,
        wait: Wait,
    ) -> Result<CheckoutOutcome, OrdersError> {
        let order_id = match Placement::of(claim)? {
            Placement::Placed(order_id) => order_id,
            Placement::ToPlace(idempotency) => {
                let lines = lines
                    .into_iter()
                    .map(|(sku, quantity)| LineInput {
                        sku,
                        quantity,
                        priced: None,
                    })
                    .collect();
                self.orders
                    .place(PlaceOrder {
                        user_id: user,
                        lines,
                        payment,
                        cart: None,
                        idempotency,
                    })
                    .await?
            }
        };
        self.run_saga(&order_id, wait).await
    }

    /// Runs the new order's saga and answers with its outcome, or with
    /// `Accepted` when the caller does not wait or the saga takes longer
    /// than `checkout.sync_wait_ms`. The saga goes on either way: it is
    /// owned by its actor, not by the caller.
    async fn run_saga(
        &self,
        order_id: &OrderId,
        wait: Wait,
    ) -> Result<CheckoutOutcome, OrdersError> {
        let run = {
            let (orders, id) = (self.orders.clone(), *order_id);
            tokio::spawn(async move { orders.run_saga(&id, false).await })
        };
        if wait == Wait::ForSaga {
            match tokio::time::timeout(self.wait, run).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => {
                    // The order is recorded; recovery will run its saga.
                    tracing::warn!(order.id = %order_id, error = %e, "saga did not run to the end");
                }
                Ok(Err(e)) => tracing::error!(order.id = %order_id, error = %e, "saga task failed"),
                Err(_) => {}
            }
        }
        self.outcome_of(order_id).await
    }

    /// The outcome an order stands for as it now is.
    pub async fn outcome_of(&self, order_id: &OrderId) -> Result<CheckoutOutcome, OrdersError> {
        let view = self.orders.view(order_id).await?;
        let order_id = *order_id;
        Ok(match view.status {
            OrderStatus::Pending => CheckoutOutcome::Accepted { order_id },
            OrderStatus::Rejected => {
                let details = self.orders.rejection_details(&order_id).await?;
                CheckoutOutcome::Rejected { order_id, details }
            }
            OrderStatus::PaymentFailed => CheckoutOutcome::Declined { order_id },
            OrderStatus::Authorized
            | OrderStatus::Paid
            | OrderStatus::Shipped
            | OrderStatus::Delivered
            | OrderStatus::Cancelled => CheckoutOutcome::Placed(Box::new(view)),
        })
    }
}
