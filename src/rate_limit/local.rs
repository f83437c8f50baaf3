//! In-process GCRA table. Bounded: entries whose TAT has passed carry no
//! state and are swept, at most once a second, once the table grows past a
//! threshold.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{Decision, Op, Quota};

const SWEEP_THRESHOLD: usize = 10_000;
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct LocalGcra {
    tats: Arc<DashMap<String, Instant>>,
    last_sweep: Arc<Mutex<Instant>>,
}

impl Default for LocalGcra {
    fn default() -> Self {
        LocalGcra {
            tats: Arc::default(),
            last_sweep: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

impl LocalGcra {
    pub fn decide(&self, key: &str, quota: Quota, op: Op) -> Decision {
        self.decide_at(key, quota, op, Instant::now())
    }

    fn decide_at(&self, key: &str, quota: Quota, op: Op, now: Instant) -> Decision {
        let interval = quota.emission_interval();
        let decision = match op {
            Op::Record => {
                let mut entry = self.tats.entry(key.to_owned()).or_insert(now);
                let new_tat = (*entry).max(now) + interval;
                // Conforms when the new TAT is at most one window ahead of now.
                let allow_at = new_tat.checked_sub(quota.window).unwrap_or(now);
                if allow_at > now {
                    Decision::Limited {
                        retry_after: allow_at - now,
                    }
                } else {
                    *entry = new_tat;
                    Decision::Allowed
                }
            }
            Op::Refund => {
                if let Some(mut tat) = self.tats.get_mut(key) {
                    *tat = tat.checked_sub(interval).unwrap_or(now).max(now);
                }
                Decision::Allowed
            }
        };
        self.sweep_if_due(now);
        decision
    }

    fn sweep_if_due(&self, now: Instant) {
        if self.tats.len() <= SWEEP_THRESHOLD {
            return;
        }
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return; // another thread is sweeping
        };
        if now.saturating_duration_since(*last) >= SWEEP_EVERY {
            *last = now;
            drop(last);
            self.tats.retain(|_, tat| *tat > now);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(limit: u32, secs: u64) -> Quota {
        Quota {
            limit,
            window: Duration::from_secs(secs),
        }
    }

    #[test]
    fn allows_the_limit_then_refuses() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(5, 60);
        for _ in 0..5 {
            assert_eq!(gcra.decide_at("k", q, Op::Record, now), Decision::Allowed);
        }
        assert!(matches!(
            gcra.decide_at("k", q, Op::Record, now),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn refund_gives_one_unit_back() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(1, 60);
        assert_eq!(gcra.decide_at("k", q, Op::Record, now), Decision::Allowed);
        assert!(matches!(
            gcra.decide_at("k", q, Op::Record, now),
            Decision::Limited { .. }
        ));
        gcra.decide_at("k", q, Op::Refund, now);
        assert_eq!(gcra.decide_at("k", q, Op::Record, now), Decision::Allowed);
    }

    #[test]
    fn refund_of_an_unknown_key_creates_nothing() {
        let gcra = LocalGcra::default();
        gcra.decide_at("k", quota(1, 60), Op::Refund, Instant::now());
        assert_eq!(gcra.len(), 0);
    }

    #[test]
    fn budget_refills_at_the_emission_rate() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(2, 60);
        gcra.decide_at("k", q, Op::Record, now);
        gcra.decide_at("k", q, Op::Record, now);
        let Decision::Limited { retry_after } = gcra.decide_at("k", q, Op::Record, now) else {
            panic!("expected limited");
        };
        assert_eq!(retry_after, Duration::from_secs(30));
        assert_eq!(
            gcra.decide_at("k", q, Op::Record, now + Duration::from_secs(30)),
            Decision::Allowed
        );
    }

    #[test]
    fn keys_are_independent() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(1, 60);
        assert_eq!(gcra.decide_at("a", q, Op::Record, now), Decision::Allowed);
        assert_eq!(gcra.decide_at("b", q, Op::Record, now), Decision::Allowed);
    }

    #[test]
    fn expired_entries_are_swept() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(10, 1);
        for i in 0..=SWEEP_THRESHOLD {
            gcra.decide_at(&format!("k{i}"), q, Op::Record, now);
        }
        let later = now + Duration::from_secs(2);
        gcra.decide_at("fresh", q, Op::Record, later);
        // The sweep also runs at most once per SWEEP_EVERY.
        gcra.decide_at("fresh2", q, Op::Record, later);
        assert!(gcra.len() <= 2, "table kept {} entries", gcra.len());
    }
}
