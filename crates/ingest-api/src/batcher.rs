//! The write batcher: concurrent requests share one database write.
//!
//! A request hands its normalized events to the queue and waits. One dispatcher task forms
//! groups and starts their writes — one statement per tenant (one transaction in all). Only
//! after the commit does each request get its answer, so a 202 always means "stored".
//!
//! Groups form by pipelining, never by waiting on a clock:
//! - when no write is in flight, whatever is queued is written at once — at low load a
//!   request costs one database round trip, with no linger;
//! - while a write is in flight, the next group gathers; it is written as soon as that write
//!   is done — so groups grow exactly as fast as the database is busy, and single-event
//!   clients share commits (and chunks, and AMQP messages) as load rises;
//! - a further write starts beside those in flight (up to `writers`) only for a full group of
//!   `max_events`: large batches keep several commits going, small requests do not split
//!   into many small chunks, each of which costs a commit, an AMQP message and a mark.
//!
//! The queue is bounded twice, by semaphores: in events (which sizes the writes) and in
//! estimated bytes ([`interaction_store::estimated_bytes`]: events range from ~0.5 KiB to
//! ~15.5 KiB, so a count alone would let memory vary thirtyfold). When writes cannot keep up,
//! requests wait for room, then fail with 503 — memory never grows without bound.
//!
//! After a commit, each new chunk goes to the outbox publisher; the response does not wait
//! for the broker.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use interaction_core::Event;
use interaction_store::{Store, estimated_chunk_bytes};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::auth::Tenant;
use crate::outbox::{NotQueued, PublishQueue};

/// Tuning of the batcher.
#[derive(Debug, Clone)]
pub struct BatcherConfig {
    /// Most events in one write (a single larger request is written alone).
    pub max_events: usize,
    /// Most writes in flight at once; beyond the first, only full groups start one.
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
    /// Waits for `wanted` room (see [`wanted`]).
    async fn reserve(
        &self,
        (count, bytes): (u32, u32),
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), tokio::sync::AcquireError> {
        // Always events first, then bytes: with one order, waiters never deadlock.
        let events = self.events.clone().acquire_many_owned(count).await?;
        let bytes = self.bytes.clone().acquire_many_owned(bytes).await?;
        Ok((events, bytes))
    }

    /// [`Room::reserve`] without waiting: `None` when either semaphore lacks room (or is
    /// closed); nothing is held then.
    fn try_reserve(
        &self,
        (count, bytes): (u32, u32),
    ) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let events = self.events.clone().try_acquire_many_owned(count).ok()?;
        let bytes = self.bytes.clone().try_acquire_many_owned(bytes).ok()?;
        Some((events, bytes))
    }

    fn close(&self) {
        self.events.close();
        self.bytes.close();
    }
}

/// The room `events` take in the queue: (event permits, byte permits); a request larger than
/// the whole queue takes all of it.
fn wanted(config: &BatcherConfig, events: &[Event]) -> (u32, u32) {
    (
        permits(events.len(), config.queue_events),
        permits(estimated_chunk_bytes(events), config.queue_bytes),
    )
}

/// Permits `wanted` takes in a semaphore of `capacity`: at least one, at most all of them.
fn permits(wanted: usize, capacity: usize) -> u32 {
    let capacity = u32::try_from(capacity).unwrap_or(u32::MAX).max(1);
    u32::try_from(wanted).unwrap_or(u32::MAX).clamp(1, capacity)
}

/// The running dispatcher and its writes.
pub struct Writers {
    dispatcher: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
    room: Room,
}

impl Batcher {
    /// Starts the dispatcher.
    pub fn start(store: Store, publish: PublishQueue, config: BatcherConfig) -> (Self, Writers) {
        let (queue, receiver) = mpsc::unbounded_channel();
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
        let dispatcher = tokio::spawn(dispatch(receiver, store, publish, config.clone(), stopped));
        let batcher = Self {
            queue,
            room: room.clone(),
            config,
        };
        (
            batcher,
            Writers {
                dispatcher,
                stop,
                room,
            },
        )
    }

