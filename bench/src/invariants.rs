//! An audit of the engine's money and stock invariants over the whole
//! database, run by the load benches after every run (and usable against
//! any orderflow database, since it only reads).
//!
//! What is checked, each under the name a violation is reported with:
//! - `no_oversell`: no SKU has negative stock or more reserved than on hand;
//! - `stock_conservation`: each SKU's counters equal the sums of its ledger
//!   (`inventory_movements`), its reserved count equals its active
//!   reservations, and each order line took from the ledger exactly what its
//!   stock state says (all of it when committed, nothing before);
//! - `one_capture`: an order with money captured has exactly one successful
//!   capture for that amount, one without has none, and nothing is captured
//!   beyond the authorization;
//! - `refunds_within_captures`: refunded ≤ captured, and the successful
//!   refunds add up to what the order says was refunded;
//! - `no_reservation_for_finished_order`: stock is held only for orders still
//!   in their saga;
//! - `acknowledged_order_present`: every order a client was told about
//!   (a 2xx answer, or an error naming it) exists.
//!
//! Orders whose saga is still running are counted (`unsettled`) and left out
//! of the per-order checks. The audit reads the whole database with separate
//! queries: run it when no traffic is changing it (the bench waits for its
//! sagas first), on a database that holds the bench's own data.

use std::collections::{HashMap, HashSet};

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use orderflow::db::schema::{
    inventory, inventory_movements, order_items, orders, payments, reservations, sagas,
};
use orderflow::db::{Database, DbConn, DbError};
use orderflow::domain::order::{OrderStatus, StockState};
use orderflow::with_conn;

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: &'static str,
    /// The SKU or order concerned.
    pub subject: String,
    pub detail: String,
}

/// What was checked and what broke.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Audit {
    pub skus: usize,
    pub orders: usize,
    pub acknowledged: usize,
    /// Orders whose saga has not finished: their money and stock checks are
    /// skipped (a running saga is between two consistent states).
    pub unsettled: usize,
    /// Orders per status.
    pub statuses: std::collections::BTreeMap<String, usize>,
    pub violations: Vec<Violation>,
}

impl Audit {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn violation(&mut self, invariant: &'static str, subject: &str, detail: String) {
        self.violations.push(Violation {
            invariant,
            subject: subject.to_owned(),
            detail,
        });
    }
}

#[derive(Debug, Queryable)]
struct OrderFacts {
    id: String,
    status: String,
    stock_state: String,
    total: i64,
    authorized: i64,
    captured: i64,
    refunded: i64,
}

/// `SUM(column)` as a BIGINT on both backends (diesel types a sum of
/// BIGINT as NUMERIC).
fn sum_of(column: &'static str) -> diesel::expression::SqlLiteral<Nullable<BigInt>> {
    sql::<Nullable<BigInt>>(&format!("CAST(SUM({column}) AS BIGINT)"))
}

/// Sagas not yet finished: the audit is meaningful once this is 0.
pub async fn running_sagas(db: &Database) -> Result<i64, DbError> {
    let mut conn = db.conn().await?;
    Ok(with_conn!(&mut conn, |c| {
        sagas::table
            .filter(sagas::finished_at.is_null())
            .count()
            .get_result::<i64>(c)
            .await
    })?)
}

/// Checks every invariant; `acknowledged` are the ids of orders clients
/// were told exist.
pub async fn check(db: &Database, acknowledged: &[String]) -> Result<Audit, DbError> {
    let mut conn = db.conn().await?;
    let mut audit = Audit {
        acknowledged: acknowledged.len(),
        ..Audit::default()
    };
    check_stock(&mut conn, &mut audit).await?;
    let all = load_orders(&mut conn).await?;
    audit.orders = all.len();
    for order in &all {
        *audit.statuses.entry(order.status.clone()).or_default() += 1;
    }
    let running: HashSet<String> = with_conn!(&mut conn, |c| {
        sagas::table
            .filter(sagas::finished_at.is_null())
            .select(sagas::order_id)
            .load::<String>(c)
            .await
    })?
    .into_iter()
    .collect();
    audit.unsettled = running.len();
    let known: HashSet<&str> = all.iter().map(|o| o.id.as_str()).collect();
    let settled: Vec<&OrderFacts> = all.iter().filter(|o| !running.contains(&o.id)).collect();
    check_order_lines(&mut conn, &settled, &running, &mut audit).await?;
    check_money(&mut conn, &settled, &mut audit).await?;
    check_reservations(&mut conn, &all, &mut audit).await?;
    for id in acknowledged {
        if !known.contains(id.as_str()) {
            audit.violation(
                "acknowledged_order_present",
                id,
                "a client was told about this order; it is not in the database".to_owned(),
            );
        }
    }
    Ok(audit)
}

