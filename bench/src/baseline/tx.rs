//! The queries of the baseline checkout: the design a team would write
//! without actors, measured against orderflow by the load benches. A checkout is one explicit transaction on one
//! connection: [`Tx::begin`] (on SQLite `BEGIN IMMEDIATE`, its whole-database
//! write lock), [`Tx::load_cart`] (the cart row locked on PostgreSQL, so two
//! checkouts of one cart queue instead of both paying), [`Tx::bind_key`],
//! [`Tx::lock_stock`] (`SELECT ... FOR NO KEY UPDATE` on the stock rows on
//! PostgreSQL), the payment calls while the locks are held, [`Tx::write`],
//! then [`Tx::commit`].
//!
//! None of these queries opens a transaction of its own: a nested `BEGIN`
//! would commit the outer one early.

use diesel::prelude::*;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use orderflow::db::carts::{CartItemRow, CartRow};
use orderflow::db::idempotency::Binding;
use orderflow::db::orders::{CreateError, NewOrder};
use orderflow::db::schema::{carts, inventory, products};
use orderflow::db::DbConn;
use orderflow::{bind_idempotency_key, with_conn, write_new_order};

/// One SKU's stock as locked by the checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedStock {
    pub sku: String,
    pub on_hand: i64,
    pub reserved: i64,
    /// The product is on sale.
    pub active: bool,
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
        let items = orderflow::db::carts::items(self.conn(), cart_id).await?;
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
    pub async fn write(&mut self, new: &NewOrder) -> Result<(), CreateError> {
        with_conn!(self.conn(), |c| write_new_order!(c, new))
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
