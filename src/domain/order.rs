//! Orders and their payment: the statuses an order, its payment, its stock
//! and its saga can have, the capture mode, and the rules for lines and
//! totals. The checkout saga's state machine over them is
//! [`super::saga`] (re-exported here, where callers look for it).

use std::fmt;

use serde::Serialize;

use super::FieldError;

pub use super::saga::{
    next_step, Applied, CommandError, DomainEvent, FoundPayment, OpenRefund, OrderProgress,
    Outcome, Step,
};
/// When the saga captures a payment (`payments.capture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// The saga captures right after authorizing.
    Automatic,
    /// The order stops at `authorized` until an admin captures it.
    Manual,
}

impl CaptureMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Automatic => "automatic",
            CaptureMode::Manual => "manual",
        }
    }
}

/// Lines in one order or cart.
pub const MAX_LINES: usize = 100;

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Option<$name> {
                match raw { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// The order's status as clients see it (api.md, Orders).
    OrderStatus {
        Pending => "pending",
        Authorized => "authorized",
        Paid => "paid",
        Shipped => "shipped",
        Delivered => "delivered",
        Cancelled => "cancelled",
        Rejected => "rejected",
        PaymentFailed => "payment_failed",
    }
);

string_enum!(
    /// A cart's status: open until it is checked out, once.
    CartStatus {
        Open => "open",
        CheckedOut => "checked_out",
    }
);

impl OrderStatus {
    /// Statuses nothing can move an order out of.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderStatus::Cancelled | OrderStatus::Rejected | OrderStatus::PaymentFailed
        )
    }
}

string_enum!(
    PaymentStatus {
        None => "none",
        Authorized => "authorized",
        Captured => "captured",
        Voided => "voided",
        PartiallyRefunded => "partially_refunded",
        Refunded => "refunded",
        Failed => "failed",
    }
);

string_enum!(
    /// Where the order's stock stands. `released`: given back, reservations
    /// released or sold stock restocked.
    StockState {
        None => "none",
        Reserved => "reserved",
        Committed => "committed",
        Released => "released",
    }
);

string_enum!(
    /// Saga steps and compensations, named as api.md names them.
    StepName {
        ReserveInventory => "reserve_inventory",
        AuthorizePayment => "authorize_payment",
        CapturePayment => "capture_payment",
        CommitInventory => "commit_inventory",
        ConfirmOrder => "confirm_order",
        ReleaseInventory => "release_inventory",
        VoidPayment => "void_payment",
        RefundPayment => "refund_payment",
        RestockInventory => "restock_inventory",
        CancelOrder => "cancel_order",
    }
);

impl StepName {
    pub fn is_compensation(self) -> bool {
        matches!(
            self,
            StepName::ReleaseInventory
                | StepName::VoidPayment
                | StepName::RefundPayment
                | StepName::RestockInventory
                | StepName::CancelOrder
        )
    }
}

string_enum!(
    SagaState {
        Running => "running",
        Completed => "completed",
        Compensated => "compensated",
        Failed => "failed",
    }
);

string_enum!(
    RefundStatus {
        Pending => "pending",
        Succeeded => "succeeded",
        Failed => "failed",
    }
);

/// One order line as asked for: a SKU and a quantity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRequest {
    pub sku: super::inventory::Sku,
    pub quantity: i64,
}

/// Checks a quantity of one line: 1..=10 000.
pub fn parse_quantity(quantity: i64, field: &'static str) -> Result<i64, FieldError> {
    use super::inventory::MAX_LINE_QUANTITY;
    if (1..=MAX_LINE_QUANTITY).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(FieldError::new(
            field,
            format!("must be between 1 and {MAX_LINE_QUANTITY}"),
        ))
    }
}

/// `unit_price * quantity`, summed over lines, bounded by the maximum amount.
pub fn order_total(lines: &[(i64, i64)]) -> Result<i64, FieldError> {
    let mut total: i64 = 0;
    for &(unit_price, quantity) in lines {
        total = unit_price
            .checked_mul(quantity)
            .and_then(|line| total.checked_add(line))
            .filter(|t| *t <= super::product::MAX_AMOUNT)
            .ok_or_else(|| {
                FieldError::new(
                    "items",
                    format!(
                        "the order total must not exceed {}",
                        super::product::MAX_AMOUNT
                    ),
                )
            })?;
    }
    Ok(total)
}
