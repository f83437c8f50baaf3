//! Micro-benchmarks of the work every request pays for before any business
//! logic: token verification, JSON body parsing, a rate-limit decision, and
//! the deliberately slow password hash that bounds login throughput.
//!
//! Run: `cargo bench --bench request_path`. Figures go to docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use orderflow::auth::token::TokenService;
use orderflow::domain::user::Role;
use orderflow::http::extract::parse_json;
use orderflow::rate_limit::{LocalGcra, Op, Quota};
use secrecy::SecretString;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RegisterBody {
    email: String,
    password: String,
    name: String,
}

fn tokens(c: &mut Criterion) {
    let service = TokenService::new(
        &SecretString::from("a-benchmark-secret-of-enough-bytes-0001"),
        3600,
    );
    let token = service
        .issue(uuid::Uuid::now_v7(), Role::Customer)
        .expect("issue")
        .access_token;
    c.bench_function("token_verify", |b| {
        b.iter(|| service.verify(black_box(&token)).expect("valid"))
    });
    c.bench_function("token_issue", |b| {
        b.iter(|| {
            service
                .issue(black_box(uuid::Uuid::now_v7()), Role::Customer)
                .expect("issue")
        })
    });
}

fn json_bodies(c: &mut Criterion) {
    let body =
        br#"{"email":"ada@example.com","password":"correct horse battery","name":"Ada Lovelace"}"#;
    c.bench_function("parse_register_body", |b| {
        b.iter(|| parse_json::<RegisterBody>(black_box(body)).expect("valid body"))
    });
}

fn rate_limit(c: &mut Criterion) {
    let gcra = LocalGcra::default();
    let quota = Quota {
        limit: 1_000_000,
        window: Duration::from_secs(1),
    };
    c.bench_function("gcra_local_record_hot_key", |b| {
        b.iter(|| gcra.decide(black_box("203.0.113.7"), quota, Op::Record))
    });
}

fn password_hash(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("password");
    group.sample_size(10);
    group.bench_function("argon2id_hash", |b| {
        b.iter(|| {
            rt.block_on(orderflow::auth::password::hash(black_box(
                "correct horse battery".to_owned(),
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, tokens, json_bodies, rate_limit, password_hash);
criterion_main!(benches);
