//! Queries on carts and their items. Every change is written through, guarded
//! by the cart's version, so that a change made by another process (or a
//! checkout) is noticed instead of overwritten.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::schema::{cart_items, carts};
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = carts, treat_none_as_default_value = false)]
pub struct CartRow {
    pub id: String,
    pub user_id: String,
    pub status: String,
    pub currency: String,
    pub order_id: Option<String>,
    pub version: i64,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = cart_items)]
pub struct CartItemRow {
    pub cart_id: String,
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price: i64,
}

pub async fn create(conn: &mut DbConn, cart: &CartRow) -> QueryResult<()> {
    with_conn!(conn, |c| {
        diesel::insert_into(carts::table)
            .values(cart)
            .execute(c)
            .await
            .map(|_| ())
    })
}

pub async fn load(conn: &mut DbConn, id: &str) -> QueryResult<Option<(CartRow, Vec<CartItemRow>)>> {
    let cart = with_conn!(&mut *conn, |c| {
        carts::table
            .find(id)
            .select(CartRow::as_select())
            .first(c)
            .await
            .optional()
    })?;
    match cart {
        Some(cart) => Ok(Some((cart, items(conn, id).await?))),
        None => Ok(None),
    }
}

/// The cart's lines, by SKU.
pub async fn items(conn: &mut DbConn, cart_id: &str) -> QueryResult<Vec<CartItemRow>> {
    with_conn!(conn, |c| {
        cart_items::table
            .filter(cart_items::cart_id.eq(cart_id))
            .order(cart_items::sku.asc())
            .select(CartItemRow::as_select())
            .load(c)
            .await
    })
}

/// The line change a cart actor writes.
#[derive(Debug, Clone)]
pub enum LineWrite {
    /// Insert or replace the line.
    Put(CartItemRow),
    Delete {
        sku: String,
    },
}

/// Applies one line change if the cart is still open at `version`; returns
/// false (and writes nothing) otherwise.
pub async fn write_line(
    conn: &mut DbConn,
    cart_id: &str,
    version: i64,
    change: &LineWrite,
    now: NaiveDateTime,
) -> QueryResult<bool> {
    with_conn!(conn, |c| {
        c.transaction(async |c| {
            let updated = diesel::update(
                carts::table
                    .filter(carts::id.eq(cart_id))
                    .filter(carts::status.eq("open"))
                    .filter(carts::version.eq(version)),
            )
            .set((carts::version.eq(version + 1), carts::updated_at.eq(now)))
            .execute(c)
            .await?;
            if updated == 0 {
                return Ok(false);
            }
            match change {
                LineWrite::Put(row) => {
                    diesel::delete(
                        cart_items::table
                            .filter(cart_items::cart_id.eq(cart_id))
                            .filter(cart_items::sku.eq(&row.sku)),
                    )
                    .execute(c)
                    .await?;
                    diesel::insert_into(cart_items::table)
                        .values(row)
                        .execute(c)
                        .await?;
                }
                LineWrite::Delete { sku } => {
                    diesel::delete(
                        cart_items::table
                            .filter(cart_items::cart_id.eq(cart_id))
                            .filter(cart_items::sku.eq(sku)),
                    )
                    .execute(c)
                    .await?;
                }
            }
            Ok(true)
        })
        .await
    })
}
