//! The reconciler: re-publishes chunks the broker confirmed (`published`) but that were never
//! finished (`forwarded` or `failed`) within `RECONCILE_AFTER`.
//!
//! A confirm only says the broker took the message. It can still disappear before the
//! forwarder finishes it: an operator purges or deletes the forward queue, a broker node loses
//! its disk, a message is dead-lettered by the delivery limit without a record, or a return
//! is attributed to the wrong publish. The database still knows the chunk is unfinished, so
//! this loop — beside the [`crate::relay`], which covers chunks never confirmed — publishes
//! it again. With both, every committed event reaches the forwarder however the broker loses it.
//!
//! **Why `RECONCILE_AFTER` is long (3 h by default).** The reconciler cannot tell a lost
//! message from one that is legitimately waiting: in a retry queue (up to 10 min per trip, and
//! `MAX_ATTEMPTS` = 12 trips ≈ 90 min before the forwarder parks the events and marks the chunk
//! `failed`), or in a long forward queue behind a slow Ncanto. Re-publishing such a chunk is
//! safe — delivery is at-least-once and the forwarder skips what it already delivered — but a
//! copy delivered while the original is still being retried can reach Ncanto twice.
//! `RECONCILE_AFTER` bounds that: only chunks unfinished for longer than it are ever duplicated,
//! so it must stay well above the whole retry schedule (3 h is twice it). Each further
//! re-publish of the same chunk waits at least as long as the chunk had existed (see
//! [`interaction_store::Store::claim_unfinished`]): a forwarder away for a day costs a few
//! copies per chunk, not one every `RECONCILE_AFTER`.
//!
//! Safe with many replicas and bounded in memory exactly like the relay (`FOR UPDATE SKIP
//! LOCKED`, a lease, the database's clock, `RELAY_BATCH_BYTES`). Each re-publish is logged
//! (chunk id, tenant, age) and counted in `ingest_reconciled_chunks_total`.

use std::time::Duration;

use interaction_bus::Publisher;
use interaction_store::{ClaimLimits, Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::relay::{publish_all, set_aside_unreadable};

/// Reconciler settings.
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// How often to look.
    pub interval: Duration,
    /// How long a chunk must have stayed `published` and unfinished since its last publish.
    pub after: Duration,
    /// How long a claimed chunk is left to this replica before another may take it.
    pub lease: Duration,
    /// How much one round claims.
    pub limits: ClaimLimits,
}

/// Starts the reconciler loop; it stops when `stop` turns true.
pub fn start(
    store: Store,
    publisher: Publisher,
    config: ReconcilerConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    if let Some(longest) = interaction_bus::RETRY_DELAYS.iter().max()
        && config.after <= *longest
    {
        log::warn!(
            "RECONCILE_AFTER ({:?}) is not above the longest retry delay ({longest:?}): chunks \
             waiting in retry queues will be published again and may reach Ncanto twice",
            config.after
        );
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // Claiming while the broker is away would only churn leases.
            if !publisher.is_connected() {
                continue;
            }
            if let Err(error) = reconcile_once(&store, &publisher, &config).await {
                log::warn!("reconciler: {error}");
            }
        }
    })
}

/// Re-publishes every chunk due, round by round; returns how many were confirmed.
pub async fn reconcile_once(
    store: &Store,
    publisher: &Publisher,
    config: &ReconcilerConfig,
) -> Result<usize, StoreError> {
    let mut confirmed_total = 0;
    loop {
        let claimed = store
            .claim_unfinished(config.after, config.lease, config.limits)
            .await?;
        if claimed.chunks.is_empty() && claimed.unreadable.is_empty() {
            break;
        }
        set_aside_unreadable(store, "reconciler", &claimed.unreadable).await?;
        let tried = claimed.chunks.len();
        let confirmed = publish_all(publisher, claimed.chunks).await;
        let ids: Vec<i64> = confirmed.iter().map(|c| c.chunk_id).collect();
        // Unconfirmed ones keep their lease and are tried again once it passes.
        store.mark_republished(&ids).await?;
        metrics::counter!("ingest_reconciled_chunks_total").increment(ids.len() as u64);
        for chunk in &confirmed {
            log::warn!(
                "reconciler: re-published chunk {} of tenant {}: published {}s ago and not \
                 finished since (lost, purged or dead-lettered in the broker?)",
                chunk.chunk_id,
                chunk.tenant,
                chunk.age.as_secs()
            );
        }
        confirmed_total += ids.len();
        if ids.len() < tried {
            break;
        }
    }
    Ok(confirmed_total)
}
