//! Resuming sagas that no process is running.
//!
//! At start-up the engine claims every unfinished saga whose lease is free or
//! ran out, parked ones included, and runs it. Afterwards it keeps looking,
//! every `sagas.recovery_interval_ms`, for sagas whose lease ran out (their
//! process died or stalled), and for parked ones whose last attempt is
//! `sagas.retry_parked_after_s` old (an operator can resume them sooner).

use chrono::Utc;

use super::Orders;
use crate::db::sagas as sagas_db;
use crate::domain::ids::OrderId;

/// Sagas claimed per scan.
const BATCH: i64 = 100;

impl Orders {
    pub(super) fn spawn_recovery(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let interval = self.inner.policy.recovery_interval;
        tokio::spawn(async move {
            let mut first = true;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let orders = Orders { inner };
                orders.inner.actors.prune();
                match orders.recover(first).await {
                    Ok(n) => {
                        if n > 0 {
                            tracing::info!(sagas = n, "resuming sagas no process was running");
                        }
                        first = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "saga recovery scan failed"),
                }
            }
        });
    }

    /// Claims orphaned sagas and starts them; returns how many.
    async fn recover(&self, at_start: bool) -> Result<usize, super::OrdersError> {
        let now = Utc::now().naive_utc();
        // At start-up every parked saga; later, those parked for a while
        // (a provider outage that outlasted the retries may be over).
        let parked_before = if at_start {
            now + chrono::Duration::days(1)
        } else {
            now - self.inner.policy.retry_parked_after
        };
        let mut conn = self.inner.db.conn().await?;
        let claimed = sagas_db::claim_orphans(
            &mut conn,
            &self.inner.owner,
            now,
            now + self.inner.policy.lease_ttl,
            BATCH,
            parked_before,
        )
        .await?;
        drop(conn);
        let count = claimed.len();
        for stored in claimed {
            let Some(order_id) = OrderId::parse(&stored) else {
                tracing::error!(order.id = %stored, "a saga's order id is not a UUID; skipped");
                continue;
            };
            let orders = self.clone();
            tokio::spawn(async move {
                if let Err(e) = orders.run_saga(&order_id, false).await {
                    tracing::warn!(order.id = %order_id, error = %e, "resumed saga did not finish");
                }
            });
        }
        Ok(count)
    }
}
