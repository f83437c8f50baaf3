//! Pure domain types: values that can only be built valid (`parse() -> Result`)
//! and the rules that go with them. Nothing here touches I/O.

pub mod ids;
pub mod inventory;
pub mod network;
pub mod order;
pub mod product;
pub mod saga;
pub mod user;

/// A field-level validation failure: which input field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        FieldError {
            field,
            message: message.into(),
        }
    }
}
