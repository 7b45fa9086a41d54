//! Publishing committed chunks to RabbitMQ, and marking them `published` once confirmed.
//!
//! Publishes run concurrently (many confirms in flight, bounded); confirmed chunk ids are
//! marked in batches, one UPDATE per batch. A chunk whose publish fails simply stays
//! `pending`: the relay ([`crate::relay`]) publishes it again later. Nothing here ever blocks
//! a request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use interaction_bus::{Envelope, Publisher};
use interaction_core::Event;
use interaction_store::Store;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::auth::Tenant;

/// A committed chunk to publish.
#[derive(Debug)]
pub struct PublishJob {
    /// The chunk.
    pub chunk_id: i64,
    /// Whose events.
    pub tenant: Tenant,
    /// The events stored in it.
    pub events: Vec<Event>,
}

/// Publishes of one process that may await their confirm at once.
const MAX_IN_FLIGHT: usize = 256;
/// Marks are written at least this often, or when this many are waiting.
const MARK_EVERY: Duration = Duration::from_millis(20);
const MARK_BATCH: usize = 500;

/// Starts the publishing task; it ends once every sender of `jobs` is gone and every
/// publish it started has finished and been marked.
pub fn start(
    publisher: Publisher,
    store: Store,
    mut jobs: mpsc::Receiver<PublishJob>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (marks, marked) = mpsc::unbounded_channel();
        let marker = tokio::spawn(mark_published(store, marked));
        let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        while let Some(job) = jobs.recv().await {
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let publisher = publisher.clone();
            let marks = marks.clone();
            tokio::spawn(async move {
                if publish_chunk(&publisher, job.chunk_id, &job.tenant, job.events).await {
                    let _ = marks.send(job.chunk_id);
                }
                drop(permit);
            });
        }
        // Wait for the publishes still in flight, then let the marker drain and stop.
        let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        drop(marks);
        let _ = marker.await;
    })
}

/// Publishes one chunk and records how it went; true when the broker confirmed it.
pub async fn publish_chunk(
    publisher: &Publisher,
    chunk_id: i64,
    tenant: &str,
    events: Vec<Event>,
) -> bool {
    let envelope = Envelope::new(tenant, chunk_id, events);
    let started = Instant::now();
    match publisher.publish(&envelope).await {
        Ok(()) => {
            metrics::histogram!("ingest_publish_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("ingest_chunks_published_total").increment(1);
            true
        }
        Err(error) => {
            metrics::counter!("ingest_publish_failures_total").increment(1);
            log::debug!("chunk {chunk_id} not published ({error}); the relay will retry it");
            false
        }
    }
}

async fn mark_published(store: Store, mut marked: mpsc::UnboundedReceiver<i64>) {
    let mut ids = Vec::with_capacity(MARK_BATCH);
    loop {
        let open = tokio::select! {
            id = marked.recv() => match id {
                Some(id) => { ids.push(id); true }
                None => false,
            },
            _ = tokio::time::sleep(MARK_EVERY), if !ids.is_empty() => true,
        };
        while ids.len() < MARK_BATCH {
            match marked.try_recv() {
                Ok(id) => ids.push(id),
                Err(_) => break,
            }
        }
        if !ids.is_empty() && (!open || ids.len() >= MARK_BATCH || marked.is_empty()) {
            if let Err(error) = store.mark_published(&ids).await {
                // The chunks stay `pending`; the relay re-publishes them and the forwarder
                // skips what it already forwarded.
                log::warn!("could not mark {} chunks published: {error}", ids.len());
            }
            ids.clear();
        }
        if !open {
            return;
        }
    }
}
