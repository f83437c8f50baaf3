//! The scenarios: what the shop holds before the run, and what each virtual
//! customer does, over and over, until the run ends.
//!
//! - `flash-sale`: one hot SKU with limited stock; every flow is a cart with
//!   one unit of it, checked out. The sale ends when the stock is gone (a
//!   checkout answers `out_of_stock`), or at the run's limit.
//! - `catalog`: `--skus` SKUs; every flow is a cart of 1–5 lines picked
//!   Zipf-distributed, checked out.
//! - `mixed`: each step is one action picked by `--mix` weights: browsing
//!   (product reads), cart edits, checkouts, declined checkouts, customer
//!   cancels and admin refunds of the customer's paid orders.
//! - `carts`: every flow is a new cart with one line, abandoned: what many
//!   touched-then-idle cart actors cost the engine in memory.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde::Serialize;
use serde_json::json;

use crate::api::{Answer, Api};
use crate::zipf::Zipf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    FlashSale,
    Catalog,
    Mixed,
    Carts,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FlashSale => "flash-sale",
            Scenario::Catalog => "catalog",
            Scenario::Mixed => "mixed",
            Scenario::Carts => "carts",
        }
    }
}

/// Weights of the mixed scenario's actions.
#[derive(Debug, Clone, Serialize)]
pub struct Mix {
    pub browse: u32,
    pub cart: u32,
    pub checkout: u32,
    pub decline: u32,
    pub cancel: u32,
    pub refund: u32,
}

impl Mix {
    /// `browse=50,cart=20,checkout=20,decline=4,cancel=3,refund=3`; missing
    /// actions weigh 0.
    pub fn parse(text: &str) -> anyhow::Result<Mix> {
        let mut mix = Mix {
            browse: 0,
            cart: 0,
            checkout: 0,
            decline: 0,
            cancel: 0,
            refund: 0,
        };
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .with_context(|| format!("`{part}`: expected action=weight"))?;
            let weight: u32 = weight
                .trim()
                .parse()
                .with_context(|| format!("`{part}`: the weight must be a whole number"))?;
            let slot = match name.trim() {
                "browse" => &mut mix.browse,
                "cart" => &mut mix.cart,
                "checkout" => &mut mix.checkout,
                "decline" => &mut mix.decline,
                "cancel" => &mut mix.cancel,
                "refund" => &mut mix.refund,
                other => bail!(
                    "unknown action `{other}`: browse, cart, checkout, decline, cancel or refund"
                ),
            };
            *slot = weight;
        }
        if mix.total() == 0 {
            bail!("the mix needs at least one action with a weight above 0");
        }
        Ok(mix)
    }

    fn total(&self) -> u32 {
        self.browse + self.cart + self.checkout + self.decline + self.cancel + self.refund
    }

    fn pick(&self, roll: u32) -> Action {
        let mut left = roll % self.total();
        for (weight, action) in [
            (self.browse, Action::Browse),
            (self.cart, Action::CartEdit),
            (self.checkout, Action::Checkout),
            (self.decline, Action::Decline),
            (self.cancel, Action::Cancel),
            (self.refund, Action::Refund),
        ] {
            if left < weight {
                return action;
            }
            left -= weight;
        }
        unreachable!("the roll is below the total weight")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Browse,
    CartEdit,
    Checkout,
    Decline,
    Cancel,
    Refund,
}

/// What a run does, from the command line.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub scenario: Scenario,
    pub customers: usize,
    pub duration: Option<Duration>,
    /// Checkout attempts after which the run ends.
    pub checkouts: Option<u64>,
    pub skus: usize,
    /// Lines per cart in the catalog scenario: `(min, max)`.
    pub lines: (usize, usize),
    pub stock: i64,
    pub zipf_exponent: f64,
    pub mix: Mix,
    /// Flows (checkouts) started per second, across all customers; none:
    /// as fast as the engine answers.
    pub rate: Option<f64>,
    pub seed: u64,
}

/// The shop as set up for the run.
pub struct Shop {
    pub admin: String,
    pub customers: Vec<String>,
    pub skus: Vec<String>,
    zipf: Zipf,
}

const PRICE: i64 = 1_999;
const PASSWORD: &str = "bench-password-123";