    /// Stores `events` for `tenant`; returns once they are committed (or not).
    pub async fn write(
        &self,
        tenant: Tenant,
        events: Vec<Event>,
    ) -> Result<WriteOutcome, WriteError> {
        // A single request larger than the whole queue still gets in, alone. Room is usually
        // there: take it without arming a timer, and wait (bounded) only when it is not.
        let wanted = wanted(&self.config, &events);
        let room = match self.room.try_reserve(wanted) {
            Some(room) => room,
            None => {
                match tokio::time::timeout(self.config.queue_timeout, self.room.reserve(wanted))
                    .await
                {
                    Err(_) => {
                        metrics::counter!("ingest_write_queue_full_total").increment(1);
                        return Err(WriteError::QueueFull);
                    }
                    Ok(Err(_closed)) => return Err(WriteError::ShuttingDown),
                    Ok(Ok(room)) => room,
                }
            }
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
    /// Refuses new writes, writes what is queued, and waits for every write to finish.
    pub async fn shutdown(self) {
        self.room.close();
        let _ = self.stop.send(true);
        let _ = self.dispatcher.await;
    }
}

/// Requests waiting for a write, in arrival order, with their event count.
#[derive(Default)]
struct Waiting {
    requests: VecDeque<WriteRequest>,
    events: usize,
}

impl Waiting {
    fn push(&mut self, request: WriteRequest) {
        self.events += request.events.len();
        self.requests.push_back(request);
    }

    /// The oldest requests up to `max_events` events (at least one request, however large).
    /// Requests whose caller stopped waiting (deadline passed, client gone) are dropped: their
    /// callers were not told "stored", so nothing is lost by leaving them out.
    fn take_group(&mut self, max_events: usize) -> Vec<WriteRequest> {
        let mut group = Vec::new();
        let mut count = 0;
        while let Some(next) = self.requests.front() {
            let n = next.events.len();
            if !group.is_empty() && count + n > max_events {
                break;
            }
            count += n;
            self.events -= n;
            if let Some(request) = self.requests.pop_front()
                && !request.reply.is_closed()
            {
                group.push(request);
            }
        }
        group
    }
}

/// Forms groups and starts their writes (see the module documentation for the rule); on
/// stop, writes everything still queued and waits for the writes in flight.
async fn dispatch(
    mut queue: mpsc::UnboundedReceiver<WriteRequest>,
    store: Store,
    publish: PublishQueue,
    config: Arc<BatcherConfig>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut waiting = Waiting::default();
    let mut writes: JoinSet<()> = JoinSet::new();
    let mut stopping = false;
    let writers = config.writers.max(1);
    loop {
        while let Ok(request) = queue.try_recv() {
            waiting.push(request);
        }
        while !waiting.requests.is_empty()
            && (writes.is_empty()
                || (writes.len() < writers && waiting.events >= config.max_events))
        {
            let group = waiting.take_group(config.max_events);
            if !group.is_empty() {
                writes.spawn(write_batch(store.clone(), publish.clone(), group));
            }
        }
        metrics::gauge!("ingest_write_queue_events").set(waiting.events as f64);
        metrics::gauge!("ingest_db_writes_in_flight").set(writes.len() as f64);
        if stopping && waiting.requests.is_empty() && writes.is_empty() {
            return;
        }
        tokio::select! {
            request = queue.recv(), if !stopping => match request {
                Some(request) => waiting.push(request),
                None => stopping = true, // every sender gone
            },
            Some(_) = writes.join_next(), if !writes.is_empty() => {}
            _ = stopped.wait_for(|s| *s), if !stopping => stopping = true,
            else => return,
        }
    }
}

/// Writes one batch of requests and answers each.
async fn write_batch(store: Store, publish: PublishQueue, batch: Vec<WriteRequest>) {
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
