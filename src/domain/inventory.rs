//! The stock of one SKU as a pure state machine.
//!
//! Invariants, checked by every operation and by the property tests below:
//! - I1: `reserved >= 0` and `available = on_hand - reserved >= 0`.
//! - I2: stock is conserved: initial + restocks + adjustments = on_hand + sold,
//!   and every change is described by a [`Movement`] for the ledger.
//!
//! An operation either succeeds and returns the [`StockChange`] that a
//! persistence layer must write (counter deltas, reservation rows, movements),
//! or fails and leaves the state untouched.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::FieldError;

/// Per-line and per-operation quantity bound (api.md: 1..=10 000 per line).
pub const MAX_LINE_QUANTITY: i64 = 10_000;
/// Bound on one restock or adjustment, and on stock levels, so that no sum
/// of them can overflow.
pub const MAX_STOCK_CHANGE: i64 = 1_000_000_000;

/// A product key: `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Sku, FieldError> {
        let bytes = raw.as_bytes();
        let valid = !bytes.is_empty()
            && bytes.len() <= 64
            && bytes[0].is_ascii_alphanumeric()
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(Sku(raw.to_owned()))
        } else {
            Err(FieldError::new(
                "sku",
                "must be 1-64 characters of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StockLevels {
    pub on_hand: i64,
    pub reserved: i64,
}

impl StockLevels {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Reservation {
    pub id: Uuid,
    pub order_id: Uuid,
    pub quantity: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// Stock the SKU was created with.
    Initial,
    Restock,
    Adjust,
    Reserve,
    Release,
    /// A reservation that ran out of time.
    Expire,
    /// Reserved stock that became sold.
    Commit,
}

impl MovementKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MovementKind::Initial => "initial",
            MovementKind::Restock => "restock",
            MovementKind::Adjust => "adjust",
            MovementKind::Reserve => "reserve",
            MovementKind::Release => "release",
            MovementKind::Expire => "expire",
            MovementKind::Commit => "commit",
        }
    }
}

/// One ledger entry: how `on_hand` and `reserved` moved, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    pub kind: MovementKind,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub order_id: Option<Uuid>,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockOp {
    Reserve {
        reservation_id: Uuid,
        order_id: Uuid,
        quantity: i64,
        expires_at: DateTime<Utc>,
    },
    Commit {
        order_id: Uuid,
    },
    Release {
        order_id: Uuid,
    },
    Restock {
        quantity: i64,
        note: Option<String>,
    },
    Adjust {
        delta: i64,
        reason: String,
    },
    Expire {
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockError {
    OutOfStock {
        requested: i64,
        available: i64,
    },
    ReservationNotFound {
        order_id: Uuid,
    },
    /// An adjustment would take on_hand below what is reserved (or below 0).
    AdjustmentConflict {
        on_hand: i64,
        reserved: i64,
        delta: i64,
    },
    InvalidQuantity {
        field: &'static str,
        message: String,
    },
}

/// What an operation did, for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockOutcome {
    Reserved(Reservation),
    /// The order already held this reservation: retried requests are safe.
    AlreadyReserved(Reservation),
    Committed(Reservation),
    /// `None` when there was nothing to release (release is idempotent).
    Released(Option<Reservation>),
    Restocked,
    Adjusted,
    Expired(Vec<Reservation>),
}

/// What must be persisted for one successful operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockChange {
    pub outcome: StockOutcome,
    pub on_hand_delta: i64,
    pub reserved_delta: i64,
    pub inserted: Option<Reservation>,
    pub removed: Vec<Reservation>,
    pub movements: Vec<Movement>,
}

impl StockChange {
    fn new(outcome: StockOutcome) -> StockChange {
        StockChange {
            outcome,
            on_hand_delta: 0,
            reserved_delta: 0,
            inserted: None,
            removed: Vec::new(),
            movements: Vec::new(),
        }
    }

    /// True when nothing needs to be written.
    pub fn is_noop(&self) -> bool {
        self.on_hand_delta == 0
            && self.reserved_delta == 0
            && self.inserted.is_none()
            && self.removed.is_empty()
    }
}

