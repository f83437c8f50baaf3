//! The retry policy of deliveries and notifications: exponential backoff
//! with jitter, a bounded number of attempts, then dead.

use std::time::Duration;

use rand::Rng;

use crate::db::leases::Settled;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The delay before the attempt after `attempts` failed ones:
    /// `base * 4^(attempts - 1)`, capped at `max`, then jittered down by up to
    /// half, so that endpoints failing together do not retry in lockstep.
    /// With the defaults (1 s, 8 attempts, 1 h cap) the attempts span about
    /// an hour and a half, so an endpoint's short outage does not make dead
    /// letters.
    pub fn delay(&self, attempts: u32) -> Duration {
        let ceiling = self.ceiling(attempts);
        let half = ceiling / 2;
        let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter)
    }

    fn ceiling(&self, attempts: u32) -> Duration {
        let steps = attempts.saturating_sub(1).min(15);
        self.base
            .checked_mul(1u32 << (2 * steps))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// How a failed attempt, the `attempts`-th, settles at `now`.
    pub fn after_failure(&self, attempts: u32, now: chrono::NaiveDateTime) -> Settled {
        if attempts >= self.max_attempts {
            Settled::Dead
        } else {
            let delay =
                chrono::Duration::from_std(self.delay(attempts)).unwrap_or(chrono::Duration::MAX);
            Settled::Failed(now + delay)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(1000),
            max: Duration::from_secs(60),
        }
    }

    #[test]
    fn delays_grow_fourfold_within_jitter_and_stop_at_the_cap() {
        let p = policy();
        for (attempts, ceiling_ms) in [(1, 1000), (2, 4000), (3, 16_000), (4, 60_000), (40, 60_000)]
        {
            for _ in 0..50 {
                let d = p.delay(attempts).as_millis() as u64;
                assert!(
                    (ceiling_ms / 2..=ceiling_ms).contains(&d),
                    "attempt {attempts}: {d} ms not within [{}, {ceiling_ms}]",
                    ceiling_ms / 2
                );
            }
        }
    }

    #[test]
    fn the_last_attempt_is_dead_and_earlier_ones_are_retried_later() {
        let p = policy();
        let now = chrono::Utc::now().naive_utc();
        for attempts in 1..8 {
            match p.after_failure(attempts, now) {
                Settled::Failed(at) => assert!(at > now),
                other => panic!("attempt {attempts}: {other:?}"),
            }
        }
        assert_eq!(p.after_failure(8, now), Settled::Dead);
        assert_eq!(p.after_failure(9, now), Settled::Dead);
    }
}
