//! What a run measured: per-operation latency histograms (HDR), answers by
//! error code, and a per-second timeline for the chart. One `Recorder` is
//! shared by all virtual customers; recording is a short critical section.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, up to a minute, 3 significant
/// digits.
const MAX_MICROS: u64 = 60_000_000;

pub struct Recorder {
    started: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    ops: BTreeMap<&'static str, OpStats>,
    errors: BTreeMap<String, u64>,
    timeline: Vec<Second>,
    checkouts: u64,
}

struct OpStats {
    latency: Histogram<u64>,
    ok: u64,
    failed: u64,
}

/// One second of the run.
#[derive(Clone, Default)]
struct Second {
    requests: u64,
    checkouts: u64,
    checkout_latency: Option<Histogram<u64>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            started: Instant::now(),
            inner: Mutex::new(Inner {
                ops: BTreeMap::new(),
                errors: BTreeMap::new(),
                timeline: Vec::new(),
                checkouts: 0,
            }),
        }
    }

    /// One answered request of operation `op`. `error` is the answer's
    /// error code (or the transport failure) when it was not a success.
    pub fn request(&self, op: &'static str, latency: Duration, error: Option<String>) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        let second = self.started.elapsed().as_secs() as usize;
        let mut inner = self.lock();
        let stats = inner.ops.entry(op).or_insert_with(|| OpStats {
            latency: histogram(),
            ok: 0,
            failed: 0,
        });
        stats.latency.saturating_record(micros);
        match error {
            None => stats.ok += 1,
            Some(code) => {
                stats.failed += 1;
                *inner.errors.entry(format!("{op}: {code}")).or_default() += 1;
            }
        }
        let timeline = &mut inner.timeline;
        if timeline.len() <= second {
            timeline.resize(second + 1, Second::default());
        }
        timeline[second].requests += 1;
        if op == "checkout" {
            timeline[second]
                .checkout_latency
                .get_or_insert_with(histogram)
                .saturating_record(micros);
        }
    }

    /// A checkout that placed a paid (or authorized) order.
    pub fn checkout_succeeded(&self) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut inner = self.lock();
        inner.checkouts += 1;
        if inner.timeline.len() <= second {
            inner.timeline.resize(second + 1, Second::default());
        }
        inner.timeline[second].checkouts += 1;
    }

    pub fn checkouts(&self) -> u64 {
        self.lock().checkouts
    }

    pub fn requests(&self) -> u64 {
        self.lock().ops.values().map(|o| o.ok + o.failed).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The figures of the run, over `elapsed`.
    pub fn summary(&self, elapsed: Duration) -> Measured {
        let inner = self.lock();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let requests: u64 = inner.ops.values().map(|o| o.ok + o.failed).sum();
        Measured {
            elapsed_s: elapsed.as_secs_f64(),
            checkouts: inner.checkouts,
            checkouts_per_s: inner.checkouts as f64 / secs,
            requests,
            requests_per_s: requests as f64 / secs,
            operations: inner
                .ops
                .iter()
                .map(|(name, o)| {
                    (
                        name.to_string(),
                        Operation {
                            count: o.ok + o.failed,
                            errors: o.failed,
                            p50_ms: ms(o.latency.value_at_quantile(0.50)),
                            p95_ms: ms(o.latency.value_at_quantile(0.95)),
                            p99_ms: ms(o.latency.value_at_quantile(0.99)),
                            max_ms: ms(o.latency.max()),
                            mean_ms: o.latency.mean() / 1000.0,
                        },
                    )
                })
                .collect(),
            errors: inner.errors.clone(),
            timeline: inner
                .timeline
                .iter()
                .enumerate()
                .map(|(second, s)| TimelinePoint {
                    second: second as u64,
                    requests: s.requests,
                    checkouts: s.checkouts,
                    checkout_p50_ms: s
                        .checkout_latency
                        .as_ref()
                        .map(|h| ms(h.value_at_quantile(0.50))),
                    checkout_p99_ms: s
                        .checkout_latency
                        .as_ref()
                        .map(|h| ms(h.value_at_quantile(0.99))),
                })
                .collect(),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    pub elapsed_s: f64,
    pub checkouts: u64,
    pub checkouts_per_s: f64,
    pub requests: u64,
    pub requests_per_s: f64,
    pub operations: BTreeMap<String, Operation>,
    /// `"<operation>: <error code>"` → answers.
    pub errors: BTreeMap<String, u64>,
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Operation {
    pub count: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub requests: u64,
    pub checkouts: u64,
    pub checkout_p50_ms: Option<f64>,
    pub checkout_p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_requests_errors_and_quantiles() {
        let recorder = Recorder::new();
        for ms in 1..=100 {
            recorder.request("checkout", Duration::from_millis(ms), None);
        }
        recorder.request(
            "checkout",
            Duration::from_millis(5),
            Some("out_of_stock".into()),
        );
        recorder.checkout_succeeded();
        let m = recorder.summary(Duration::from_secs(2));
        let op = &m.operations["checkout"];
        assert_eq!(op.count, 101);
        assert_eq!(op.errors, 1);
        assert!((49.0..=51.5).contains(&op.p50_ms), "p50 {}", op.p50_ms);
        assert!((98.0..=100.5).contains(&op.p99_ms), "p99 {}", op.p99_ms);
        assert!((99.9..=100.1).contains(&op.max_ms), "max {}", op.max_ms);
        assert_eq!(m.errors["checkout: out_of_stock"], 1);
        assert_eq!(m.checkouts, 1);
        assert!((m.requests_per_s - 50.5).abs() < 1e-9);
        assert_eq!(m.timeline.iter().map(|s| s.requests).sum::<u64>(), 101);
    }
}
