//! Carts: one serial actor per cart holds it in memory and writes every
//! change through the write pipeline before answering (guarded by the cart's
//! version, so a change from another process is noticed, not overwritten).
//! Prices and names are taken from the catalog when a line is added; the
//! order snapshots those lines at checkout. A cart is checked out at most
//! once: the cart row and the order are written in one transaction, and the
//! order's `cart_id` is unique (invariant I7).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::views::ItemView;
use super::{LineInput, Orders, OrdersError, PaymentInput, PlaceOrder, PricedLine};
use crate::actors::serial::SerialPool;
use crate::catalog::Catalog;
use crate::config::ActorSettings;
use crate::db::carts::{self as carts_db, CartItemRow, CartRow, CartWrite, LineWrite};
use crate::db::idempotency::Binding;
use crate::db::pipeline::{Admit, Pipeline, WriteError, WriteSet};
use crate::db::{Database, DbError};
use crate::domain::ids::{CartId, OrderId, UserId};
use crate::domain::inventory::{Sku, MAX_LINE_QUANTITY};
use crate::domain::order::{CartStatus, MAX_LINES};
use crate::domain::product::Currency;
use crate::domain::FieldError;
use crate::inventory::Inventory;

const KIND_CART: &str = "cart";
const PRUNE_INTERVAL: Duration = Duration::from_secs(5);

/// A cart as its actor holds it.
#[derive(Debug, Clone)]
pub struct LoadedCart {
    row: CartRow,
    items: Vec<CartItemRow>,
}

impl LoadedCart {
    fn owned_by(&self, user: UserId) -> bool {
        UserId::parse(&self.row.user_id) == Some(user)
    }

    /// A checkout sets the status and the order id in one write: a cart
    /// that names an order is checked out.
    fn status(&self) -> CartStatus {
        if self.row.order_id.is_some() {
            CartStatus::CheckedOut
        } else {
            CartStatus::Open
        }
    }
}

/// The actor's state: `None` until loaded.
pub type CartState = Option<LoadedCart>;

