//! Queries on `products` (with their `inventory` row). Creating a product
//! creates its stock in the same transaction, with the initial movement.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};

use super::inventory::{InventoryRow, NewMovementRow};
use super::schema::{inventory, inventory_movements, products};
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = products)]
pub struct ProductRow {
    pub sku: String,
    pub name: String,
    pub description: Option<String>,
    pub price: i64,
    pub currency: String,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = products)]
pub struct NewProductRow<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub price: i64,
    pub currency: &'a str,
    pub active: bool,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

/// A partial update: `None` leaves a column as it is.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = products)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub price: Option<i64>,
    pub active: Option<bool>,
    pub updated_at: Option<NaiveDateTime>,
}

/// Inserts the product, its inventory row and, for non-zero stock, the
/// `initial` movement, in one transaction.
pub async fn create_with_stock(
    conn: &mut DbConn,
    product: &NewProductRow<'_>,
    initial_stock: i64,
    movement: Option<&NewMovementRow>,
) -> QueryResult<(ProductRow, InventoryRow)> {
    let now = product.created_at;
    with_conn!(conn, |c| {
        c.transaction(async |c| {
            let row = diesel::insert_into(products::table)
                .values(product)
                .returning(ProductRow::as_returning())
                .get_result(c)
                .await?;
            let stock = diesel::insert_into(inventory::table)
                .values((
                    inventory::sku.eq(product.sku),
                    inventory::on_hand.eq(initial_stock),
                    inventory::reserved.eq(0_i64),
                    inventory::version.eq(1_i64),
                    inventory::updated_at.eq(now),
                ))
                .returning(InventoryRow::as_returning())
                .get_result(c)
                .await?;
            if let Some(movement) = movement {
                diesel::insert_into(inventory_movements::table)
                    .values(movement)
                    .execute(c)
                    .await?;
            }
            Ok((row, stock))
        })
        .await
    })
}

pub async fn find(conn: &mut DbConn, sku: &str) -> QueryResult<Option<(ProductRow, InventoryRow)>> {
    with_conn!(conn, |c| {
        products::table
            .inner_join(inventory::table)
            .filter(products::sku.eq(sku))
            .select((ProductRow::as_select(), InventoryRow::as_select()))
            .first(c)
            .await
            .optional()
    })
}

/// Products ordered by sku, after `after`; inactive ones only when asked.
pub async fn list(
    conn: &mut DbConn,
    after: Option<&str>,
    limit: i64,
    include_inactive: bool,
) -> QueryResult<Vec<ProductRow>> {
    with_conn!(conn, |c| {
        let mut query = products::table
            .select(ProductRow::as_select())
            .order(products::sku.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(products::sku.gt(after));
        }
        if !include_inactive {
            query = query.filter(products::active.eq(true));
        }
        query.load(c).await
    })
}

pub async fn update(
    conn: &mut DbConn,
    sku: &str,
    changes: &ProductChanges,
) -> QueryResult<Option<ProductRow>> {
    with_conn!(conn, |c| {
        diesel::update(products::table.find(sku))
            .set(changes)
            .returning(ProductRow::as_returning())
            .get_result(c)
            .await
            .optional()
    })
}
