//! The queries of the baseline checkout (`checkout.engine = "baseline"`): the
//! design a team would write without actors, measured against orderflow by
//! the load benches. A checkout is one explicit transaction on one
//! connection: [`Tx::begin`] (on SQLite `BEGIN IMMEDIATE`, its whole-database
//! write lock), [`Tx::load_cart`] (the cart row locked on PostgreSQL, so two
//! checkouts of one cart queue instead of both paying), [`Tx::bind_key`],
//! [`Tx::lock_stock`] (`SELECT ... FOR NO KEY UPDATE` on the stock rows on
//! PostgreSQL), the payment calls while the locks are held, [`Tx::write`],
//! then [`Tx::commit`].
//!
//! None of these queries opens a transaction of its own: a nested `BEGIN`
//! would commit the outer one early.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use super::carts::{CartItemRow, CartRow};
use super::idempotency::Binding;
use super::inventory::NewMovementRow;
use super::orders::{OrderEventRow, OrderItemRow, OrderRow, PaymentRow, SagaRow};
use super::outbox::NewOutboxRow;
use super::schema::{
    carts, inventory, inventory_movements, order_events, order_items, orders, outbox, payments,
    products, sagas,
};
use super::DbConn;
use crate::{bind_idempotency_key, with_conn};

/// One SKU's stock as locked by the checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedStock {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// The product is on sale.
    pub active: bool,
}

/// Everything a finished baseline checkout writes.
#[derive(Debug)]
pub struct BaselineOrder {
    pub order: OrderRow,
    pub items: Vec<OrderItemRow>,
    /// Units taken off `on_hand` per SKU (empty when nothing was sold).
    pub taken: Vec<NewMovementRow>,
    pub payments: Vec<PaymentRow>,
    pub saga: SagaRow,
    pub audit: Vec<OrderEventRow>,
    pub outbox: Vec<NewOutboxRow>,
    /// The cart checked out, at the version it was read.
    pub cart: (String, i64),
}

/// Why the writes were refused; the transaction must be rolled back.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the cart changed concurrently")]
    CartChanged,
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

/// An open transaction on a pooled connection it owns. Finish it with
/// [`Tx::commit`] or [`Tx::rollback`]; dropped without either, or when a
/// rollback fails, the connection is taken out of the pool, so an open
/// transaction never reaches another caller.
pub struct Tx {
    conn: Option<DbConn>,
}

impl Tx {
    /// Begins on `conn`. If `BEGIN` fails no transaction is open, and the
    /// connection goes back to the pool (whose check drops a broken one).
    pub async fn begin(mut conn: DbConn) -> QueryResult<Tx> {
        match &mut conn {
            DbConn::Postgres(c) => c.batch_execute("BEGIN").await?,
            DbConn::Sqlite(c) => c.batch_execute("BEGIN IMMEDIATE").await?,
        }
        Ok(Tx { conn: Some(conn) })
    }

    fn conn(&mut self) -> &mut DbConn {
        self.conn.as_mut().expect("the transaction is open")
    }

    /// The connection stays in the guard until COMMIT has answered: if this
    /// future is dropped meanwhile, `Drop` discards the connection.
    pub async fn commit(mut self) -> QueryResult<()> {
        let result = with_conn!(self.conn(), |c| c.batch_execute("COMMIT").await);
        if result.is_err() {
            // The outcome of a failed COMMIT is unknown to this connection;
            // make sure it is not reused inside a transaction.
            self.end_with_rollback().await;
        } else {
            self.conn = None;
        }
        result
    }

    pub async fn rollback(mut self) {
        self.end_with_rollback().await;
    }

    async fn end_with_rollback(&mut self) {
        let rolled_back = with_conn!(self.conn(), |c| c.batch_execute("ROLLBACK").await);
        let conn = self.conn.take().expect("the transaction is open");
        if rolled_back.is_err() {
            discard(conn);
        }
    }

    /// The cart and its lines; on PostgreSQL the cart row is locked.
    pub async fn load_cart(
        &mut self,
        cart_id: &str,
    ) -> QueryResult<Option<(CartRow, Vec<CartItemRow>)>> {
        let cart = match self.conn() {
            DbConn::Postgres(c) => carts::table
                .find(cart_id)
                .select(CartRow::as_select())
                .for_update()
                .first(&mut **c)
                .await
                .optional()?,
            DbConn::Sqlite(c) => carts::table
                .find(cart_id)
                .select(CartRow::as_select())
                .first(&mut **c)
                .await
                .optional()?,
        };
        let Some(cart) = cart else {
            return Ok(None);
        };
        let items = super::carts::items(self.conn(), cart_id).await?;
        Ok(Some((cart, items)))
    }

