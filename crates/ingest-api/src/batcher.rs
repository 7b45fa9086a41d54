//! The write batcher: concurrent requests share one database write.
//!
//! A request hands its normalized events to the queue and waits. A few writer tasks each take
//! whatever is queued — waiting at most a short linger for more when the queue runs dry, up to
//! a cap of events — and write it as one statement per tenant (one transaction in all). Only
//! after the commit does each request get its answer, so a 202 always means "stored". Single
//! event clients thus cost almost what batch clients cost: the commit, not the event, is the
//! unit of work.
//!
//! The queue is bounded twice, by semaphores: in events (which sizes the writes) and in
//! estimated bytes ([`interaction_store::estimated_bytes`]: events range from ~0.5 KiB to
//! ~15.5 KiB, so a count alone would let memory vary thirtyfold). When writes cannot keep up,
//! requests wait for room, then fail with 503 — memory never grows without bound.
//!
//! After a commit, each new chunk goes to the outbox publisher; the response does not wait
//! for the broker.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use interaction_core::Event;
use interaction_store::{Store, estimated_chunk_bytes};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::auth::Tenant;
use crate::outbox::{NotQueued, PublishQueue};

/// Tuning of the batcher.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Most events in one write.
    pub max_events: usize,
    /// How long a writer waits for more requests when the queue is empty.
    pub linger: Duration,
    /// Concurrent writes.
    pub writers: usize,
    /// Events that may wait in the queue.
    pub queue_events: usize,
    /// Estimated bytes of events that may wait in the queue.
    pub queue_bytes: usize,
    /// How long a request waits for room in the queue.
    pub queue_timeout: Duration,
    /// How long a queued request waits for its write to be answered. Past it the request
    /// gets 503 "outcome unknown" (a writer may still be holding its events) instead of
    /// hanging on a database that accepts connections and never answers.
    pub answer_timeout: Duration,
}

/// What a write did with a request's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Events stored.
    pub stored: usize,
    /// Positions (in the submitted list) of events skipped as duplicates of a stored
    /// `eventId`.
    pub duplicates: Vec<usize>,
}

/// Why events were not stored.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The queue stayed full for the whole wait.
    #[error("the write queue is full")]
    QueueFull,
    /// The database could not be reached; nothing was written.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection was lost, or the database stopped answering, after the write was sent
    /// (e.g. during COMMIT): the events may or may not be stored.
    #[error("database write outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The write failed for another reason.
    #[error("database write failed: {0}")]
    Failed(String),
    /// The service is stopping.
    #[error("the service is shutting down")]
    ShuttingDown,
}

struct WriteRequest {
    tenant: Tenant,
    events: Vec<Event>,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
    /// Room in the queue (events, bytes), given back when the write is done.
    _room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// Handle for submitting events. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::UnboundedSender<WriteRequest>,
    room: Room,
    config: Arc<BatcherConfig>,
}

/// Room in the write queue: one semaphore counts events, the other estimated bytes.
#[derive(Clone)]
struct Room {
    events: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
}

impl Room {
    /// Waits for room for `events`; a request larger than the whole queue takes all of it.
    async fn reserve(
        &self,
        config: &BatcherConfig,
        events: &[Event],
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), tokio::sync::AcquireError> {
        let count = permits(events.len(), config.queue_events);
        let bytes = permits(estimated_chunk_bytes(events), config.queue_bytes);
        // Always events first, then bytes: with one order, waiters never deadlock.
        let events = self.events.clone().acquire_many_owned(count).await?;
        let bytes = self.bytes.clone().acquire_many_owned(bytes).await?;
        Ok((events, bytes))
    }

    fn close(&self) {
        self.events.close();
        self.bytes.close();
    }
}

/// Permits `wanted` takes in a semaphore of `capacity`: at least one, at most all of them.
fn permits(wanted: usize, capacity: usize) -> u32 {
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
    u32::try_from(wanted).unwrap_or(u32::MAX).clamp(1, capacity)
}

/// The running writers.
pub struct Writers {
    tasks: JoinSet<()>,
    stop: watch::Sender<bool>,
    room: Room,
}

