//! Queries on carts and their items. Every change is a [`CartWrite`] handed
//! to the write pipeline, guarded by the cart's version, so that a change
//! made by another process (or a checkout) is noticed instead of overwritten.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

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

/// A cart's part of a write-set for the write pipeline
/// (`crate::db::pipeline`).
#[derive(Debug, Clone)]
pub enum CartWrite {
    Create(CartRow),
    /// One line change, refused unless the cart is still open at `version`
    /// (it then moves to `version + 1`).
    Line {
        cart_id: String,
        version: i64,
        change: LineWrite,
    },
}
