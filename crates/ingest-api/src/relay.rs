//! The relay: re-publishes chunks that were committed but never confirmed by the broker —
//! because it was down, the publish queue was full, or the process died between commit and
//! confirm. With it, nothing a client got a 202 for is ever lost.
//!
//! Safe with many replicas: chunks are claimed with `FOR UPDATE SKIP LOCKED` and leased, so
//! each is re-published by one relay at a time. Ages and leases are compared with the
//! database's clock only, so replicas whose clocks drift apart still agree.
//!
//! Memory: one round holds at most `RELAY_BATCH_BYTES` of events (estimated, see
//! [`interaction_store::estimated_bytes`]) and at most [`RELAY_BATCH_CHUNKS`] chunks — or one
//! chunk, if that alone is larger.
//!
//! A chunk with a row that cannot be read back as an event is not published (sending Ncanto
//! a guess is worse than waiting): it is reported with its id, counted in
//! `ingest_relay_corrupt_chunks_total`, and leased [`UNREADABLE_RECHECK`] ahead rather than
//! marked. It thus stays `pending` — in `pending_interactions` and `ingest_unpublished_chunks`,
//! where operators see it — and is looked at (and reported) again every
//! [`UNREADABLE_RECHECK`]; once someone repairs or deletes the row it goes out by itself.
//! Every other chunk of the round is published as usual.

use std::time::Duration;

use futures_util::future::join_all;
use interaction_bus::Publisher;
use interaction_store::{ChunkToPublish, ClaimLimits, Store, StoreError, UnreadableChunk};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::outbox::publish_chunk;

/// Chunks one relay round claims at most (the byte budget usually binds first).
pub const RELAY_BATCH_CHUNKS: i64 = 100;

/// How long a chunk with an unreadable row is left alone before it is read (and reported)
/// again: often enough that a repaired row goes out soon, rarely enough that the log line
/// does not flood.
pub const UNREADABLE_RECHECK: Duration = Duration::from_secs(10 * 60);

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// How often to look.
    pub interval: Duration,
    /// How old an unpublished chunk must be; younger ones are still being published normally.
    pub after: Duration,
    /// How long a claimed chunk is left to this relay before another may take it.
    pub lease: Duration,
    /// How much one round claims.
    pub limits: ClaimLimits,
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
) -> Result<usize, StoreError> {
    let mut confirmed_total = 0;
    loop {
        let claimed = store
            .claim_unpublished(config.after, config.lease, config.limits)
            .await?;
        if claimed.chunks.is_empty() && claimed.unreadable.is_empty() {
            break;
        }
        set_aside_unreadable(store, "relay", &claimed.unreadable).await?;
        let tried = claimed.chunks.len();
        let confirmed = publish_all(publisher, claimed.chunks).await;
        let ids: Vec<i64> = confirmed.iter().map(|c| c.chunk_id).collect();
        store.mark_published(&ids).await?;
        metrics::counter!("ingest_relay_republished_total").increment(ids.len() as u64);
        if tried > 0 {
            log::info!(
                "relay: re-published {} of {tried} unconfirmed chunks",
                ids.len()
            );
        }
        confirmed_total += ids.len();
        // A round that could not publish everything waits for the next interval.
        if ids.len() < tried {
            break;
        }
    }
    Ok(confirmed_total)
}

/// A chunk the broker confirmed, as it was claimed (without its events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// The chunk.
    pub chunk_id: i64,
    /// Whose events.
    pub tenant: String,
    /// How long it had waited when claimed (database clock).
    pub age: Duration,
}

/// Publishes claimed chunks concurrently; returns those the broker confirmed.
pub async fn publish_all(publisher: &Publisher, chunks: Vec<ChunkToPublish>) -> Vec<Confirmed> {
    let results = join_all(chunks.into_iter().map(|chunk| async move {
        let confirmed = Confirmed {
            chunk_id: chunk.chunk_id,
            tenant: chunk.tenant,
            age: chunk.age,
        };
        publish_chunk(
            publisher,
            confirmed.chunk_id,
            &confirmed.tenant,
            chunk.events,
        )
        .await
        .then_some(confirmed)
    }))
    .await;
    results.into_iter().flatten().collect()
}

/// Reports each chunk with an unreadable row (log line with its id, metric) and leases it
/// [`UNREADABLE_RECHECK`] ahead so that the chunks behind it go on. `by` names the caller in
/// the log line and the metric's label.
pub async fn set_aside_unreadable(
    store: &Store,
    by: &'static str,
    unreadable: &[UnreadableChunk],
) -> Result<(), StoreError> {
    if unreadable.is_empty() {
        return Ok(());
    }
    for chunk in unreadable {
        log::error!(
            "{by}: chunk {} of tenant {} (waiting {}s) is not published: {}; it stays as it is \
             and is read again in {}s — repair or delete the row",
            chunk.chunk_id,
            chunk.tenant,
            chunk.age.as_secs(),
            chunk.reason,
            UNREADABLE_RECHECK.as_secs(),
        );
    }
    metrics::counter!("ingest_relay_corrupt_chunks_total", "by" => by)
        .increment(unreadable.len() as u64);
    let ids: Vec<i64> = unreadable.iter().map(|c| c.chunk_id).collect();
    store.extend_lease(&ids, UNREADABLE_RECHECK).await?;
    Ok(())
}