impl Batcher {
    /// Starts the writers.
    pub fn start(store: Store, publish: PublishQueue, config: BatcherConfig) -> (Self, Writers) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let room = Room {
            events: Arc::new(Semaphore::new(
                permits(usize::MAX, config.queue_events) as usize
            )),
            bytes: Arc::new(Semaphore::new(
                permits(usize::MAX, config.queue_bytes) as usize
            )),
        };
        let (stop, stopped) = watch::channel(false);
        let config = Arc::new(config);
        let mut tasks = JoinSet::new();
        for _ in 0..config.writers.max(1) {
            tasks.spawn(writer(
                receiver.clone(),
                store.clone(),
                publish.clone(),
                config.clone(),
                stopped.clone(),
            ));
        }
        let batcher = Self {
            queue,
            room: room.clone(),
            config,
        };
        (batcher, Writers { tasks, stop, room })
    }

    /// Stores `events` for `tenant`; returns once they are committed (or not).
    pub async fn write(
        &self,
        tenant: Tenant,
        events: Vec<Event>,
    ) -> Result<WriteOutcome, WriteError> {
        // A single request larger than the whole queue still gets in, alone.
        let room = match tokio::time::timeout(
            self.config.queue_timeout,
            self.room.reserve(&self.config, &events),
        )
        .await
        {
            Err(_) => {
                metrics::counter!("ingest_write_queue_full_total").increment(1);
                return Err(WriteError::QueueFull);
            }
            Ok(Err(_closed)) => return Err(WriteError::ShuttingDown),
            Ok(Ok(room)) => room,
        };
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(WriteRequest {
                tenant,
                events,
                reply,
                _room: room,
            })
            .map_err(|_| WriteError::ShuttingDown)?;
        match tokio::time::timeout(self.config.answer_timeout, answer).await {
            Ok(answer) => answer.unwrap_or(Err(WriteError::ShuttingDown)),
            Err(_) => {
                metrics::counter!("ingest_write_answer_timeouts_total").increment(1);
                Err(WriteError::OutcomeUnknown(format!(
                    "no answer from the write path within {:?}",
                    self.config.answer_timeout
                )))
            }
        }
    }
}

