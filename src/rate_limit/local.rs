//! In-process GCRA table. Bounded: entries whose TAT has passed carry no
//! state and are swept once the table grows past a threshold.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use super::{Decision, Op, Quota};

const SWEEP_THRESHOLD: usize = 10_000;

#[derive(Clone, Default)]
pub struct LocalGcra {
    tats: Arc<DashMap<String, Instant>>,
}

impl LocalGcra {
    pub fn decide(&self, key: &str, quota: Quota, op: Op) -> Decision {
        self.decide_at(key, quota, op, Instant::now())
    }

    fn decide_at(&self, key: &str, quota: Quota, op: Op, now: Instant) -> Decision {
        let interval = quota.emission_interval();
        let decision = {
            let mut entry = self.tats.entry(key.to_owned()).or_insert(now);
            let tat = (*entry).max(now);
            let new_tat = tat + interval;
            // Conforms when the new TAT is at most one window ahead of now.
            let allow_at = new_tat.checked_sub(quota.window).unwrap_or(now);
            if allow_at > now {
                Decision::Limited {
                    retry_after: allow_at - now,
                }
            } else {
                if op == Op::Record {
                    *entry = new_tat;
                }
                Decision::Allowed
            }
        };
        if self.tats.len() > SWEEP_THRESHOLD {
            self.tats.retain(|_, tat| *tat > now);
        }
        decision
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tats.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        assert!(matches!(
            gcra.decide_at("k", q, Op::Peek, now),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn peek_does_not_consume() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(1, 60);
        for _ in 0..10 {
            assert_eq!(gcra.decide_at("k", q, Op::Peek, now), Decision::Allowed);
        }
        assert_eq!(gcra.decide_at("k", q, Op::Record, now), Decision::Allowed);
        assert!(matches!(
            gcra.decide_at("k", q, Op::Peek, now),
            Decision::Limited { .. }
        ));
    }

    #[test]
    fn budget_refills_at_the_emission_rate() {
        let gcra = LocalGcra::default();
        let now = Instant::now();
        let q = quota(2, 60);
        gcra.decide_at("k", q, Op::Record, now);
        gcra.decide_at("k", q, Op::Record, now);
        let Decision::Limited { retry_after } = gcra.decide_at("k", q, Op::Peek, now) else {
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
        assert!(gcra.len() <= 1, "table kept {} entries", gcra.len());
    }
}