    /// Binds the request's idempotency key to the order about to be made;
    /// false if a retry of the request took the key over.
    pub async fn bind_key(&mut self, binding: &Binding, order_id: &str) -> QueryResult<bool> {
        with_conn!(self.conn(), |c| bind_idempotency_key!(
            c, binding, "order", order_id
        ))
    }

    /// Locks the stock rows of `skus` in SKU order (so two checkouts never
    /// wait for each other in a cycle) and reads them, with whether each
    /// product is on sale (read, not locked).
    pub async fn lock_stock(&mut self, skus: &[String]) -> QueryResult<Vec<LockedStock>> {
        let mut sorted: Vec<&String> = skus.iter().collect();
        sorted.sort();
        let mut locked = Vec::with_capacity(sorted.len());
        for sku in sorted {
            let query = inventory::table.find(sku).select((
                inventory::sku,
                inventory::on_hand,
                inventory::reserved,
            ));
            let row: Option<(String, i64, i64)> = match self.conn() {
                // NO KEY UPDATE: foreign-key checks of the SKU (cart lines,
                // ledger entries) need not wait for this checkout.
                DbConn::Postgres(c) => {
                    query.for_no_key_update().first(&mut **c).await.optional()?
                }
                // BEGIN IMMEDIATE already holds the database's write lock.
                DbConn::Sqlite(c) => query.first(&mut **c).await.optional()?,
            };
            let Some((sku, on_hand, reserved)) = row else {
                continue;
            };
            let active: bool = with_conn!(self.conn(), |c| {
                products::table
                    .find(&sku)
                    .select(products::active)
                    .first(c)
                    .await
            })?;
            locked.push(LockedStock {
                sku,
                on_hand,
                reserved,
                active,
            });
        }
        Ok(locked)
    }

    /// Writes the order with everything that goes with it and marks the cart
    /// checked out (if it is still at the version read).
    pub async fn write(
        &mut self,
        new: &BaselineOrder,
        now: NaiveDateTime,
    ) -> Result<(), WriteError> {
        with_conn!(self.conn(), |c| {
            let (cart_id, version) = &new.cart;
            let updated = diesel::update(
                carts::table
                    .filter(carts::id.eq(cart_id))
                    .filter(carts::status.eq("open"))
                    .filter(carts::version.eq(version)),
            )
            .set((
                carts::status.eq("checked_out"),
                carts::order_id.eq(&new.order.id),
                carts::version.eq(version + 1),
                carts::updated_at.eq(now),
            ))
            .execute(c)
            .await?;
            if updated == 0 {
                return Err(WriteError::CartChanged);
            }
            for taken in &new.taken {
                diesel::update(inventory::table.find(&taken.sku))
                    .set((
                        inventory::on_hand.eq(inventory::on_hand + taken.on_hand_delta),
                        inventory::version.eq(inventory::version + 1_i64),
                        inventory::updated_at.eq(now),
                    ))
                    .execute(c)
                    .await?;
                diesel::insert_into(inventory_movements::table)
                    .values(taken)
                    .execute(c)
                    .await?;
            }
            diesel::insert_into(orders::table)
                .values(&new.order)
                .execute(c)
                .await?;
            for item in &new.items {
                diesel::insert_into(order_items::table)
                    .values(item)
                    .execute(c)
                    .await?;
            }
            for payment in &new.payments {
                diesel::insert_into(payments::table)
                    .values(payment)
                    .execute(c)
                    .await?;
            }
            diesel::insert_into(sagas::table)
                .values(&new.saga)
                .execute(c)
                .await?;
            for row in &new.audit {
                diesel::insert_into(order_events::table)
                    .values(row)
                    .execute(c)
                    .await?;
            }
            for row in &new.outbox {
                diesel::insert_into(outbox::table)
                    .values(row)
                    .execute(c)
                    .await?;
            }
            Ok(())
        })
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            tracing::error!(
                "a baseline checkout transaction was dropped open; discarding its connection"
            );
            discard(conn);
        }
    }
}

/// Closes the connection instead of returning it to the pool, which opens a
/// fresh one in its place.
fn discard(conn: DbConn) {
    match conn {
        DbConn::Postgres(c) => drop(deadpool::managed::Object::take(c)),
        DbConn::Sqlite(c) => drop(deadpool::managed::Object::take(c)),
    }
}