async fn check_stock(conn: &mut DbConn, audit: &mut Audit) -> Result<(), DbError> {
    let (levels, ledger, held) = with_conn!(conn, |c| {
        let levels: Vec<(String, i64, i64)> = inventory::table
            .select((inventory::sku, inventory::on_hand, inventory::reserved))
            .load(c)
            .await?;
        let ledger: Vec<(String, Option<i64>, Option<i64>)> = inventory_movements::table
            .group_by(inventory_movements::sku)
            .select((
                inventory_movements::sku,
                sum_of("on_hand_delta"),
                sum_of("reserved_delta"),
            ))
            .load(c)
            .await?;
        let held: Vec<(String, Option<i64>)> = reservations::table
            .group_by(reservations::sku)
            .select((reservations::sku, sum_of("quantity")))
            .load(c)
            .await?;
        Ok::<_, diesel::result::Error>((levels, ledger, held))
    })?;
    let ledger: HashMap<String, (i64, i64)> = ledger
        .into_iter()
        .map(|(sku, on_hand, reserved)| (sku, (on_hand.unwrap_or(0), reserved.unwrap_or(0))))
        .collect();
    let held: HashMap<String, i64> = held
        .into_iter()
        .map(|(sku, quantity)| (sku, quantity.unwrap_or(0)))
        .collect();
    audit.skus = levels.len();
    for (sku, on_hand, reserved) in levels {
        let ledger = ledger.get(&sku).copied().unwrap_or((0, 0));
        let active = held.get(&sku).copied().unwrap_or(0);
        audit_sku(audit, &sku, (on_hand, reserved), ledger, active);
    }
    Ok(())
}

/// One SKU's counters against its ledger sums and active reservations.
/// (The schema's CHECK constraints refuse negative or over-reserved stock
/// too; the audit does not rely on them.)
fn audit_sku(
    audit: &mut Audit,
    sku: &str,
    (on_hand, reserved): (i64, i64),
    (ledger_on_hand, ledger_reserved): (i64, i64),
    active: i64,
) {
    {
        if on_hand < 0 || reserved < 0 || reserved > on_hand {
            audit.violation(
                "no_oversell",
                sku,
                format!("on_hand {on_hand}, reserved {reserved}"),
            );
        }
        if (ledger_on_hand, ledger_reserved) != (on_hand, reserved) {
            audit.violation(
                "stock_conservation",
                sku,
                format!(
                    "counters on_hand {on_hand}, reserved {reserved}; ledger sums {ledger_on_hand}, {ledger_reserved}"
                ),
            );
        }
        if active != reserved {
            audit.violation(
                "stock_conservation",
                sku,
                format!("reserved {reserved}, active reservations hold {active}"),
            );
        }
    }
}

async fn load_orders(conn: &mut DbConn) -> Result<Vec<OrderFacts>, DbError> {
    Ok(with_conn!(conn, |c| {
        orders::table
            .select((
                orders::id,
                orders::status,
                orders::stock_state,
                orders::total,
                orders::authorized,
                orders::captured,
                orders::refunded,
            ))
            .load::<OrderFacts>(c)
            .await
    })?)
}

/// Each line's stock taken (commit entries of the ledger) matches the
/// order's stock state.
async fn check_order_lines(
    conn: &mut DbConn,
    orders: &[&OrderFacts],
    running: &HashSet<String>,
    audit: &mut Audit,
) -> Result<(), DbError> {
    let (lines, taken) = with_conn!(conn, |c| {
        let lines: Vec<(String, String, i64, i64)> = order_items::table
            .select((
                order_items::order_id,
                order_items::sku,
                order_items::quantity,
                order_items::restocked,
            ))
            .load(c)
            .await?;
        let taken: Vec<(Option<String>, String, Option<i64>)> = inventory_movements::table
            .filter(inventory_movements::kind.eq("commit"))
            .group_by((inventory_movements::order_id, inventory_movements::sku))
            .select((
                inventory_movements::order_id,
                inventory_movements::sku,
                sum_of("on_hand_delta"),
            ))
            .load(c)
            .await?;
        Ok::<_, diesel::result::Error>((lines, taken))
    })?;
    let taken: HashMap<(String, String), i64> = taken
        .into_iter()
        .filter_map(|(order, sku, delta)| Some(((order?, sku), -delta.unwrap_or(0))))
        .collect();
    let states: HashMap<&str, &str> = orders
        .iter()
        .map(|o| (o.id.as_str(), o.stock_state.as_str()))
        .collect();
    for (order_id, sku, quantity, restocked) in lines {
        if running.contains(&order_id) {
            continue;
        }
        let sold = taken
            .get(&(order_id.clone(), sku.clone()))
            .copied()
            .unwrap_or(0);
        let state = states
            .get(order_id.as_str())
            .and_then(|s| StockState::parse(s));
        let consistent = match state {
            Some(StockState::Committed) => sold == quantity,
            Some(StockState::None | StockState::Reserved) => sold == 0,
            Some(StockState::Released) => sold == 0 || sold == quantity,
            None => false,
        };
        if !consistent || restocked > sold {
            audit.violation(
                "stock_conservation",
                &order_id,
                format!(
                    "line {sku}: {quantity} ordered, {sold} taken from stock, {restocked} restocked, stock state {}",
                    state.map_or("unknown", |s| s.as_str())
                ),
            );
        }
    }
    Ok(())
}

