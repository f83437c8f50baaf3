//! Which orders a caller may name: a path's order id, and whether the
//! caller may see that order (its owner or an admin; others get 404, as if
//! it did not exist).

use super::errors::ApiError;
use super::identity::AuthUser;
use crate::domain::ids::OrderId;
use crate::orders::Orders;

/// An order id that is not a UUID names nothing: 404.
pub fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    OrderId::parse(raw).ok_or(ApiError::NotFound)
}

/// The order if `user` may see it: its owner or an admin. Others get 404.
pub async fn visible(orders: &Orders, user: &AuthUser, id: &OrderId) -> Result<(), ApiError> {
    let owner = orders.owner_of(id).await?;
    if user.is_admin() || owner == user.id {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}
