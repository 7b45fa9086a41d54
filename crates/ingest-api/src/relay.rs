//! The relay: re-publishes chunks that were committed but never confirmed by the broker —
//! because it was down, the publish queue was full, or the process died between commit and
//! confirm. With it, nothing a client got a 202 for is ever lost.
//!
//! Safe with many replicas: chunks are claimed with `FOR UPDATE SKIP LOCKED` and leased, so
//! each is re-published by one relay at a time.

use std::time::Duration;

use futures_util::future::join_all;
use interaction_bus::Publisher;
use interaction_store::Store;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::outbox::publish_chunk;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often to look.
    pub interval: Duration,
    /// How old an unpublished chunk must be; younger ones are still being published normally.
    pub after: Duration,
    /// How long a claimed chunk is left to this relay before another may take it.
    pub lease: Duration,
    /// Chunks claimed per round.
    pub batch: i64,
}

/// Starts the relay loop; it stops when `stop` turns true.
pub fn start(
    store: Store,
    publisher: Publisher,
    config: RelayConfig,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(config.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            // Refresh the backlog gauges here, not only when someone asks /health.
            if let Ok(pending) = store.pending_event_count().await {
                metrics::gauge!("ingest_pending_interactions").set(pending as f64);
            }
            match store.unpublished_chunk_count().await {
                Ok(n) => metrics::gauge!("ingest_unpublished_chunks").set(n as f64),
                Err(error) => {
                    log::debug!("relay: database unavailable: {error}");
                    continue;
                }
            }
            // Claiming while the broker is away would only churn leases.
            if !publisher.is_connected() {
                continue;
            }
            if let Err(error) = relay_once(&store, &publisher, &config).await {
                log::warn!("relay: {error}");
            }
        }
    })
}

/// Re-publishes every chunk due, round by round; returns how many were confirmed.
pub async fn relay_once(
    store: &Store,
    publisher: &Publisher,
    config: &RelayConfig,
) -> Result<usize, interaction_store::StoreError> {
    let mut confirmed_total = 0;
    loop {
        let chunks = store
            .claim_unpublished(config.after, config.lease, config.batch)
            .await?;
        if chunks.is_empty() {
            break;
        }
        let claimed = chunks.len();
        let results = join_all(chunks.into_iter().map(|chunk| async move {
            let id = chunk.chunk_id;
            publish_chunk(publisher, id, &chunk.tenant, chunk.events)
                .await
                .then_some(id)
        }))
        .await;
        let confirmed: Vec<i64> = results.into_iter().flatten().collect();
        store.mark_published(&confirmed).await?;
        metrics::counter!("ingest_relay_republished_total").increment(confirmed.len() as u64);
        log::info!(
            "relay: re-published {} of {claimed} unconfirmed chunks",
            confirmed.len()
        );
        confirmed_total += confirmed.len();
        // A round that could not publish everything waits for the next interval.
        if confirmed.len() < claimed || (claimed as i64) < config.batch {
            break;
        }
    }
    Ok(confirmed_total)
}
