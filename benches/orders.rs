//! Order hot paths that do not touch the database.
//!
//! - `saga_steps/next_step`: one decision of the saga state machine on a
//!   mid-saga progress (stock reserved, payment authorized, automatic capture).
//! - `saga_steps/happy_path`: a whole checkout saga from a new order to
//!   `paid` (reserve, authorize, capture, commit, confirm): every `next_step`
//!   and `OrderProgress::apply`, ending `completed`.
//! - `saga_steps/declined_payment`: reserve, authorization declined, release
//!   the stock, ending `payment_failed` (saga `compensated`).
//! - `order_json/encode_view_N`: `serde_json::to_vec` of an `OrderView` with
//!   N lines, as the order endpoints answer.
//! - `order_json/decode_place_body_N`: `serde_json::from_slice` of the body of
//!   `POST /api/v1/orders` (`PlaceBody`) with N lines.
//! - `order_json/parse_place_body_5`: the same 5-line body through the
//!   engine's extractor, `http::extract::parse_json` (syntax pass, NUL check,
//!   typed parse with field paths).
//! - `order_json/decode_checkout_body`: the body of
//!   `POST /api/v1/carts/{id}/checkout` (`CheckoutBody`).
//! - `order_json/decode_payment_body`: its payment part alone (`PaymentBody`).
//!
//! JSON benchmarks report throughput in bytes. SKU batch planning is
//! `plan_batch` in benches/inventory.rs.
//!
//! Run: `cargo bench --bench orders`.

use std::hint::black_box;