/// Creates the products and registers the customers.
pub async fn set_up(api: &Api, admin: String, plan: &Plan) -> anyhow::Result<Shop> {
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let count = match plan.scenario {
        Scenario::FlashSale => 1,
        _ => plan.skus.max(1),
    };
    let skus: Vec<String> = (0..count).map(|i| format!("b{run}-{i:05}")).collect();
    let admin_ref = &admin;
    stream::iter(skus.iter())
        .map(|sku| async move {
            api.expect(
                "setup",
                Method::POST,
                "/products",
                Some(admin_ref),
                Some(json!({
                    "sku": sku, "name": format!("Bench {sku}"), "price": PRICE,
                    "currency": "USD", "initial_stock": plan.stock,
                })),
            )
            .await
            .map(|_| ())
        })
        .buffer_unordered(16)
        .try_collect::<()>()
        .await
        .context("creating the products")?;
    let customers = stream::iter(0..plan.customers)
        .map(|i| {
            let email = format!("bench-{run}-{i}@example.com");
            async move { api.register(&email, PASSWORD).await }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<String>>()
        .await
        .context("registering the customers")?;
    Ok(Shop {
        admin,
        customers,
        zipf: Zipf::new(skus.len(), plan.zipf_exponent),
        skus,
    })
}

/// Shared by the customers of one run.
pub struct Run {
    pub api: Api,
    pub shop: Shop,
    pub plan: Plan,
    started: Instant,
    stop: AtomicBool,
    sold_out: AtomicBool,
    attempts: AtomicU64,
    carts: AtomicU64,
    pacer: Option<Mutex<Instant>>,
    acknowledged: Mutex<Vec<String>>,
}

/// How a run ended, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub checkout_attempts: u64,
    pub carts_created: u64,
    pub sold_out: bool,
    /// Orders clients were told about (2xx, or an error naming one).
    #[serde(skip)]
    pub acknowledged: Vec<String>,
    pub acknowledged_orders: usize,
}

impl Run {
    pub fn new(api: Api, shop: Shop, plan: Plan) -> Arc<Run> {
        Arc::new(Run {
            pacer: plan.rate.map(|_| Mutex::new(Instant::now())),
            api,
            shop,
            plan,
            started: Instant::now(),
            stop: AtomicBool::new(false),
            sold_out: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            carts: AtomicU64::new(0),
            acknowledged: Mutex::new(Vec::new()),
        })
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Runs every customer to the end and says how it went.
    pub async fn drive(self: &Arc<Run>) -> Outcome {
        let customers: Vec<_> = (0..self.shop.customers.len())
            .map(|i| {
                let run = self.clone();
                tokio::spawn(async move { run.customer(i).await })
            })
            .collect();
        for customer in customers {
            if let Err(e) = customer.await {
                eprintln!("a virtual customer failed: {e}");
            }
        }
        let acknowledged = std::mem::take(&mut *lock(&self.acknowledged));
        Outcome {
            checkout_attempts: self.attempts(),
            carts_created: self.carts.load(Ordering::Relaxed),
            sold_out: self.sold_out.load(Ordering::Relaxed),
            acknowledged_orders: acknowledged.len(),
            acknowledged,
        }
    }

    fn over(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.sold_out.load(Ordering::Relaxed)
            || self
                .plan
                .duration
                .is_some_and(|d| self.started.elapsed() >= d)
    }

    /// Takes one checkout attempt from the run's budget; false when spent.
    fn take_attempt(&self) -> bool {
        let n = self.attempts.fetch_add(1, Ordering::Relaxed);
        match self.plan.checkouts {
            Some(limit) if n >= limit => {
                self.attempts.fetch_sub(1, Ordering::Relaxed);
                false
            }
            _ => true,
        }
    }

    /// Waits for this flow's start time under `--rate`.
    async fn pace(&self) {
        let (Some(pacer), Some(rate)) = (&self.pacer, self.plan.rate) else {
            return;
        };
        let at = {
            let mut next = lock(pacer);
            let at = (*next).max(Instant::now());
            *next = at + Duration::from_secs_f64(1.0 / rate);
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }

    fn acknowledge(&self, answer: &Answer) {
        if let Some(id) = answer.order_id() {
            lock(&self.acknowledged).push(id);
        }
    }

    async fn customer(self: Arc<Run>, index: usize) {
        let token = self.shop.customers[index].clone();
        let mut rng = SmallRng::seed_from_u64(
            self.plan.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let mut me = Customer {
            token,
            open_cart: None,
            paid: Vec::new(),
        };
        while !self.over() {
            self.pace().await;
            if self.over() {
                break;
            }
            let more = match self.plan.scenario {
                Scenario::FlashSale => self.flow(&mut me, &mut rng, 1, "tok_ok").await,
                Scenario::Catalog => {
                    let (min, max) = self.plan.lines;
                    let lines = rng.random_range(min..=max);
                    self.flow(&mut me, &mut rng, lines, "tok_ok").await
                }
                Scenario::Carts => self.abandoned_cart(&me, &mut rng).await,
                Scenario::Mixed => self.mixed_step(&mut me, &mut rng).await,
            };
            if !more {
                break;
            }
        }
    }

    /// A cart of `lines` SKUs, checked out with `token`. False when the
    /// run's checkout budget is spent.
    async fn flow(&self, me: &mut Customer, rng: &mut SmallRng, lines: usize, token: &str) -> bool {
        if !self.take_attempt() {
            return false;
        }
        let Some(cart) = self.new_cart(me).await else {
            return true;
        };
        for sku in self.pick_skus(rng, lines) {
            if !self.add_line(me, &cart, sku).await {
                return true;
            }
        }
        self.checkout(me, &cart, token).await;
        true
    }

    /// A cart with one line, never checked out. False when the run's
    /// budget of flows is spent.
    async fn abandoned_cart(&self, me: &Customer, rng: &mut SmallRng) -> bool {
        if !self.take_attempt() {
            return false;
        }
        if let Some(cart) = self.new_cart(me).await {
            let sku = self.pick_skus(rng, 1)[0].to_owned();
            self.add_line(me, &cart, &sku).await;
        }
        true
    }

    /// Adds one unit of `sku` to `cart`; false if refused.
    async fn add_line(&self, me: &Customer, cart: &str, sku: &str) -> bool {
        self.api
            .call(
                "add_item",
                Method::POST,
                &format!("/carts/{cart}/items"),
                Some(&me.token),
                Some(json!({"sku": sku, "quantity": 1})),
            )
            .await
            .ok()
    }

    async fn new_cart(&self, me: &Customer) -> Option<String> {
        let answer = self
            .api
            .call("create_cart", Method::POST, "/carts", Some(&me.token), None)
            .await;
        let id = answer.body["id"].as_str().map(str::to_owned)?;
        self.carts.fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    async fn checkout(&self, me: &mut Customer, cart: &str, token: &str) {
        let answer = self
            .api
            .call(
                "checkout",
                Method::POST,
                &format!("/carts/{cart}/checkout"),
                Some(&me.token),
                Some(json!({"payment": {"token": token}})),
            )
            .await;
        self.acknowledge(&answer);
        if answer.ok() {
            // 201 paid (or authorized), or 202: accepted, its saga still
            // running past `checkout.sync_wait_ms`.
            if matches!(
                answer.body["status"].as_str(),
                Some("paid" | "authorized" | "pending")
            ) {
                self.api.recorder().checkout_succeeded();
                if let Some(id) = answer.order_id() {
                    me.paid.push(id);
                }
            }
        } else if answer.error_code() == Some("out_of_stock")
            && self.plan.scenario == Scenario::FlashSale
        {
            self.sold_out.store(true, Ordering::SeqCst);
        }
    }

    /// `n` distinct SKUs, Zipf-distributed.
    fn pick_skus(&self, rng: &mut SmallRng, n: usize) -> Vec<&str> {
        let n = n.min(self.shop.skus.len());
        let mut picked = HashSet::with_capacity(n);
        for _ in 0..n * 64 {
            if picked.len() == n {
                break;
            }
            picked.insert(self.shop.zipf.sample(rng.random::<f64>()));
        }
        // A steep --zipf may keep drawing the same few ranks: take the
        // next ranks in order for the rest.
        let mut rank = 0;
        while picked.len() < n {
            picked.insert(rank);
            rank += 1;
        }
        picked
            .into_iter()
            .map(|i| self.shop.skus[i].as_str())
            .collect()
    }

    async fn mixed_step(&self, me: &mut Customer, rng: &mut SmallRng) -> bool {
        let action = self.plan.mix.pick(rng.random());
        match action {
            Action::Browse => {
                if rng.random_ratio(1, 10) {
                    self.api
                        .call(
                            "list_products",
                            Method::GET,
                            "/products?limit=20",
                            Some(&me.token),
                            None,
                        )
                        .await;
                } else {
                    let sku = self.pick_skus(rng, 1)[0].to_owned();
                    self.api
                        .call(
                            "get_product",
                            Method::GET,
                            &format!("/products/{sku}"),
                            Some(&me.token),
                            None,
                        )
                        .await;
                }
                true
            }
            Action::CartEdit => {
                let cart = match me.open_cart.clone() {
                    Some(cart) => cart,
                    None => match self.new_cart(me).await {
                        Some(cart) => {
                            me.open_cart = Some(cart.clone());
                            cart
                        }
                        None => return true,
                    },
                };
                let sku = self.pick_skus(rng, 1)[0].to_owned();
                let (method, path, body) = if rng.random_ratio(3, 4) {
                    (
                        Method::POST,
                        format!("/carts/{cart}/items"),
                        json!({"sku": sku, "quantity": 1}),
                    )
                } else {
                    (
                        Method::PUT,
                        format!("/carts/{cart}/items/{sku}"),
                        json!({"quantity": rng.random_range(0..3)}),
                    )
                };
                let answer = self
                    .api
                    .call("edit_cart", method, &path, Some(&me.token), Some(body))
                    .await;
                if answer.error_code() == Some("cart_checked_out") {
                    me.open_cart = None;
                }
                true
            }
            Action::Checkout | Action::Decline => {
                let token = if action == Action::Decline {
                    "tok_declined"
                } else {
                    "tok_ok"
                };
                match me.open_cart.take() {
                    Some(cart) => {
                        if !self.take_attempt() {
                            return false;
                        }
                        self.checkout(me, &cart, token).await;
                        true
                    }
                    None => {
                        let lines = rng.random_range(1..=3);
                        self.flow(me, rng, lines, token).await
                    }
                }
            }
            Action::Cancel => {
                if let Some(order) = take_random(&mut me.paid, rng) {
                    self.api
                        .call(
                            "cancel",
                            Method::POST,
                            &format!("/orders/{order}/cancel"),
                            Some(&me.token),
                            None,
                        )
                        .await;
                }
                true
            }
            Action::Refund => {
                if let Some(order) = take_random(&mut me.paid, rng) {
                    // A partial refund of one unit's price, put back in stock.
                    let sku = self
                        .api
                        .call(
                            "get_order",
                            Method::GET,
                            &format!("/orders/{order}"),
                            Some(&me.token),
                            None,
                        )
                        .await
                        .body["items"][0]["sku"]
                        .as_str()
                        .map(str::to_owned);
                    if let Some(sku) = sku {
                        let admin = self.shop.admin.clone();
                        self.api
                            .call(
                                "refund",
                                Method::POST,
                                &format!("/orders/{order}/refunds"),
                                Some(&admin),
                                Some(json!({"amount": PRICE, "reason": "bench", "restock": [{"sku": sku, "quantity": 1}]})),
                            )
                            .await;
                    }
                }
                true
            }
        }
    }
}

struct Customer {
    token: String,
    open_cart: Option<String>,
    /// Paid orders not yet cancelled or refunded.
    paid: Vec<String>,
}

fn take_random(items: &mut Vec<String>, rng: &mut SmallRng) -> Option<String> {
    if items.is_empty() {
        return None;
    }
    let i = rng.random_range(0..items.len());
    Some(items.swap_remove(i))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_parses_and_picks_by_weight() {
        let mix = Mix::parse("browse=2, checkout=1").unwrap();
        assert_eq!(mix.total(), 3);
        assert_eq!(mix.pick(0), Action::Browse);
        assert_eq!(mix.pick(1), Action::Browse);
        assert_eq!(mix.pick(2), Action::Checkout);
        assert_eq!(mix.pick(5), Action::Checkout);
    }

    #[test]
    fn a_bad_mix_is_refused_with_the_reason() {
        let unknown = Mix::parse("browse=1,shoplift=2").unwrap_err().to_string();
        assert!(unknown.contains("shoplift"), "{unknown}");
        assert!(Mix::parse("browse=x").is_err());
        assert!(Mix::parse("browse").is_err());
        assert!(Mix::parse("browse=0").is_err());
    }
}