/// The stock of one SKU: levels plus its active reservations, at most one per
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuStock {
    levels: StockLevels,
    reservations: HashMap<Uuid, Reservation>,
}

impl SkuStock {
    /// State as loaded from storage. Refuses states that break I1.
    pub fn new(levels: StockLevels, reservations: Vec<Reservation>) -> Result<SkuStock, String> {
        let held: i64 = reservations.iter().map(|r| r.quantity).sum();
        if levels.reserved < 0 || levels.available() < 0 {
            return Err(format!("stock levels break I1: {levels:?}"));
        }
        if held != levels.reserved {
            return Err(format!(
                "reservations hold {held} but reserved is {}",
                levels.reserved
            ));
        }
        Ok(SkuStock {
            levels,
            reservations: reservations.into_iter().map(|r| (r.order_id, r)).collect(),
        })
    }

    pub fn levels(&self) -> StockLevels {
        self.levels
    }

    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.reservations.values()
    }

    pub fn reservation_for(&self, order_id: Uuid) -> Option<&Reservation> {
        self.reservations.get(&order_id)
    }

    /// The earliest expiry among active reservations.
    pub fn next_expiry(&self) -> Option<DateTime<Utc>> {
        self.reservations.values().map(|r| r.expires_at).min()
    }

    /// Applies `op`: on success the state has changed and the change to
    /// persist is returned; on failure the state is unchanged.
    pub fn apply(&mut self, op: &StockOp) -> Result<StockChange, StockError> {
        match op {
            StockOp::Reserve {
                reservation_id,
                order_id,
                quantity,
                expires_at,
            } => self.reserve(*reservation_id, *order_id, *quantity, *expires_at),
            StockOp::Commit { order_id } => self.commit(*order_id),
            StockOp::Release { order_id } => Ok(self.release(*order_id, MovementKind::Release)),
            StockOp::Restock { quantity, note } => self.restock(*quantity, note.clone()),
            StockOp::Adjust { delta, reason } => self.adjust(*delta, reason),
            StockOp::Expire { now } => Ok(self.expire(*now)),
        }
    }

    fn reserve(
        &mut self,
        reservation_id: Uuid,
        order_id: Uuid,
        quantity: i64,
        expires_at: DateTime<Utc>,
    ) -> Result<StockChange, StockError> {
        check_quantity("quantity", quantity, MAX_LINE_QUANTITY)?;
        if let Some(existing) = self.reservations.get(&order_id) {
            if existing.quantity != quantity {
                return Err(StockError::InvalidQuantity {
                    field: "quantity",
                    message: format!(
                        "the order already holds a reservation of {} on this SKU",
                        existing.quantity
                    ),
                });
            }
            return Ok(StockChange::new(StockOutcome::AlreadyReserved(
                existing.clone(),
            )));
        }
        let available = self.levels.available();
        if quantity > available {
            return Err(StockError::OutOfStock {
                requested: quantity,
                available,
            });
        }
        let reservation = Reservation {
            id: reservation_id,
            order_id,
            quantity,
            expires_at,
        };
        self.levels.reserved += quantity;
        self.reservations.insert(order_id, reservation.clone());
        let mut change = StockChange::new(StockOutcome::Reserved(reservation.clone()));
        change.reserved_delta = quantity;
        change.inserted = Some(reservation);
        change.movements.push(Movement {
            kind: MovementKind::Reserve,
            on_hand_delta: 0,
            reserved_delta: quantity,
            order_id: Some(order_id),
            note: None,
        });
        Ok(change)
    }

    fn commit(&mut self, order_id: Uuid) -> Result<StockChange, StockError> {
        let reservation = self
            .reservations
            .remove(&order_id)
            .ok_or(StockError::ReservationNotFound { order_id })?;
        let q = reservation.quantity;
        self.levels.on_hand -= q;
        self.levels.reserved -= q;
        let mut change = StockChange::new(StockOutcome::Committed(reservation.clone()));
        change.on_hand_delta = -q;
        change.reserved_delta = -q;
        change.removed.push(reservation);
        change.movements.push(Movement {
            kind: MovementKind::Commit,
            on_hand_delta: -q,
            reserved_delta: -q,
            order_id: Some(order_id),
            note: None,
        });
        Ok(change)
    }

    fn release(&mut self, order_id: Uuid, kind: MovementKind) -> StockChange {
        let Some(reservation) = self.reservations.remove(&order_id) else {
            return StockChange::new(StockOutcome::Released(None));
        };
        let q = reservation.quantity;
        self.levels.reserved -= q;
        let mut change = StockChange::new(StockOutcome::Released(Some(reservation.clone())));
        change.reserved_delta = -q;
        change.removed.push(reservation);
        change.movements.push(Movement {
            kind,
            on_hand_delta: 0,
            reserved_delta: -q,
            order_id: Some(order_id),
            note: None,
        });
        change
    }

    fn restock(&mut self, quantity: i64, note: Option<String>) -> Result<StockChange, StockError> {
        check_quantity("quantity", quantity, MAX_STOCK_CHANGE)?;
        let on_hand = self
            .levels
            .on_hand
            .checked_add(quantity)
            .filter(|v| *v <= MAX_STOCK_CHANGE * 10);
        let Some(on_hand) = on_hand else {
            return Err(StockError::InvalidQuantity {
                field: "quantity",
                message: "would take stock beyond the supported maximum".to_owned(),
            });
        };
        self.levels.on_hand = on_hand;
        let mut change = StockChange::new(StockOutcome::Restocked);
        change.on_hand_delta = quantity;
        change.movements.push(Movement {
            kind: MovementKind::Restock,
            on_hand_delta: quantity,
            reserved_delta: 0,
            order_id: None,
            note,
        });
        Ok(change)
    }

    fn adjust(&mut self, delta: i64, reason: &str) -> Result<StockChange, StockError> {
        // Not `delta.abs()`: it overflows for i64::MIN.
        if delta == 0 || delta.unsigned_abs() > MAX_STOCK_CHANGE.unsigned_abs() {
            return Err(StockError::InvalidQuantity {
                field: "delta",
                message: format!("must be non-zero and within ±{MAX_STOCK_CHANGE}"),
            });
        }
        let on_hand = self.levels.on_hand + delta;
        if on_hand > MAX_STOCK_CHANGE * 10 {
            return Err(StockError::InvalidQuantity {
                field: "delta",
                message: "would take stock beyond the supported maximum".to_owned(),
            });
        }
        if on_hand < self.levels.reserved {
            return Err(StockError::AdjustmentConflict {
                on_hand: self.levels.on_hand,
                reserved: self.levels.reserved,
                delta,
            });
        }
        self.levels.on_hand = on_hand;
        let mut change = StockChange::new(StockOutcome::Adjusted);
        change.on_hand_delta = delta;
        change.movements.push(Movement {
            kind: MovementKind::Adjust,
            on_hand_delta: delta,
            reserved_delta: 0,
            order_id: None,
            note: Some(reason.to_owned()),
        });
        Ok(change)
    }

    fn expire(&mut self, now: DateTime<Utc>) -> StockChange {
        let mut due: Vec<Uuid> = self
            .reservations
            .values()
            .filter(|r| r.expires_at <= now)
            .map(|r| r.order_id)
            .collect();
        due.sort();
        let mut total = StockChange::new(StockOutcome::Expired(Vec::new()));
        let mut expired = Vec::new();
        for order_id in due {
            let change = self.release(order_id, MovementKind::Expire);
            total.reserved_delta += change.reserved_delta;
            total.removed.extend(change.removed.iter().cloned());
            expired.extend(change.removed);
            total.movements.extend(change.movements);
        }
        total.outcome = StockOutcome::Expired(expired);
        total
    }
}