/// A cart's status as the API shows it.
fn cart_status() -> utoipa::openapi::schema::Schema {
    super::views::string_enum(["open", "checked_out"])
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CartView {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(schema_with = cart_status)]
    pub status: CartStatus,
    pub currency: String,
    pub items: Vec<ItemView>,
    pub subtotal: i64,
    /// The order the cart was checked out as, once it is.
    #[schema(format = Uuid)]
    pub order_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&LoadedCart> for CartView {
    fn from(cart: &LoadedCart) -> Self {
        let items: Vec<ItemView> = cart
            .items
            .iter()
            .map(|i| ItemView {
                sku: i.sku.clone(),
                name: i.name.clone(),
                quantity: i.quantity,
                unit_price: i.unit_price,
                line_total: i.unit_price.saturating_mul(i.quantity),
            })
            .collect();
        CartView {
            id: cart.row.id.clone(),
            status: cart.status(),
            currency: cart.row.currency.clone(),
            subtotal: items
                .iter()
                .fold(0i64, |sum, i| sum.saturating_add(i.line_total)),
            items,
            order_id: cart.row.order_id.clone(),
            created_at: cart.row.created_at.and_utc(),
            updated_at: cart.row.updated_at.and_utc(),
        }
    }
}

/// A change to one line.
#[derive(Debug, Clone)]
pub enum LineChange {
    /// Add to the line (creating it).
    Add(Sku, i64),
    /// Set the quantity; 0 removes the line.
    Set(Sku, i64),
    Remove(Sku),
}

impl LineChange {
    fn sku(&self) -> &Sku {
        match self {
            LineChange::Add(sku, _) | LineChange::Set(sku, _) | LineChange::Remove(sku) => sku,
        }
    }
}

#[derive(Clone)]
pub struct Carts {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    pipeline: Pipeline,
    catalog: Catalog,
    orders: Orders,
    actors: SerialPool<CartState>,
}

impl Carts {
    pub fn start(
        db: Database,
        pipeline: Pipeline,
        catalog: Catalog,
        orders: Orders,
        inventory: &Inventory,
        actors: &ActorSettings,
    ) -> Carts {
        let carts = Carts {
            inner: Arc::new(Inner {
                db,
                pipeline,
                catalog,
                orders,
                actors: SerialPool::new(
                    KIND_CART,
                    inventory.arbiter_pool(),
                    actors.mailbox_capacity,
                    Duration::from_secs(actors.idle_timeout_s),
                ),
            }),
        };
        carts.spawn_pruner();
        carts
    }

    /// Forgets stopped cart actors now and then, so that a shop with many
    /// carts keeps only the live ones (and `actors_live` stays current).
    fn spawn_pruner(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PRUNE_INTERVAL);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                inner.actors.prune();
            }
        });
    }

    pub async fn create(
        &self,
        user: UserId,
        currency: Option<Currency>,
    ) -> Result<CartView, OrdersError> {
        let now = Utc::now().naive_utc();
        let row = CartRow {
            id: CartId::generate().to_string(),
            user_id: user.to_string(),
            status: "open".to_owned(),
            currency: currency
                .map(|c| c.as_str().to_owned())
                .unwrap_or_else(|| self.inner.orders.default_currency().to_owned()),
            order_id: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        self.inner
            .pipeline
            .write(WriteSet::cart(CartWrite::Create(row.clone())), Admit::New)
            .await
            .map_err(write_error)?;
        Ok(CartView::from(&LoadedCart {
            row,
            items: Vec::new(),
        }))
    }

    /// The cart, if `user` owns it (or `admin`).
    pub async fn get(
        &self,
        user: UserId,
        admin: bool,
        cart_id: &CartId,
    ) -> Result<CartView, OrdersError> {
        self.run(cart_id, move |this, state, id| async move {
            match this.loaded(state, &id).await {
                Ok(cart) if admin || cart.owned_by(user) => {
                    let view = CartView::from(&cart);
                    (Some(cart), Ok(view))
                }
                Ok(cart) => (Some(cart), Err(OrdersError::NotFound)),
                Err(e) => (None, Err(e)),
            }
        })
        .await
    }

    pub async fn change(
        &self,
        user: UserId,
        cart_id: &CartId,
        change: LineChange,
    ) -> Result<CartView, OrdersError> {
        // The product as it is now: its price and name go into the line.
        let product = match &change {
            LineChange::Remove(_) => None,
            _ => match self.inner.catalog.get(change.sku()).await {
                Ok(Some(p)) if p.active => Some(p),
                Ok(_) => {
                    return Err(OrdersError::Validation(vec![FieldError::new(
                        "sku",
                        format!("{} is not a product on sale", change.sku()),
                    )]))
                }
                Err(e) => return Err(OrdersError::Unavailable(e.to_string())),
            },
        };
        self.run(cart_id, move |this, state, id| {
            let (change, product) = (change.clone(), product.clone());
            async move {
                let cart = match this.loaded(state, &id).await {
                    Ok(cart) => cart,
                    Err(e) => return (None, Err(e)),
                };
                let result = this.apply(&cart, user, &change, product.as_ref()).await;
                match result {
                    Ok(next) => {
                        let view = CartView::from(&next);
                        (Some(next), Ok(view))
                    }
                    // Another process changed the cart: reload next time.
                    Err(OrdersError::Conflict(m)) => (None, Err(OrdersError::Conflict(m))),
                    Err(e) => (Some(cart), Err(e)),
                }
            }
        })
        .await
    }

    async fn apply(
        &self,
        cart: &LoadedCart,
        user: UserId,
        change: &LineChange,
        product: Option<&crate::catalog::Product>,
    ) -> Result<LoadedCart, OrdersError> {
        check_open(cart, user)?;
        let sku = change.sku().as_str();
        let existing = cart.items.iter().find(|i| i.sku == sku);
        let quantity = match change {
            LineChange::Add(_, q) => existing.map_or(0, |i| i.quantity) + q,
            LineChange::Set(_, q) => *q,
            LineChange::Remove(_) => 0,
        };
        if quantity > MAX_LINE_QUANTITY {
            return Err(OrdersError::Validation(vec![FieldError::new(
                "quantity",
                format!("a line holds at most {MAX_LINE_QUANTITY} units"),
            )]));
        }
        let write = if quantity == 0 {
            if existing.is_none() {
                return Err(OrdersError::NotFound);
            }
            LineWrite::Delete {
                sku: sku.to_owned(),
            }
        } else {
            let product = product.ok_or(OrdersError::NotFound)?;
            if product.currency != cart.row.currency {
                return Err(OrdersError::Validation(vec![FieldError::new(
                    "sku",
                    format!(
                        "{sku} is priced in {}, the cart in {}",
                        product.currency, cart.row.currency
                    ),
                )]));
            }
            if existing.is_none() && cart.items.len() >= MAX_LINES {
                return Err(OrdersError::Validation(vec![FieldError::new(
                    "sku",
                    format!("a cart holds at most {MAX_LINES} lines"),
                )]));
            }
            LineWrite::Put(CartItemRow {
                cart_id: cart.row.id.clone(),
                sku: sku.to_owned(),
                name: product.name.clone(),
                quantity,
                unit_price: product.price,
            })
        };
        let now = Utc::now().naive_utc();
        let line = CartWrite::Line {
            cart_id: cart.row.id.clone(),
            version: cart.row.version,
            change: write.clone(),
        };
        self.inner
            .pipeline
            .write(WriteSet::cart(line), Admit::New)
            .await
            .map_err(write_error)?;
        let mut next = cart.clone();
        next.row.version += 1;
        next.row.updated_at = now;
        next.items.retain(|i| i.sku != sku);
        if let LineWrite::Put(row) = write {
            next.items.push(row);
            next.items.sort_by(|a, b| a.sku.cmp(&b.sku));
        }
        Ok(next)
    }

    /// Turns the cart into an order (not yet paid: the caller runs its
    /// saga). Returns the order id.
    pub async fn checkout(
        &self,
        user: UserId,
        cart_id: &CartId,
        payment: PaymentInput,
        idempotency: Option<Binding>,
    ) -> Result<OrderId, OrdersError> {
        self.run(cart_id, move |this, state, id| {
            let payment = payment.clone();
            let idempotency = idempotency.clone();
            async move {
                let cart = match this.loaded(state, &id).await {
                    Ok(cart) => cart,
                    Err(e) => return (None, Err(e)),
                };
                if let Err(e) = check_open(&cart, user) {
                    return (Some(cart), Err(e));
                }
                let order = PlaceOrder {
                    user_id: user,
                    lines: cart
                        .items
                        .iter()
                        .filter_map(|i| {
                            Some(LineInput {
                                sku: Sku::parse(&i.sku).ok()?,
                                quantity: i.quantity,
                                priced: Some(PricedLine {
                                    name: i.name.clone(),
                                    unit_price: i.unit_price,
                                    currency: cart.row.currency.clone(),
                                }),
                            })
                        })
                        .collect(),
                    payment,
                    cart: Some((cart.row.id.clone(), cart.row.version)),
                    idempotency,
                };
                if let Err(e) = this.check_still_on_sale(&cart).await {
                    return (Some(cart), Err(e));
                }
                match this.inner.orders.place(order).await {
                    Ok(order_id) => {
                        let mut next = cart;
                        next.row.status = "checked_out".to_owned();
                        next.row.order_id = Some(order_id.to_string());
                        next.row.version += 1;
                        (Some(next), Ok(order_id))
                    }
                    // Changed or checked out elsewhere: reload and say which.
                    Err(OrdersError::Conflict(m)) => match this.loaded(None, &id).await {
                        Ok(fresh) => {
                            let result =
                                check_open(&fresh, user).and(Err(OrdersError::Conflict(m)));
                            (Some(fresh), result)
                        }
                        Err(e) => (None, Err(e)),
                    },
                    Err(e) => (Some(cart), Err(e)),
                }
            }
        })
        .await
    }

    /// Makes the cart's actor drop what it holds, so that its next job
    /// reloads the cart: after a change made outside the actor (the
    /// baseline checkout).
    pub async fn forget(&self, cart_id: &CartId) {
        let forgotten = self
            .inner
            .actors
            .run(&cart_id.to_string(), |_state| async { (None, ()) })
            .await;
        if let Err(e) = forgotten {
            tracing::warn!(cart.id = %cart_id, error = %e, "could not reset the cart's actor; it reloads on its next conflict");
        }
    }

    /// Products deactivated since they were added cannot be bought.
    async fn check_still_on_sale(&self, cart: &LoadedCart) -> Result<(), OrdersError> {
        let mut errors = Vec::new();
        for item in &cart.items {
            let Ok(sku) = Sku::parse(&item.sku) else {
                continue;
            };
            match self.inner.catalog.get(&sku).await {
                Ok(Some(p)) if p.active => {}
                Ok(_) => errors.push(FieldError::new(
                    "items",
                    format!("{} is no longer on sale", item.sku),
                )),
                Err(e) => return Err(OrdersError::Unavailable(e.to_string())),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(OrdersError::Validation(errors))
        }
    }

    async fn loaded(&self, state: CartState, id: &str) -> Result<LoadedCart, OrdersError> {
        if let Some(cart) = state {
            return Ok(cart);
        }
        let mut conn = self.inner.db.conn().await?;
        match carts_db::load(&mut conn, id).await? {
            Some((row, items)) => Ok(LoadedCart { row, items }),
            None => Err(OrdersError::NotFound),
        }
    }

    /// Runs `job` in the cart's actor with its state.
    async fn run<R, F, Fut>(&self, cart_id: &CartId, job: F) -> Result<R, OrdersError>
    where
        R: Send + 'static,
        F: Fn(Carts, CartState, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = (CartState, Result<R, OrdersError>)> + Send + 'static,
    {
        let this = self.clone();
        let id = cart_id.to_string();
        self.inner
            .actors
            .run(&id.clone(), move |state| {
                job(this.clone(), state, id.clone())
            })
            .await?
    }
}

/// A cart write the pipeline did not make.
fn write_error(e: WriteError) -> OrdersError {
    match e {
        WriteError::Refused(_) => {
            OrdersError::Conflict("the cart changed concurrently; retry".to_owned())
        }
        WriteError::Overloaded => OrdersError::Overloaded,
        WriteError::Unavailable(cause) => OrdersError::Unavailable(cause),
        WriteError::Failed(cause) => OrdersError::Db(DbError::Write(cause)),
    }
}

/// The cart is `user`'s and still open.
fn check_open(cart: &LoadedCart, user: UserId) -> Result<(), OrdersError> {
    if !cart.owned_by(user) {
        return Err(OrdersError::NotFound);
    }
    if let Some(order_id) = &cart.row.order_id {
        return Err(OrdersError::CartCheckedOut {
            order_id: order_id.clone(),
        });
    }
    Ok(())
}
