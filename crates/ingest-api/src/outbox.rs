//! Publishing committed chunks to RabbitMQ, and marking them `published` once confirmed.
//!
//! Publishes run concurrently (many confirms in flight, bounded); confirmed chunk ids are
//! marked in batches, one UPDATE per batch. A chunk whose publish fails simply stays
//! `pending`: the relay ([`crate::relay`]) publishes it again later. Nothing here ever blocks
//! a request.
//!
//! The queue in front of the publisher is bounded in bytes, not chunks: a chunk holds from one
//! to a few thousand events, so a count says little about memory. Each queued chunk holds
//! permits for its estimated size ([`interaction_store::estimated_chunk_bytes`]) until its
//! publish is over; a chunk that finds no room is not queued at all and stays `pending` for
//! the relay, which costs a delay of `RELAY_AFTER`, never an event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use interaction_bus::{Envelope, Publisher};
use interaction_core::Event;
use interaction_store::{Store, estimated_chunk_bytes};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::auth::Tenant;

/// A committed chunk to publish, with its room in the queue.
#[derive(Debug)]
pub struct PublishJob {
    /// The chunk.
    pub chunk_id: i64,
    /// Whose events.
    pub tenant: Tenant,
    /// The events stored in it.
    pub events: Vec<Event>,
    /// Its estimated bytes in the queue, given back when its publish is over.
    _room: OwnedSemaphorePermit,
}

/// The sending side of the publish queue. Cheap to clone; the queue closes when every clone
/// is gone.
#[derive(Debug, Clone)]
pub struct PublishQueue {
    jobs: mpsc::UnboundedSender<PublishJob>,
    room: Arc<Semaphore>,
    capacity: u32,
}

/// The receiving side of the publish queue, for [`start`].
#[derive(Debug)]
pub struct PublishJobs(mpsc::UnboundedReceiver<PublishJob>);

/// Why a chunk was not queued; it stays `pending` for the relay either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotQueued {
    /// The queue holds as many bytes as it may.
    #[error("the publish queue is full")]
    Full,
    /// The publisher is stopping.
    #[error("the publish queue is closed")]
    Closed,
}

impl PublishQueue {
    /// A queue holding at most `capacity_bytes` of estimated chunk bytes (capped at 4 GiB,
    /// the most a semaphore acquisition can ask for; at least one byte).
    pub fn bounded(capacity_bytes: usize) -> (Self, PublishJobs) {
        let capacity = u32::try_from(capacity_bytes).unwrap_or(u32::MAX).max(1);
        let (jobs, receiver) = mpsc::unbounded_channel();
        let queue = Self {
            jobs,
            room: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
        };
        (queue, PublishJobs(receiver))
    }

    /// Queues a committed chunk if there is room for its estimated bytes, without waiting. A
    /// chunk larger than the whole queue is let in when the queue is empty (it takes all of
    /// it), so that large chunks are not left to the relay every time.
    pub fn try_send(
        &self,
        chunk_id: i64,
        tenant: Tenant,
        events: Vec<Event>,
    ) -> Result<(), NotQueued> {
        let wanted = chunk_permits(estimated_chunk_bytes(&events), self.capacity);
        let room =
            self.room
                .clone()
                .try_acquire_many_owned(wanted)
                .map_err(|error| match error {
                    tokio::sync::TryAcquireError::NoPermits => NotQueued::Full,
                    tokio::sync::TryAcquireError::Closed => NotQueued::Closed,
                })?;
        self.jobs
            .send(PublishJob {
                chunk_id,
                tenant,
                events,
                _room: room,
            })
            .map_err(|_| NotQueued::Closed)
    }
}

/// Permits a chunk of `bytes` takes in a queue of `capacity`: its size, but never more than
/// the whole queue (so that it can get in at all) and never zero (so that the count of queued
/// chunks is bounded too).
fn chunk_permits(bytes: usize, capacity: u32) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX).clamp(1, capacity)
}

/// Publishes of one process that may await their confirm at once.
const MAX_IN_FLIGHT: usize = 256;
/// Confirmed chunks are marked once per this interval, or as soon as [`MARK_BATCH`] are
/// waiting. Marking is not urgent (the relay leaves a chunk alone for `RELAY_AFTER`), and each
/// mark is an UPDATE and a commit: marking each confirm as it came doubled the commits of the
/// single-event path (one mark per ~1.4 chunks, measured), so marks wait and share statements.
const MARK_EVERY: Duration = Duration::from_millis(100);
const MARK_BATCH: usize = 1000;

