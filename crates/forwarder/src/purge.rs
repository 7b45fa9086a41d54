//! Retention: dropping the day partitions of `events` older than a cutoff, deleting the chunk
//! rows that go with them, the failure rows past their own retention and the idempotency keys
//! past the dedup window in small batches, and the rows that landed in
//! the default partition like before partitioning (see `interaction_store`'s `partitions`).
//! A day with unfinished chunks is kept whole, and said so. One replica purges at a time (a
//! PostgreSQL advisory lock, [`RETENTION_LOCK`]): the others skip their round rather than
//! drop beside it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use interaction_store::{PartitionRetention, RETENTION_LOCK, Store, StoreError};
use tokio::sync::watch;

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Purged {
    /// Partitions dropped, oldest first.
    pub dropped: Vec<String>,
    /// Events gone: the dropped partitions' rows (PostgreSQL's estimate) plus the rows
    /// deleted from the default partition.
    pub events: i64,
    /// Chunk rows deleted.
    pub chunks: i64,
    /// Failure rows deleted (refused events past their own retention).
    pub failures: i64,
    /// Idempotency keys expired (older than the dedup window).
    pub keys: i64,
    /// Partitions old enough to drop but kept, with their unfinished chunks (0: DETACH
    /// found the table busy; tried again next run).
    pub held: Vec<(String, i64)>,
}

/// What retention applies: `older_than` to events (zero: keep them), `dedup_window` to
/// idempotency keys (zero: keep them), `batch` rows per DELETE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Events received longer ago than this go.
    pub older_than: Duration,
    /// Idempotency keys received longer ago than this go.
    pub dedup_window: Duration,
    /// Failure rows (refused events, kept as sent for re-drive) recorded longer ago than
    /// this go (zero: keep them).
    pub failures_older_than: Duration,
    /// Rows per DELETE statement (chunks, keys, default-partition events).
    pub batch: i64,
}

fn cutoff(age: Duration) -> DateTime<Utc> {
    Utc::now() - chrono::TimeDelta::from_std(age).unwrap_or(chrono::TimeDelta::MAX)
}

/// Runs `step` (one batch of a row-by-row deletion) until it deletes nothing; returns how
/// many it deleted, logging the running total after each batch as "`so far` so far".
async fn drain<F, Fut>(so_far: &str, mut step: F) -> Result<i64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<i64, StoreError>>,
{
    let mut total = 0;
    loop {
        let n = step().await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        log::info!("purge: {total} {so_far} so far");
    }
}

/// Applies `retention` once; logs progress. `None`, without touching anything, when another
/// process holds the retention lock (it is purging now).
pub async fn purge(store: &Store, retention: Retention) -> Result<Option<Purged>, StoreError> {
    let Some(_lock) = store.try_lock(RETENTION_LOCK).await? else {
        return Ok(None);
    };
    let batch = retention.batch.max(1);
    let mut total = Purged::default();
    // First, so that the chunk rows of failed chunks whose failures expired go below.
    if !retention.failures_older_than.is_zero() {
        let before = cutoff(retention.failures_older_than);
        total.failures = drain("failure rows deleted", || {
            store.purge_failures(before, batch)
        })
        .await?;
    }
    if !retention.older_than.is_zero() {
        let before = cutoff(retention.older_than);
        for partition in store.partitions().await? {
            match partition.high {
                Some(high) if high <= before => {}
                _ => continue,
            }
            match store.drop_partition(&partition).await? {
                PartitionRetention::Dropped { rows } => {
                    log::info!("purge: dropped {} (~{rows} events)", partition.name);
                    total.events += rows;
                    total.dropped.push(partition.name);
                }
                PartitionRetention::Held { unfinished_chunks } => {
                    log::warn!(
                        "purge: kept {}: {unfinished_chunks} chunks received then are not \
                         delivered yet (dropped once they are)",
                        partition.name
                    );
                    total.held.push((partition.name, unfinished_chunks));
                }
                PartitionRetention::Busy => {
                    log::warn!(
                        "purge: {} not dropped: events was busy (lock timeout); next run",
                        partition.name
                    );
                    total.held.push((partition.name, 0));
                }
            }
        }
        total.events += drain("rows deleted from events_default", || {
            store.purge_default(before, batch)
        })
        .await?;
        // Chunks of the days no partition holds any more (dropped now or in an earlier run
        // that stopped half-way) have no events left: their rows go too.
        for (low, high) in interaction_store::uncovered(&store.partitions().await?, before) {
            total.chunks += drain("chunk rows deleted", || {
                store.purge_chunks(low, high, batch)
            })
            .await?;
        }
    }
    if !retention.dedup_window.is_zero() {
        let before = cutoff(retention.dedup_window);
        total.keys = drain("idempotency keys expired", || {
            store.expire_keys(before, batch)
        })
        .await?;
    }
    metrics::counter!("forwarder_purged_events_total").increment(total.events.max(0) as u64);
    metrics::counter!("forwarder_purged_partitions_total").increment(total.dropped.len() as u64);
    metrics::gauge!("forwarder_retention_held_partitions").set(total.held.len() as f64);
    Ok(Some(total))
}

/// What `purge --dry-run` reports: the partitions old enough to drop, each with its
/// estimated rows and unfinished chunks (a partition with any is kept).
pub async fn plan(
    store: &Store,
    older_than: Duration,
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let before = cutoff(older_than);
    let mut plan = Vec::new();
    for partition in store.partitions().await? {
        if partition.high.is_some_and(|high| high <= before) {
            let (rows, unfinished) = store.partition_status(&partition).await?;
            plan.push((partition.name, rows, unfinished));
        }
    }
    Ok(plan)
}

/// Applies `retention` every `interval` until `stop` turns true (`PURGE_OLDER_THAN`,
/// `DEDUP_WINDOW` while serving).
pub async fn periodic(
    store: Store,
    retention: Retention,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match purge(&store, retention).await {
            Ok(Some(total)) if total != Purged::default() => log::info!(
                "purge: dropped {} partitions (~{} events), deleted {} chunks and {} failure rows, \
                 expired {} keys",
                total.dropped.len(),
                total.events,
                total.chunks,
                total.failures,
                total.keys
            ),
            Ok(Some(_)) => {}
            Ok(None) => log::info!("purge: another replica is applying retention; skipped"),
            Err(error) => log::warn!("purge failed: {error}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
