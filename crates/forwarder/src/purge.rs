//! Retention: deleting forwarded events older than a cutoff, in small batches so a purge never
//! holds long locks or floods the WAL. Events of failed or unfinished chunks are kept. One
//! replica purges at a time (a PostgreSQL advisory lock, [`RETENTION_LOCK`]): the others skip
//! their round rather than delete beside it, fighting over the same rows.

use std::time::Duration;

use interaction_store::{Purged, RETENTION_LOCK, Store, StoreError};
use tokio::sync::watch;

/// Deletes every forwarded event received more than `older_than` ago, `batch` rows per
/// statement; logs progress. Returns the totals, or `None` without deleting anything when
/// another process holds the retention lock (it is purging now).
pub async fn purge(
    store: &Store,
    older_than: Duration,
    batch: i64,
) -> Result<Option<Purged>, StoreError> {
    let Some(_lock) = store.try_lock(RETENTION_LOCK).await? else {
        return Ok(None);
    };
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::from_std(older_than).unwrap_or_default();
    let mut total = Purged::default();
    loop {
        let pass = store.purge_forwarded(cutoff, batch.max(1)).await?;
        total.events += pass.events;
        total.chunks += pass.chunks;
        if pass == Purged::default() {
            break;
        }
        log::info!(
            "purge: {} events and {} chunks deleted so far (received before {cutoff})",
            total.events,
            total.chunks
        );
    }
    metrics::counter!("forwarder_purged_events_total").increment(total.events.max(0) as u64);
    Ok(Some(total))
}

/// What `purge --dry-run` reports: the events that would go.
pub async fn count(store: &Store, older_than: Duration) -> Result<i64, StoreError> {
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::from_std(older_than).unwrap_or_default();
    store.count_purgeable(cutoff).await
}

/// Purges every `interval` until `stop` turns true (`PURGE_OLDER_THAN` while serving).
pub async fn periodic(
    store: Store,
    older_than: Duration,
    interval: Duration,
    batch: i64,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match purge(&store, older_than, batch).await {
            Ok(Some(total)) if total.events > 0 => {
                log::info!(
                    "purge: deleted {} events, {} chunks",
                    total.events,
                    total.chunks
                )
            }
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