impl Writers {
    /// Refuses new writes, writes what is queued, and waits for the writers to finish.
    pub async fn shutdown(mut self) {
        self.room.close();
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn writer(
    queue: Arc<Mutex<mpsc::UnboundedReceiver<WriteRequest>>>,
    store: Store,
    publish: PublishQueue,
    config: Arc<BatcherConfig>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let batch = {
            let mut queue = queue.lock().await;
            let first = tokio::select! {
                request = queue.recv() => request,
                _ = stopped.wait_for(|s| *s) => queue.try_recv().ok(),
            };
            let Some(first) = first else {
                return; // stopping and nothing left, or every sender gone
            };
            let mut count = first.events.len();
            let mut batch = vec![first];
            // Take what is already queued, then linger briefly for more.
            let deadline = tokio::time::Instant::now() + config.linger;
            while count < config.max_events {
                let next = match queue.try_recv() {
                    Ok(request) => Some(request),
                    Err(_) if config.linger.is_zero() || *stopped.borrow() => None,
                    Err(_) => tokio::time::timeout_at(deadline, queue.recv())
                        .await
                        .ok()
                        .flatten(),
                };
                let Some(next) = next else { break };
                count += next.events.len();
                batch.push(next);
            }
            batch
        };
        // A request whose caller stopped waiting (deadline passed, client gone) is not
        // written: its caller was not told "stored", so nothing is lost by leaving it out.
        let batch: Vec<WriteRequest> = batch.into_iter().filter(|r| !r.reply.is_closed()).collect();
        if batch.is_empty() {
            continue;
        }
        write_batch(&store, &publish, batch).await;
    }
}

/// Writes one batch of requests and answers each.
async fn write_batch(store: &Store, publish: &PublishQueue, batch: Vec<WriteRequest>) {
    // Group by tenant, keeping arrival order: one chunk (and one AMQP message) per tenant.
    let mut tenants: Vec<(Tenant, Vec<(usize, usize)>)> = Vec::new();
    for (r, request) in batch.iter().enumerate() {
        let slot = match tenants.iter().position(|(t, _)| *t == request.tenant) {
            Some(slot) => slot,
            None => {
                tenants.push((request.tenant.clone(), Vec::new()));
                tenants.len() - 1
            }
        };
        tenants[slot]
            .1
            .extend((0..request.events.len()).map(|e| (r, e)));
    }
    let groups: Vec<(&str, Vec<&Event>)> = tenants
        .iter()
        .map(|(tenant, positions)| {
            let events = positions
                .iter()
                .map(|&(r, e)| &batch[r].events[e])
                .collect();
            (tenant.as_ref(), events)
        })
        .collect();
    let total: usize = groups.iter().map(|(_, events)| events.len()).sum();

    let started = Instant::now();
    let result = store.insert_chunks(&groups).await;
    metrics::histogram!("ingest_db_write_seconds").record(started.elapsed().as_secs_f64());
    metrics::histogram!("ingest_write_batch_events").record(total as f64);
    metrics::histogram!("ingest_write_batch_requests").record(batch.len() as f64);
    drop(groups);

    let inserted = match result {
        Ok(inserted) => inserted,
        Err(error) => {
            let unavailable = error.is_unavailable();
            if unavailable {
                log::warn!("database write of {total} events failed: {error}");
            } else {
                log::error!("database write of {total} events failed: {error} {error:?}");
            }
            let unknown = error.outcome_unknown();
            for request in batch {
                let error = if unknown {
                    WriteError::OutcomeUnknown(error.to_string())
                } else if unavailable {
                    WriteError::Unavailable(error.to_string())
                } else {
                    WriteError::Failed(error.to_string())
                };
                let _ = request.reply.send(Err(error));
            }
            return;
        }
    };

    // Which events were stored: those without an eventId, and the first occurrence of each
    // eventId the database reports as written. The rest were duplicates.
    let mut outcomes: Vec<WriteOutcome> = batch
        .iter()
        .map(|_| WriteOutcome {
            stored: 0,
            duplicates: Vec::new(),
        })
        .collect();
    let mut slots: Vec<Vec<Option<Event>>> = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for request in batch {
        slots.push(request.events.into_iter().map(Some).collect());
        replies.push(request.reply);
    }
    let mut jobs = Vec::new();
    for ((tenant, positions), chunk) in tenants.into_iter().zip(inserted) {
        let mut written: HashMap<&str, ()> = chunk
            .inserted_ids
            .iter()
            .map(|id| (id.as_str(), ()))
            .collect();
        let mut events = Vec::with_capacity(usize::try_from(chunk.inserted).unwrap_or(0));
        for (r, e) in positions {
            let stored = match slots[r][e].as_ref().and_then(|ev| ev.event_id.as_deref()) {
                None => true,
                Some(id) => written.remove(id).is_some(),
            };
            if stored {
                outcomes[r].stored += 1;
                if let Some(event) = slots[r][e].take() {
                    events.push(event);
                }
            } else {
                outcomes[r].duplicates.push(e);
            }
        }
        if chunk.inserted > 0 {
            // One series per tenant of a configured API key (`API_KEYS`): bounded by the
            // configuration, never by clients or events. Counted per chunk, not per event.
            metrics::counter!("ingest_events_accepted_total", "tenant" => tenant.to_string())
                .increment(u64::try_from(chunk.inserted).unwrap_or(0));
        }
        if let Some(chunk_id) = chunk.chunk_id {
            jobs.push((chunk_id, tenant, events));
        }
    }
    let stored: usize = outcomes.iter().map(|o| o.stored).sum();
    let duplicates: usize = outcomes.iter().map(|o| o.duplicates.len()).sum();
    metrics::counter!("ingest_events_stored_total").increment(stored as u64);
    metrics::counter!("ingest_events_duplicate_total").increment(duplicates as u64);
    for (reply, outcome) in replies.into_iter().zip(outcomes) {
        let _ = reply.send(Ok(outcome));
    }
    for (chunk_id, tenant, events) in jobs {
        // Never wait for the publisher: a chunk it has no room for stays `pending` and the
        // relay publishes it later.
        if let Err(error) = publish.try_send(chunk_id, tenant, events) {
            log::debug!("chunk {chunk_id} left to the relay: {error}");
            if error == NotQueued::Full {
                metrics::counter!("ingest_publish_deferred_total").increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_takes_at_least_one_permit_and_at_most_the_whole_queue() {
        // (wanted, capacity, permits)
        let cases = [
            (0, 10, 1),
            (3, 10, 3),
            (10, 10, 10),
            (11, 10, 10),
            (5, 0, 1),
            (usize::MAX, usize::MAX, u32::MAX),
        ];
        for (wanted, capacity, want) in cases {
            assert_eq!(permits(wanted, capacity), want, "{wanted} of {capacity}");
        }
    }
}
