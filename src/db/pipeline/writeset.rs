//! What actors hand to the write pipeline: typed write-sets, and what each
//! comes back as once its batch committed.

use super::super::carts::CartWrite;
use super::super::inventory::{InventoryRow, StockWrite};
use super::super::outbox::NewOutboxRow;

/// Everything one actor needs durable at once. The refusable parts (a stock
/// part's guarded delta, its reservation rows and external event; a cart
/// line's version guard) gate the whole write-set: if one is refused,
/// nothing of this write-set is written and its batch-mates commit.
#[derive(Debug, Clone, Default)]
pub struct WriteSet {
    pub stock: Vec<StockWrite>,
    pub carts: Vec<CartWrite>,
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

    /// The rows this write-set changes by a delta or a version guard. Two
    /// write-sets that share one never ride in the same batch: a multi-row
    /// `UPDATE ... FROM` touches each target row once.
    pub(super) fn keys(&self) -> impl Iterator<Item = RowKey<'_>> {
        let stock = self.stock.iter().map(|s| RowKey::Sku(&s.sku));
        let carts = self.carts.iter().map(|c| match c {
            CartWrite::Create(row) => RowKey::Cart(&row.id),
            CartWrite::Line { cart_id, .. } => RowKey::Cart(cart_id),
        });
        stock.chain(carts)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum RowKey<'a> {
    Sku(&'a str),
    Cart(&'a str),
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
}

/// What a committed write-set learned: the counters after each stock part,
/// in the order of [`WriteSet::stock`].
#[derive(Debug, Clone, Default)]
pub struct Receipt {
    pub stock: Vec<InventoryRow>,
}
