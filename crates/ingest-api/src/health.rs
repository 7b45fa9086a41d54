//! The background check that `/health` and `/readyz` answer from, and the upkeep that runs
//! beside it: the rate limiters' memory, and the day partitions of `events` created ahead.
//!
//! `/health` is public and `/readyz` is probed by every load balancer: neither touches the
//! database per call. One task per instance checks the database every `HEALTH_INTERVAL` and
//! the handlers read its last result, so a flood of health checks costs memory reads, never
//! a pool connection that a write is waiting for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use interaction_store::Store;
use tokio::sync::watch;

use crate::auth::RateLimits;

/// How long a background check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often idle clients are dropped from the rate limiters' memory.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(10);

/// How often the partitions of the coming days are made sure of: the next missing one is a
/// week away (`PARTITION_DAYS_AHEAD`), so hourly is plenty, and costs one short statement
/// per day ahead.
const PARTITIONS_EVERY: Duration = Duration::from_secs(3600);

/// After a failed attempt (database down), how soon the partitions are tried again.
const PARTITIONS_RETRY: Duration = Duration::from_secs(60);

/// What the last background check saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked {
    /// Accepted events not yet forwarded; `None` when the database did not answer.
    pub pending: Option<i64>,
    /// When the check finished; `None` before the first one.
    pub at: Option<Instant>,
}

/// The background check's results, as handlers read them.
#[derive(Debug, Clone)]
pub struct HealthView {
    checked: watch::Receiver<Checked>,
    /// Past this age a result no longer counts (a check that hangs must not leave a stale
    /// "database: true" behind).
    max_age: Duration,
}

impl HealthView {
    /// Pending events if the database answered the last check and that check is recent.
    pub fn pending(&self) -> Option<i64> {
        let checked = *self.checked.borrow();
        let fresh = checked.at.is_some_and(|at| at.elapsed() <= self.max_age);
        checked.pending.filter(|_| fresh)
    }
}

/// Starts the background upkeep: the database check every `interval` (the first at once),
/// forgetting idle clients of the rate limiters, and — in a task of its own, so a slow DDL
/// lock never makes the health result stale — creating the coming days' partitions of
/// `events` every [`PARTITIONS_EVERY`]. Stops when `stop` turns true.
pub fn start_upkeep(
    store: Store,
    rate_limits: Arc<RateLimits>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> (HealthView, tokio::task::JoinHandle<()>) {
    let interval = interval.max(Duration::from_millis(10));
    let (publish, checked) = watch::channel(Checked::default());
    let view = HealthView {
        checked,
        max_age: interval * 3 + CHECK_TIMEOUT,
    };
    let partitions = tokio::spawn(partition_upkeep(store.clone(), stop.clone()));
    let checks = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_forget = Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let pending = tokio::time::timeout(CHECK_TIMEOUT, store.pending_event_count())
                .await
                .ok()
                .and_then(Result::ok);
            metrics::counter!("ingest_health_checks_total").increment(1);
            if let Some(pending) = pending {
                metrics::gauge!("ingest_pending_interactions").set(pending as f64);
            }
            publish.send_replace(Checked {
                pending,
                at: Some(Instant::now()),
            });
            if last_forget.elapsed() >= FORGET_IDLE_EVERY {
                forget_idle(&rate_limits);
                last_forget = Instant::now();
            }
        }
    });
    let task = tokio::spawn(async move {
        let _ = tokio::join!(checks, partitions);
    });
    (view, task)
}

/// Makes sure the partitions of today and the days ahead exist, now and every
/// [`PARTITIONS_EVERY`] (every [`PARTITIONS_RETRY`] while the database fails), until `stop`.
async fn partition_upkeep(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = match store
            .ensure_partitions(chrono::Utc::now().date_naive())
            .await
        {
            Ok(upkeep) => {
                if !upkeep.created.is_empty() {
                    log::info!("partitions created: {}", upkeep.created.join(", "));
                }
                interaction_store::warn_blocked(&upkeep);
                metrics::gauge!("ingest_partition_days_blocked").set(upkeep.blocked.len() as f64);
                PARTITIONS_EVERY
            }
            Err(error) => {
                log::warn!("partition upkeep failed (retrying in a minute): {error}");
                PARTITIONS_RETRY
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn forget_idle(limits: &RateLimits) {
    limits.forget_idle();
    metrics::gauge!("ingest_rate_limited_addresses_tracked").set(limits.tracked_addresses() as f64);
}