fn check_quantity(field: &'static str, quantity: i64, max: i64) -> Result<(), StockError> {
    if (1..=max).contains(&quantity) {
        Ok(())
    } else {
        Err(StockError::InvalidQuantity {
            field,
            message: format!("must be between 1 and {max}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn stock(on_hand: i64) -> SkuStock {
        SkuStock::new(
            StockLevels {
                on_hand,
                reserved: 0,
            },
            Vec::new(),
        )
        .unwrap()
    }

    fn reserve(order: u128, quantity: i64, expires_in_s: i64) -> StockOp {
        StockOp::Reserve {
            reservation_id: Uuid::from_u128(order + 1_000_000),
            order_id: Uuid::from_u128(order),
            quantity,
            expires_at: t0() + Duration::seconds(expires_in_s),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn sku_grammar() {
        for ok in ["A", "sku-1", "SKU_2.b", &"a".repeat(64)] {
            assert!(Sku::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", &"a".repeat(65), "ä"] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reserving_more_than_available_is_refused_and_changes_nothing() {
        let mut s = stock(3);
        let before = s.clone();
        assert_eq!(
            s.apply(&reserve(1, 4, 60)),
            Err(StockError::OutOfStock {
                requested: 4,
                available: 3
            })
        );
        assert_eq!(s, before);
    }

    #[test]
    fn reserve_is_idempotent_per_order() {
        let mut s = stock(3);
        s.apply(&reserve(1, 2, 60)).unwrap();
        let again = s.apply(&reserve(1, 2, 60)).unwrap();
        assert!(matches!(again.outcome, StockOutcome::AlreadyReserved(_)));
        assert!(again.is_noop());
        assert_eq!(s.levels().reserved, 2);
    }

    #[test]
    fn commit_turns_reserved_into_sold() {
        let mut s = stock(5);
        s.apply(&reserve(1, 2, 60)).unwrap();
        let change = s
            .apply(&StockOp::Commit {
                order_id: Uuid::from_u128(1),
            })
            .unwrap();
        assert_eq!((change.on_hand_delta, change.reserved_delta), (-2, -2));
        assert_eq!(
            s.levels(),
            StockLevels {
                on_hand: 3,
                reserved: 0
            }
        );
        assert!(matches!(
            s.apply(&StockOp::Commit {
                order_id: Uuid::from_u128(1)
            }),
            Err(StockError::ReservationNotFound { .. })
        ));
    }

    #[test]
    fn release_is_idempotent() {
        let mut s = stock(5);
        s.apply(&reserve(1, 2, 60)).unwrap();
        let first = s
            .apply(&StockOp::Release {
                order_id: Uuid::from_u128(1),
            })
            .unwrap();
        assert_eq!(first.reserved_delta, -2);
        let second = s
            .apply(&StockOp::Release {
                order_id: Uuid::from_u128(1),
            })
            .unwrap();
        assert!(second.is_noop());
        assert_eq!(s.levels().available(), 5);
    }

    #[test]
    fn adjustment_cannot_go_below_reserved() {
        let mut s = stock(5);
        s.apply(&reserve(1, 4, 60)).unwrap();
        assert!(matches!(
            s.apply(&StockOp::Adjust {
                delta: -2,
                reason: "damaged".into()
            }),
            Err(StockError::AdjustmentConflict { .. })
        ));
        s.apply(&StockOp::Adjust {
            delta: -1,
            reason: "damaged".into(),
        })
        .unwrap();
        assert_eq!(
            s.levels(),
            StockLevels {
                on_hand: 4,
                reserved: 4
            }
        );
    }

    #[test]
    fn adjustments_out_of_bounds_are_refused_even_at_the_limits_of_i64() {
        let mut s = stock(5);
        for delta in [
            0,
            i64::MIN,
            i64::MAX,
            MAX_STOCK_CHANGE + 1,
            -MAX_STOCK_CHANGE - 1,
        ] {
            assert!(
                matches!(
                    s.apply(&StockOp::Adjust {
                        delta,
                        reason: "fuzz".into()
                    }),
                    Err(StockError::InvalidQuantity { field: "delta", .. })
                ),
                "delta {delta}"
            );
        }
        assert_eq!(s.levels().on_hand, 5);
    }

    #[test]
    fn expiry_releases_only_what_is_due() {
        let mut s = stock(10);
        s.apply(&reserve(1, 2, 10)).unwrap();
        s.apply(&reserve(2, 3, 100)).unwrap();
        let change = s
            .apply(&StockOp::Expire {
                now: t0() + Duration::seconds(10),
            })
            .unwrap();
        let StockOutcome::Expired(expired) = change.outcome else {
            panic!()
        };
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].order_id, Uuid::from_u128(1));
        assert_eq!(
            s.levels(),
            StockLevels {
                on_hand: 10,
                reserved: 3
            }
        );
        assert_eq!(s.next_expiry(), Some(t0() + Duration::seconds(100)));
    }

    #[test]
    fn loading_an_inconsistent_state_is_refused() {
        assert!(SkuStock::new(
            StockLevels {
                on_hand: 1,
                reserved: 2
            },
            Vec::new()
        )
        .is_err());
        assert!(SkuStock::new(
            StockLevels {
                on_hand: 5,
                reserved: 2
            },
            Vec::new()
        )
        .is_err());
    }

    fn op_strategy() -> impl Strategy<Value = StockOp> {
        prop_oneof![
            (0u128..8, -2i64..12, 0i64..100).prop_map(|(o, q, e)| reserve(o, q, e)),
            (0u128..8).prop_map(|o| StockOp::Commit {
                order_id: Uuid::from_u128(o)
            }),
            (0u128..8).prop_map(|o| StockOp::Release {
                order_id: Uuid::from_u128(o)
            }),
            (-2i64..20).prop_map(|q| StockOp::Restock {
                quantity: q,
                note: None
            }),
            (-15i64..15).prop_map(|d| StockOp::Adjust {
                delta: d,
                reason: "count".into()
            }),
            (0i64..120).prop_map(|s| StockOp::Expire {
                now: t0() + Duration::seconds(s)
            }),
        ]
    }

    proptest! {
        /// I1 and I2 hold after any sequence of operations, failed operations
        /// change nothing, and the changes replayed from zero give the state.
        #[test]
        fn invariants_hold_for_any_sequence(initial in 0i64..30, ops in proptest::collection::vec(op_strategy(), 0..60)) {
            let mut s = stock(initial);
            let (mut inflow, mut sold) = (initial, 0i64);
            let (mut on_hand, mut reserved) = (initial, 0i64);
            for op in &ops {
                let before = s.clone();
                match s.apply(op) {
                    Ok(change) => {
                        on_hand += change.on_hand_delta;
                        reserved += change.reserved_delta;
                        let moved_on_hand: i64 = change.movements.iter().map(|m| m.on_hand_delta).sum();
                        let moved_reserved: i64 = change.movements.iter().map(|m| m.reserved_delta).sum();
                        prop_assert_eq!(moved_on_hand, change.on_hand_delta);
                        prop_assert_eq!(moved_reserved, change.reserved_delta);
                        for m in &change.movements {
                            match m.kind {
                                MovementKind::Restock | MovementKind::Adjust | MovementKind::Initial => inflow += m.on_hand_delta,
                                MovementKind::Commit => sold -= m.on_hand_delta,
                                MovementKind::Reserve | MovementKind::Release | MovementKind::Expire => {
                                    prop_assert_eq!(m.on_hand_delta, 0)
                                }
                            }
                        }
                    }
                    Err(e) => {
                        prop_assert_eq!(&s, &before);
                        // I8: out_of_stock only when the stock really is short.
                        if let StockError::OutOfStock { requested, available } = e {
                            prop_assert_eq!(available, before.levels().available());
                            prop_assert!(requested > available);
                        }
                    }
                }
                let levels = s.levels();
                // I1
                prop_assert!(levels.reserved >= 0);
                prop_assert!(levels.available() >= 0);
                prop_assert_eq!(levels.reserved, s.reservations().map(|r| r.quantity).sum::<i64>());
                // I2
                prop_assert_eq!(inflow, levels.on_hand + sold);
                // Deltas replayed give the state.
                prop_assert_eq!((on_hand, reserved), (levels.on_hand, levels.reserved));
            }
        }
    }
}