/// One capture per charged order; refunds within captures.
async fn check_money(
    conn: &mut DbConn,
    orders: &[&OrderFacts],
    audit: &mut Audit,
) -> Result<(), DbError> {
    let rows: Vec<(String, String, i64)> = with_conn!(conn, |c| {
        payments::table
            .filter(payments::status.eq("succeeded"))
            .filter(payments::operation.eq_any(["capture", "refund"]))
            .select((payments::order_id, payments::operation, payments::amount))
            .load(c)
            .await
    })?;
    let mut captures: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut refunds: HashMap<&str, i64> = HashMap::new();
    for (order_id, operation, amount) in &rows {
        if operation == "capture" {
            captures.entry(order_id.as_str()).or_default().push(*amount);
        } else {
            *refunds.entry(order_id.as_str()).or_default() += amount;
        }
    }
    for &order in orders {
        let charged = captures.get(order.id.as_str()).map_or(&[][..], |c| &c[..]);
        let status = OrderStatus::parse(&order.status);
        let must_be_paid = matches!(
            status,
            Some(OrderStatus::Paid | OrderStatus::Shipped | OrderStatus::Delivered)
        );
        let consistent = if order.captured > 0 {
            charged == [order.captured]
        } else {
            charged.is_empty()
        };
        if !consistent
            || order.captured > order.authorized
            || (must_be_paid && order.captured != order.total)
        {
            audit.violation(
                "one_capture",
                &order.id,
                format!(
                    "{}: total {}, authorized {}, captured {}; successful captures {charged:?}",
                    order.status, order.total, order.authorized, order.captured
                ),
            );
        }
        let refunded = refunds.get(order.id.as_str()).copied().unwrap_or(0);
        if order.refunded > order.captured || refunded != order.refunded {
            audit.violation(
                "refunds_within_captures",
                &order.id,
                format!(
                    "captured {}, refunded {} by the order, {refunded} by successful refunds",
                    order.captured, order.refunded
                ),
            );
        }
    }
    Ok(())
}

/// Reservations belong to orders still pending (in their saga).
async fn check_reservations(
    conn: &mut DbConn,
    orders: &[OrderFacts],
    audit: &mut Audit,
) -> Result<(), DbError> {
    let held: Vec<(String, String, i64)> = with_conn!(conn, |c| {
        reservations::table
            .select((
                reservations::order_id,
                reservations::sku,
                reservations::quantity,
            ))
            .load(c)
            .await
    })?;
    let statuses: HashMap<&str, &str> = orders
        .iter()
        .map(|o| (o.id.as_str(), o.status.as_str()))
        .collect();
    for (order_id, sku, quantity) in held {
        match statuses.get(order_id.as_str()) {
            Some(&"pending") => {}
            status => audit.violation(
                "no_reservation_for_finished_order",
                &order_id,
                format!(
                    "{quantity} of {sku} still reserved for an order that is {}",
                    status.unwrap_or(&"missing")
                ),
            ),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broken(on_hand: i64, reserved: i64, ledger: (i64, i64), active: i64) -> Vec<&'static str> {
        let mut audit = Audit::default();
        audit_sku(&mut audit, "S", (on_hand, reserved), ledger, active);
        audit.violations.iter().map(|v| v.invariant).collect()
    }

    #[test]
    fn a_sku_is_audited_against_its_ledger_and_reservations() {
        assert!(broken(5, 2, (5, 2), 2).is_empty());
        assert_eq!(broken(-1, 0, (-1, 0), 0), ["no_oversell"]);
        assert_eq!(broken(1, 2, (1, 2), 2), ["no_oversell"]);
        assert_eq!(broken(4, 2, (5, 2), 2), ["stock_conservation"]);
        assert_eq!(broken(5, 2, (5, 2), 1), ["stock_conservation"]);
    }
}