use chrono::{NaiveDate, NaiveDateTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use orderflow::db::orders::{OrderItemRow, OrderRow};
use orderflow::domain::order::{next_step, CaptureMode, OrderProgress, Outcome, SagaState, Step};
use orderflow::http::carts::CheckoutBody;
use orderflow::http::extract::parse_json;
use orderflow::http::orders::PlaceBody;
use orderflow::http::placing::PaymentBody;
use orderflow::orders::OrderView;

const ORDER_TOTAL: i64 = 12_990;

/// Runs the saga to its end, answering each step with `outcome_for(step)`.
fn run_saga(total: i64, outcome_for: impl Fn(&Step) -> Outcome) -> OrderProgress {
    let mut p = OrderProgress::new(total, CaptureMode::Automatic);
    while let Some(step) = next_step(&p) {
        p = p.apply(&step, &outcome_for(&step)).progress;
    }
    p
}

fn happy(_: &Step) -> Outcome {
    Outcome::Done
}

fn declined(step: &Step) -> Outcome {
    match step {
        Step::AuthorizePayment => Outcome::Declined,
        _ => Outcome::Done,
    }
}

fn saga_steps(c: &mut Criterion) {
    // The benchmarks must measure whole sagas, not an early stop.
    let done = run_saga(ORDER_TOTAL, happy);
    assert_eq!(done.saga_state(), SagaState::Completed, "{done:?}");
    let unwound = run_saga(ORDER_TOTAL, declined);
    assert_eq!(unwound.saga_state(), SagaState::Compensated, "{unwound:?}");

    // Mid-saga: stock reserved, payment authorized; next is the capture.
    let mut mid = OrderProgress::new(ORDER_TOTAL, CaptureMode::Automatic);
    for step in [Step::ReserveInventory, Step::AuthorizePayment] {
        mid = mid.apply(&step, &Outcome::Done).progress;
    }
    assert_eq!(next_step(&mid), Some(Step::CapturePayment));

    let mut group = c.benchmark_group("saga_steps");
    group.bench_function("next_step", |b| b.iter(|| next_step(black_box(&mid))));
    group.bench_function("happy_path", |b| {
        b.iter(|| run_saga(black_box(ORDER_TOTAL), happy))
    });
    group.bench_function("declined_payment", |b| {
        b.iter(|| run_saga(black_box(ORDER_TOTAL), declined))
    });
    group.finish();
}

fn at() -> NaiveDateTime {
    NaiveDate::from_ymd_opt(2026, 11, 22)
        .and_then(|d| d.and_hms_opt(12, 30, 0))
        .expect("timestamp")
}

/// A paid order of `lines` lines, as `GET /api/v1/orders/{id}` shows it.
fn order_view(lines: usize) -> OrderView {
    let id = "0193a5b2-7c4e-7d10-9f3a-2b6c8e1d4f57".to_owned();
    let items: Vec<OrderItemRow> = (0..lines)
        .map(|n| OrderItemRow {
            order_id: id.clone(),
            sku: format!("tee-red-{n}"),
            name: format!("Red tee, size {n}"),
            quantity: 2,
            unit_price: 1_299,
            line_total: 2_598,
            restocked: 0,
        })
        .collect();
    let total = items.iter().map(|i| i.line_total).sum();
    let row = OrderRow {
        id,
        user_id: "0193a5b2-11aa-7b22-8c33-4d5e6f708192".to_owned(),
        cart_id: None,
        status: "paid".to_owned(),
        currency: "USD".to_owned(),
        total,
        payment_provider: "sandbox".to_owned(),
        payment_token: "tok_ok".to_owned(),
        payment_ref: Some("sbx_auth_0193a5b2".to_owned()),
        capture_mode: "automatic".to_owned(),
        payment_status: "captured".to_owned(),
        authorized: total,
        captured: total,
        refunded: 0,
        stock_state: "committed".to_owned(),
        cancel_requested: false,
        capture_requested: false,
        carrier: None,
        tracking_number: None,
        version: 6,
        created_at: at(),
        updated_at: at(),
    };
    OrderView::new(row, items).expect("a well-formed order row")
}

/// The body of `POST /api/v1/orders` with `lines` lines.
fn place_body(lines: usize) -> Vec<u8> {
    let items: Vec<String> = (0..lines)
        .map(|n| format!(r#"{{"sku":"tee-red-{n}","quantity":2}}"#))
        .collect();
    format!(
        r#"{{"items":[{}],"payment":{{"provider":"sandbox","token":"tok_ok"}}}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn order_json(c: &mut Criterion) {
    let mut group = c.benchmark_group("order_json");
    for lines in [1, 5] {
        let view = order_view(lines);
        let encoded = serde_json::to_vec(&view).expect("encode");
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(format!("encode_view_{lines}"), |b| {
            b.iter(|| serde_json::to_vec(black_box(&view)).expect("encode"))
        });
    }
    for lines in [1, 5] {
        let body = place_body(lines);
        serde_json::from_slice::<PlaceBody>(&body).expect("a valid order body");
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("decode_place_body_{lines}"), |b| {
            b.iter(|| serde_json::from_slice::<PlaceBody>(black_box(&body)).expect("decode"))
        });
    }
    let body = place_body(5);
    parse_json::<PlaceBody>(&body).expect("a valid order body");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("parse_place_body_5", |b| {
        b.iter(|| parse_json::<PlaceBody>(black_box(&body)).expect("parse"))
    });
    let checkout = br#"{"payment":{"provider":"sandbox","token":"tok_ok"}}"#;
    group.throughput(Throughput::Bytes(checkout.len() as u64));
    group.bench_function("decode_checkout_body", |b| {
        b.iter(|| serde_json::from_slice::<CheckoutBody>(black_box(checkout)).expect("decode"))
    });
    let payment = br#"{"provider":"sandbox","token":"tok_ok"}"#;
    group.throughput(Throughput::Bytes(payment.len() as u64));
    group.bench_function("decode_payment_body", |b| {
        b.iter(|| serde_json::from_slice::<PaymentBody>(black_box(payment)).expect("decode"))
    });
    group.finish();
}

criterion_group!(benches, saga_steps, order_json);
criterion_main!(benches);
