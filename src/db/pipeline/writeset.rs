//! What actors hand to the write pipeline: typed write-sets, and what each
//! comes back as once its batch committed.

use super::super::carts::CartWrite;
use super::super::inventory::{InventoryRow, StockWrite};
use super::super::orders::{NewOrder, OrderChange};
use super::super::outbox::NewOutboxRow;

/// An order written by its actor: placed, or moved from the version the
/// actor holds.
#[derive(Debug, Clone)]
pub enum OrderWrite {
    /// A new order with its items, saga, first audit entry and
    /// `order.created`; with the cart it checks out (guarded by the cart's
    /// version) and the request's idempotency key (guarded by its token).
    Place(Box<NewOrder>),
    /// A change guarded by the order's version (and, for a saga step, by
    /// the saga's lease; for a command with a key, by the key's token).
    Change(Box<OrderChange>),
}

impl OrderWrite {
    fn order_id(&self) -> &str {
        match self {
            OrderWrite::Place(new) => &new.order.id,
            OrderWrite::Change(change) => &change.order_id,
        }
    }
}

/// Everything one actor needs durable at once. The refusable parts (a stock
/// part's guarded delta, its reservation rows and external event; a cart
/// line's version guard; an order's version, lease or key guard) gate the
/// whole write-set: if one is refused,
/// nothing of this write-set is written and its batch-mates commit.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    pub stock: Vec<StockWrite>,
    pub carts: Vec<CartWrite>,
    pub orders: Vec<OrderWrite>,
    pub events: Vec<NewOutboxRow>,
}

impl WriteSet {
    pub fn stock(write: StockWrite) -> WriteSet {
        WriteSet {
            stock: vec![write],
            ..WriteSet::default()
        }
    }

    pub fn cart(write: CartWrite) -> WriteSet {
        WriteSet {
            carts: vec![write],
            ..WriteSet::default()
        }
    }

    pub fn order(write: OrderWrite) -> WriteSet {
        WriteSet {
            orders: vec![write],
            ..WriteSet::default()
        }
    }

    /// The rows this write-set changes by a delta or a version guard. Two
    /// write-sets that share one never ride in the same batch: a multi-row
    /// `UPDATE ... FROM` touches each target row once.
    pub(super) fn keys(&self) -> impl Iterator<Item = RowKey<'_>> {
        let stock = self.stock.iter().map(|s| RowKey::Sku(&s.sku));
        let carts = self.carts.iter().map(|c| match c {
            CartWrite::Create(row) => RowKey::Cart(&row.id),
            CartWrite::Line { cart_id, .. } => RowKey::Cart(cart_id),
        });
        let orders = self.orders.iter().flat_map(|o| {
            let cart = match o {
                OrderWrite::Place(new) => new.cart.as_ref().map(|(id, _)| RowKey::Cart(id)),
                OrderWrite::Change(_) => None,
            };
            std::iter::once(RowKey::Order(o.order_id())).chain(cart)
        });
        stock.chain(carts).chain(orders)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RowKey<'a> {
    Sku(&'a str),
    Cart(&'a str),
    Order(&'a str),
}

/// Why a write-set was not written. Its batch-mates were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A guarded stock delta did not hold, or a reservation row was already
    /// gone or already there: another process changed the SKU.
    #[error("the stock of {sku} changed concurrently")]
    StockChanged { sku: String },
    /// The external event was recorded before: its change was applied then.
    #[error("external event already recorded")]
    DuplicateEvent,
    /// The cart is no longer open at the version its actor holds.
    #[error("cart {cart_id} changed concurrently")]
    CartChanged { cart_id: String },
    /// The order is no longer at the version its actor holds.
    #[error("order {order_id} changed concurrently")]
    OrderChanged { order_id: String },
    /// The saga's lease is no longer the writer's.
    #[error("the saga's lease of order {order_id} was lost")]
    LeaseLost { order_id: String },
    /// The request's idempotency key was taken over by a retry.
    #[error("the idempotency key was taken over")]
    KeyLost,
}

/// What a committed write-set learned: the counters after each stock part,
/// in the order of [`WriteSet::stock`].
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub stock: Vec<InventoryRow>,
}