/// Starts the publishing task; it ends once every sender of `jobs` is gone and every
/// publish it started has finished and been marked.
pub fn start(publisher: Publisher, store: Store, jobs: PublishJobs) -> JoinHandle<()> {
    let mut jobs = jobs.0;
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
                let PublishJob {
                    chunk_id,
                    tenant,
                    events,
                    _room,
                } = job;
                if publish_chunk(&publisher, chunk_id, &tenant, events).await {
                    let _ = marks.send(chunk_id);
                }
                // Its room in the queue is given back with `_room`, only now: the events
                // and their encoding were held until the publish was over.
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

async fn mark_published(store: Store, marked: mpsc::UnboundedReceiver<i64>) {
    gather_marks(marked, |ids: Vec<i64>| {
        let store = store.clone();
        async move {
            if let Err(error) = store.mark_published(&ids).await {
                // The chunks stay `pending`; the relay re-publishes them and the forwarder
                // skips what it already forwarded.
                log::warn!("could not mark {} chunks published: {error}", ids.len());
            }
        }
    })
    .await;
}

/// Hands confirmed chunk ids to `mark` in batches: from the first id, gathers for at most
/// [`MARK_EVERY`] or [`MARK_BATCH`] ids, whichever comes first; one batch at a time. Returns
/// once every sender is gone and every id was handed over.
async fn gather_marks<F: Future<Output = ()>>(
    mut marked: mpsc::UnboundedReceiver<i64>,
    mut mark: impl FnMut(Vec<i64>) -> F,
) {
    let mut open = true;
    while open {
        let mut ids = Vec::with_capacity(MARK_BATCH);
        match marked.recv().await {
            Some(id) => ids.push(id),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + MARK_EVERY;
        while ids.len() < MARK_BATCH {
            match tokio::time::timeout_at(deadline, marked.recv()).await {
                Ok(Some(id)) => ids.push(id),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        mark(ids).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_takes_its_estimated_bytes_within_the_queue() {
        // (estimated bytes, queue capacity, permits)
        let cases = [
            (0, 1024, 1),
            (1, 1024, 1),
            (600, 1024, 600),
            (1024, 1024, 1024),
            (5000, 1024, 1024),
            (usize::MAX, u32::MAX, u32::MAX),
        ];
        for (bytes, capacity, want) in cases {
            assert_eq!(
                chunk_permits(bytes, capacity),
                want,
                "{bytes} in {capacity}"
            );
        }
    }

    #[tokio::test]
    async fn confirms_are_marked_in_batches_not_one_by_one() {
        // (ids confirmed at once, batches expected)
        let cases = [
            (1, vec![1]),
            (50, vec![50]),
            (MARK_BATCH + 5, vec![MARK_BATCH, 5]),
        ];
        for (n, want) in cases {
            let (sender, receiver) = mpsc::unbounded_channel();
            for id in 0..n as i64 {
                sender.send(id).unwrap();
            }
            drop(sender);
            let mut batches = Vec::new();
            gather_marks(receiver, |ids| {
                batches.push(ids);
                std::future::ready(())
            })
            .await;
            let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
            assert_eq!(sizes, want, "{n} confirms");
            let all: Vec<i64> = batches.concat();
            assert_eq!(
                all,
                (0..n as i64).collect::<Vec<_>>(),
                "every id once, in order"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn confirms_that_trickle_in_share_a_mark_within_mark_every() {
        let (sender, receiver) = mpsc::unbounded_channel();
        let marker = tokio::spawn(async move {
            let mut batches = Vec::new();
            gather_marks(receiver, |ids| {
                batches.push(ids);
                std::future::ready(())
            })
            .await;
            batches
        });
        // Five confirms 10 ms apart share one mark; one that comes after MARK_EVERY has
        // passed gets the next.
        for id in 0..5 {
            sender.send(id).unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(MARK_EVERY).await;
        sender.send(5).unwrap();
        drop(sender);
        let batches = marker.await.unwrap();
        assert_eq!(batches, [vec![0, 1, 2, 3, 4], vec![5]]);
    }

    fn chunk(events: usize) -> Vec<Event> {
        let event: Event = serde_json::from_value(serde_json::json!({
            "timestamp": "2026-01-01T00:00:00Z", "subscriber": "u", "assetId": "a",
            "interaction": "play", "ratingEquivalent": 0.5, "setting": {"device": "web"}
        }))
        .unwrap();
        vec![event; events]
    }

    #[tokio::test]
    async fn the_queue_refuses_chunks_beyond_its_bytes_and_takes_them_again_once_published() {
        let one = estimated_chunk_bytes(&chunk(1));
        let (queue, mut jobs) = PublishQueue::bounded(3 * one);
        let tenant: Tenant = "t".into();
        assert_eq!(queue.try_send(1, tenant.clone(), chunk(2)), Ok(()));
        assert_eq!(
            queue.try_send(2, tenant.clone(), chunk(2)),
            Err(NotQueued::Full)
        );
        assert_eq!(queue.try_send(3, tenant.clone(), chunk(1)), Ok(()));
        let first = jobs.0.recv().await.unwrap();
        assert_eq!(first.chunk_id, 1);
        assert_eq!(
            queue.try_send(4, tenant.clone(), chunk(1)),
            Err(NotQueued::Full),
            "room comes back when the publish is over, not when it is taken off the queue"
        );
        drop(first);
        assert_eq!(queue.try_send(4, tenant.clone(), chunk(2)), Ok(()));
        // Larger than the whole queue: let in alone, once it is empty.
        assert_eq!(
            queue.try_send(5, tenant.clone(), chunk(10)),
            Err(NotQueued::Full)
        );
        while let Ok(job) = jobs.0.try_recv() {
            drop(job);
        }
        assert_eq!(queue.try_send(5, tenant.clone(), chunk(10)), Ok(()));
        // The publisher gone, nothing is queued any more.
        drop(jobs);
        assert_eq!(queue.try_send(6, tenant, chunk(1)), Err(NotQueued::Closed));
    }
}
