//! The report of a bench invocation: one entry per engine run, the ratio
//! orderflow ÷ baseline when both ran, printed as a table and written as
//! JSON plus an SVG chart of throughput and checkout latency over time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;

use orderflow_bench::invariants::Audit;

use crate::scenario::{Outcome, Plan};
use crate::stats::Measured;
use orderflow_bench::engine::Memory;

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    /// `postgres`, `sqlite`, or `external` for an engine the bench did not
    /// start.
    pub backend: String,
    pub plan: Plan,
    pub payment_latency_ms: u64,
    pub machine: Machine,
    pub runs: Vec<RunReport>,
    /// orderflow ÷ baseline, when both ran.
    pub ratio: Option<Ratio>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub os: String,
    pub bench_version: &'static str,
}

impl Machine {
    pub fn this() -> Machine {
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::fs::read_to_string("/etc/os-release")
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                        .map(|v| v.trim_matches('"').to_owned())
                })
                .unwrap_or_else(|| std::env::consts::OS.to_owned()),
            bench_version: env!("CARGO_PKG_VERSION"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub engine: String,
    pub measured: Measured,
    pub outcome: Outcome,
    /// Sagas still running when the invariant check started (it waits for
    /// them to finish, up to a limit).
    pub unsettled_sagas: i64,
    pub settle_s: f64,
    pub invariants: Audit,
    pub memory_before: Option<Memory>,
    pub memory_after: Option<Memory>,
    /// Engine metrics that changed during the run: after − before.
    pub engine_metrics_delta: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub checkouts_per_s: f64,
    pub requests_per_s: f64,
}

impl Report {
    pub fn compute_ratio(&mut self) {
        let find = |name: &str| self.runs.iter().find(|r| r.engine == name);
        self.ratio = match (find("orderflow"), find("baseline")) {
            (Some(o), Some(b)) => Some(Ratio {
                checkouts_per_s: o.measured.checkouts_per_s / b.measured.checkouts_per_s.max(1e-9),
                requests_per_s: o.measured.requests_per_s / b.measured.requests_per_s.max(1e-9),
            }),
            _ => None,
        };
    }

    pub fn passed(&self) -> bool {
        self.runs.iter().all(|r| r.invariants.passed())
    }

    /// The human summary printed at the end.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n{} on {} · {} customers · payment latency {} ms",
            self.scenario, self.backend, self.plan.customers, self.payment_latency_ms
        );
        for run in &self.runs {
            let m = &run.measured;
            let _ = writeln!(
                out,
                "\n[{}] {:.1} s: {} checkouts ({:.1}/s), {} requests ({:.1}/s), {} carts",
                run.engine,
                m.elapsed_s,
                m.checkouts,
                m.checkouts_per_s,
                m.requests,
                m.requests_per_s,
                run.outcome.carts_created
            );
            let _ = writeln!(
                out,
                "  {:<14} {:>8} {:>7} {:>9} {:>9} {:>9} {:>9}",
                "operation", "count", "errors", "p50 ms", "p95 ms", "p99 ms", "max ms"
            );
            for (name, op) in &m.operations {
                let _ = writeln!(
                    out,
                    "  {:<14} {:>8} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                    name, op.count, op.errors, op.p50_ms, op.p95_ms, op.p99_ms, op.max_ms
                );
            }
            if !m.errors.is_empty() {
                let errors: Vec<String> =
                    m.errors.iter().map(|(k, v)| format!("{k} × {v}")).collect();
                let _ = writeln!(out, "  answers by error code: {}", errors.join(", "));
            }
            if let (Some(before), Some(after)) = (run.memory_before, run.memory_after) {
                let _ = writeln!(
                    out,
                    "  engine RSS {:.1} MiB before, {:.1} MiB after, peak {:.1} MiB",
                    before.rss_mib, after.rss_mib, after.peak_rss_mib
                );
            }
            let audit = &run.invariants;
            let statuses: Vec<String> = audit
                .statuses
                .iter()
                .map(|(status, n)| format!("{status} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  orders in the database: {}{}",
                statuses.join(", "),
                if run.unsettled_sagas > 0 {
                    format!(" ({} sagas still running)", run.unsettled_sagas)
                } else {
                    String::new()
                }
            );
            if audit.passed() {
                let _ = writeln!(
                    out,
                    "  invariants: all hold ({} orders, {} SKUs, {} acknowledged orders checked)",
                    audit.orders, audit.skus, audit.acknowledged
                );
            } else {
                let _ = writeln!(
                    out,
                    "  INVARIANTS VIOLATED: {} violation(s)",
                    audit.violations.len()
                );
                for v in audit.violations.iter().take(20) {
                    let _ = writeln!(out, "    {} [{}]: {}", v.invariant, v.subject, v.detail);
                }
            }
        }
        if let Some(ratio) = &self.ratio {
            let _ = writeln!(
                out,
                "\norderflow ÷ baseline: {:.2}× checkouts/s, {:.2}× requests/s",
                ratio.checkouts_per_s, ratio.requests_per_s
            );
        }
        out
    }

    /// Writes `<stem>.json` and `<stem>.svg` in `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let stem = format!(
            "{}-{}-{}",
            self.scenario,
            self.backend,
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        );
        let json = dir.join(format!("{stem}.json"));
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)?;
        let svg = dir.join(format!("{stem}.svg"));
        self.chart(&svg)
            .map_err(|e| anyhow::anyhow!("drawing {}: {e}", svg.display()))?;
        Ok((json, svg))
    }

    fn chart(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 720)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(360);
        let colors = [BLUE, RED, GREEN, MAGENTA];
        let mut throughput = Vec::new();
        let mut latency = Vec::new();
        for (i, run) in self.runs.iter().enumerate() {
            let color = colors[i % colors.len()];
            let points = &run.measured.timeline;
            let at = |p: &crate::stats::TimelinePoint| p.second as f64;
            throughput.push(Series {
                label: format!("{} checkouts/s", run.engine),
                color,
                strong: true,
                points: points.iter().map(|p| (at(p), p.checkouts as f64)).collect(),
            });
            throughput.push(Series {
                label: format!("{} requests/s", run.engine),
                color,
                strong: false,
                points: points.iter().map(|p| (at(p), p.requests as f64)).collect(),
            });
            latency.push(Series {
                label: format!("{} p99", run.engine),
                color,
                strong: true,
                points: points
                    .iter()
                    .filter_map(|p| Some((at(p), p.checkout_p99_ms?)))
                    .collect(),
            });
            latency.push(Series {
                label: format!("{} p50", run.engine),
                color,
                strong: false,
                points: points
                    .iter()
                    .filter_map(|p| Some((at(p), p.checkout_p50_ms?)))
                    .collect(),
            });
        }
        panel(
            &top,
            &format!(
                "{} on {}: throughput per second",
                self.scenario, self.backend
            ),
            "per second",
            &throughput,
        )?;
        panel(&bottom, "checkout latency per second (ms)", "ms", &latency)?;
        root.present()?;
        Ok(())
    }
}

/// One line of a chart: a run's strong (main) or light (secondary) line.
struct Series {
    label: String,
    color: RGBColor,
    strong: bool,
    points: Vec<(f64, f64)>,
}

/// One chart panel: `series` over the seconds of the run, with a legend.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let points = || series.iter().flat_map(|s| s.points.iter());
    let seconds = points().map(|p| p.0 + 1.0).fold(2.0, f64::max);
    let top = points().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .draw()?;
    for s in series {
        let style = if s.strong {
            s.color.stroke_width(2)
        } else {
            s.color.mix(0.4).stroke_width(1)
        };
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
