//! Consuming the forward queue: one task per delivery (at most `PREFETCH` at once), manual
//! acks, and a reconnect loop.
//!
//! **What one delivery does.** A message carries some events of one chunk — all of them, or a
//! part (see [`interaction_bus::Positions`]). The delivery:
//! 1. asks the store which of its positions are still undone
//!    ([`interaction_store::Store::undone_positions`]) and keeps only those events: a message
//!    whose events were all handled before (a relay re-publish, a redelivery after a crash) is
//!    acknowledged without a call; one that overlaps others sends only the rest;
//! 2. sends them to Ncanto ([`deliver_chunk`]) under `DELIVERY_TIMEOUT`; a delivery cut short
//!    is a transient failure like any other;
//! 3. settles the outcome, in this order: the events to retry go to a retry queue, and the
//!    events refused (or out of attempts) to the parked queue — each a message of its own part,
//!    published with confirm; then ONE statement records the positions delivered and refused,
//!    with a failure row per refused event ([`interaction_store::Store::record_outcome`]);
//!    then the message is acknowledged.
//!
//! Publishing before recording means a crash in between redelivers the message and, at worst,
//! sends or parks some events twice — never marks anything done that is not. Recording is
//! idempotent, so doing it again is harmless.
//!
//! **When the database or the publisher is away** a delivery does not hand its message back
//! (each return counts towards the queue's delivery limit): it reports the outage, which
//! pauses consumption ([`crate::pause`]), and waits where it stopped until both are back.
//! Only errors that are not an outage — a statement the database refuses — hand the message
//! back, after a pause; on its last delivery before the broker would dead-letter it without a
//! word, it is parked by us instead, with the reason.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use interaction_bus::lapin::message::Delivery;
use interaction_bus::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use interaction_bus::lapin::types::{AMQPValue, FieldTable, LongString};
use interaction_bus::{
    DELIVERY_LIMIT, Envelope, Positions, PublishError, Publisher, Route, Topology, declare_topology,
};
use interaction_core::Event;
use interaction_runtime::reconnect_delay;
use interaction_store::{ChunkState, Failure, PartOutcome, Store, StoreError};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::deliver::{ChunkOutcome, FailedEvent, Requeue, deliver_chunk};
use crate::ncanto::NcantoClient;
use crate::pause::{Dependency, Pause, ProbeBackoff};
use crate::retry::{RetryPolicy, retry_queue_for};

/// Header counting a message's trips through the retry queues.
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header marking a message re-driven from the parked queue by an operator: its refused
/// events are tried again.
pub const REDRIVEN_HEADER: &str = "x-redriven";
/// Header saying why a message was parked.
pub const REASON_HEADER: &str = "x-park-reason";
/// Header with the last failure of a message sent to a retry queue.
pub const LAST_ERROR_HEADER: &str = "x-last-error";
/// The quorum queue's count of earlier returns of a message (set by RabbitMQ).
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// How often the consumer looks at its connection's state (see `consume_once`).
const CONNECTION_CHECK: Duration = Duration::from_secs(1);

/// How long any call to the broker (set-up, ack, nack, cancel, close) may wait for its answer
/// before the connection is taken for lost.
const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Awaits a broker call for at most BROKER_CALL_TIMEOUT. Over a connection that died while the
/// call was under way, lapin may leave it unresolved, and one unresolved ack would hold
/// `consume_once` (which waits for its deliveries before it reconnects) forever — the likely
/// cause of a fault test whose forwarder never consumed again after a broker cut, without a
/// single "reconnecting" line. So every call the consumer makes is bounded. A message whose
/// ack timed out is redelivered once the broker drops the connection: at least once, never lost.
async fn bounded<T, E>(what: &str, call: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    match tokio::time::timeout(BROKER_CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(anyhow::anyhow!(
            "{what}: no answer from RabbitMQ within {BROKER_CALL_TIMEOUT:?}"
        )),
    }
}

/// How long to wait before handing back a message the database refused to handle (not an
/// outage): without it, a refused message would bounce between broker and consumer as fast as
/// they can.
const REQUEUE_PAUSE: Duration = Duration::from_secs(2);

/// Everything a delivery needs.
pub struct Context {
    /// Chunk states and failure records.
    pub store: Store,
    /// Ncanto.
    pub client: NcantoClient,
    /// Retry policy.
    pub policy: RetryPolicy,
    /// Queue names.
    pub topology: Topology,
    /// Confirmed publishes to the retry and parked queues.
    pub publisher: Publisher,
    /// Broker URL for the consuming connection (a secret: it holds the password).
    pub amqp_url: SecretString,
    /// Extra CAs trusted for `amqps://` besides the system roots (`AMQP_CA_FILE`).
    pub amqp_ca_file: Option<PathBuf>,
    /// Deliveries at once.
    pub prefetch: u16,
    /// Deadline of one delivery's Ncanto calls.
    pub delivery_timeout: Duration,
    /// Whether the consumer is attached to the queue (for `/health` and `/readyz`).
    pub consuming: AtomicBool,
    /// Deliveries being handled (held ones included).
    pub in_flight: AtomicUsize,
    /// Whether consumption is paused because the database or the publisher is away.
    pub pause: Pause,
    /// One message of a chunk at a time in this process (see [`ChunkLocks`]).
    pub chunk_locks: ChunkLocks,
}

/// Serializes this process's handling of the messages of one chunk. Two messages of a chunk
/// can be in hand at once — the relay re-publishing a chunk whose confirm was slow, the
/// reconciler, a re-drive beside a retry — and each would read "not yet delivered" before
/// the other recorded its outcome, sending the same events twice. Taken in turn, the second
/// finds the first's positions done and sends only what is left. Replicas can still race
/// each other (delivery is at-least-once); within one process it no longer happens.
#[derive(Debug, Default)]
pub struct ChunkLocks(Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>);

/// Held while a message of the chunk is handled; the chunk's entry goes with the last one.
pub struct ChunkGuard<'a> {
    locks: &'a ChunkLocks,
    chunk_id: i64,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl ChunkLocks {
    /// Waits for this process's other messages of `chunk_id` to be handled.
    pub async fn lock(&self, chunk_id: i64) -> ChunkGuard<'_> {
        let lock = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(chunk_id)
            .or_default()
            .clone();
        ChunkGuard {
            locks: self,
            chunk_id,
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Chunks with a message in hand or waiting.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no chunk has a message in hand.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for ChunkGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.0.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(guard) = self.guard.take() else {
            return;
        };
        // The map's Arc and this guard's: nobody else holds or waits for the chunk.
        let last = Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&guard)) <= 2;
        drop(guard);
        if last {
            map.remove(&self.chunk_id);
        }
    }
}

/// Consumes until `stop` turns true, reconnecting whenever the connection is lost and pausing
/// while the database or the publisher is away. On stop, cancels the consumer, finishes the
/// deliveries in hand, and leaves the rest unacknowledged for redelivery.
pub async fn consume(context: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
    // Take no work before retries and parking can be published: otherwise the first
    // deliveries would only be held while the publisher is still connecting.
    tokio::select! {
        connected = context.publisher.wait_connected(Duration::from_secs(10)) => {
            if !connected {
                context.pause.report(Dependency::Publisher, PublishError::NotConnected);
            }
        }
        _ = stop.wait_for(|s| *s) => return,
    }
    loop {
        if *stop.borrow() {
            return;
        }
        match consume_once(&context, &mut stop, &mut failures).await {
            Ok(()) => return,
            Err(error) => {
                failures += 1;
                let delay = reconnect_delay(
                    failures,
                    Duration::from_millis(250),
                    Duration::from_secs(15),
                );
                log::warn!("consumer: {error}; reconnecting in {delay:?}");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Probes the database and the publisher while consumption is paused, and resumes it when
/// both answer; returns when `stop` turns true.
pub async fn supervise_pause(context: Arc<Context>, stop: watch::Receiver<bool>) {
    let (store, publisher) = (&context.store, &context.publisher);
    let probe = move || async move {
        store
            .ping()
            .await
            .map_err(|e| (Dependency::Database, e.to_string()))?;
        if !publisher.is_connected() {
            return Err((
                Dependency::Publisher,
                PublishError::NotConnected.to_string(),
            ));
        }
        Ok(())
    };
    crate::pause::supervise(&context.pause, ProbeBackoff::default(), probe, stop).await;
}

/// Why the consumer stopped taking deliveries.
enum Detach {
    Stopping,
    Paused,
    Failed(anyhow::Error),
}

async fn consume_once(
    context: &Arc<Context>,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> anyhow::Result<()> {
    let connection = interaction_bus::connect_named(
        &context.amqp_url,
        context.amqp_ca_file.as_deref(),
        "forwarder",
    )
    .await?;
    let channel = bounded("open a channel", connection.create_channel()).await?;
    bounded(
        "declare the topology",
        declare_topology(&channel, &context.topology),
    )
    .await?;
    // Prefetch bounds the unacknowledged messages this consumer holds: its concurrency, and
    // what is redelivered to others if it dies.
    bounded(
        "set the prefetch",
        channel.basic_qos(context.prefetch.max(1), BasicQosOptions::default()),
    )
    .await?;
    // Deliveries of this channel stop waiting when it stops being usable: their acks would
    // fail, and the broker gives them to someone else.
    let (halt, halted) = watch::channel(false);
    let mut paused = context.pause.subscribe();
    let mut tasks = JoinSet::new();
    let mut generation = 0u64;
    // The connection's own state, looked at every second: a consumer stream is not always
    // ended when the connection under it dies (seen once in a fault test under load: the
    // consumer then waited forever), so no wait below relies on the stream alone.
    let mut check = tokio::time::interval(CONNECTION_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let lost = || anyhow::anyhow!("the connection to RabbitMQ was lost");
    let result = 'channel: loop {
        // Paused: hold what is in hand, take nothing new.
        loop {
            if paused.borrow_and_update().is_none() {
                break;
            }
            tokio::select! {
                _ = paused.changed() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stop.wait_for(|s| *s) => break 'channel Ok(()),
                _ = check.tick() => if !connection.status().connected() {
                    break 'channel Err(lost());
                },
            }
        }
        generation += 1;
        let tag = format!("forwarder-{}-{generation}", std::process::id());
        let mut consumer = match bounded(
            "start consuming",
            channel.basic_consume(
                context.topology.forward_queue().as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        {
            Ok(consumer) => consumer,
            Err(error) => break Err(error),
        };
        context.consuming.store(true, Ordering::SeqCst);
        *failures = 0;
        log::info!(
            "consuming {} (prefetch {})",
            context.topology.forward_queue(),
            context.prefetch
        );
        let detach = loop {
            tokio::select! {
                delivery = consumer.next() => match delivery {
                    Some(Ok(delivery)) => {
                        let (context, halted) = (context.clone(), halted.clone());
                        tasks.spawn(async move { handle(&context, delivery, halted).await });
                    }
                    Some(Err(error)) => break Detach::Failed(error.into()),
                    None => break Detach::Failed(anyhow::anyhow!("the broker cancelled the consumer")),
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = stop.wait_for(|s| *s) => break Detach::Stopping,
                _ = paused.wait_for(Option::is_some) => break Detach::Paused,
                _ = check.tick() => if !connection.status().connected() {
                    break Detach::Failed(lost());
                },
            }
        };
        context.consuming.store(false, Ordering::SeqCst);
        match detach {
            Detach::Failed(error) => break Err(error),
            Detach::Stopping => {
                // No new deliveries; those prefetched but not started go back on close.
                let _ = tokio::time::timeout(
                    BROKER_CALL_TIMEOUT,
                    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
                )
                .await;
                log::info!("consumer cancelled; finishing {} deliveries", tasks.len());
                break Ok(());
            }
            Detach::Paused => {
                // Cancelling returns nothing: unacknowledged deliveries stay ours, uncounted.
                match tokio::time::timeout(
                    BROKER_CALL_TIMEOUT,
                    channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => break Err(error.into()),
                    Err(_) => break Err(lost()),
                }
                // What the broker sent before the cancel took effect is held like the rest.
                loop {
                    tokio::select! {
                        delivery = consumer.next() => match delivery {
                            Some(Ok(delivery)) => {
                                let (context, halted) = (context.clone(), halted.clone());
                                tasks.spawn(async move { handle(&context, delivery, halted).await });
                            }
                            Some(Err(error)) => break 'channel Err(error.into()),
                            None => break,
                        },
                        _ = stop.wait_for(|s| *s) => break 'channel Ok(()),
                        _ = check.tick() => if !connection.status().connected() {
                            break 'channel Err(lost());
                        },
                    }
                }
                log::info!(
                    "consumer cancelled while paused; holding {} deliveries",
                    tasks.len()
                );
            }
        }
    };
    context.consuming.store(false, Ordering::SeqCst);
    // Deliveries waiting for a dependency give up (unacknowledged: redelivered later); those
    // under way finish, and their acks need the channel, so it stays open until then.
    halt.send_replace(true);
    while tasks.join_next().await.is_some() {}
    // Bounded: on a connection that died, a close may never be answered.
    let _ = tokio::time::timeout(
        BROKER_CALL_TIMEOUT,
        channel.close(200, "forwarder stopping".into()),
    )
    .await;
    let _ = tokio::time::timeout(
        BROKER_CALL_TIMEOUT,
        connection.close(200, "forwarder stopping".into()),
    )
    .await;
    result
}

/// Reads a numeric header.
pub fn header_number(headers: Option<&FieldTable>, name: &str) -> Option<i64> {
    match headers?.inner().get(name)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok(),
        _ => None,
    }
}

/// Reads a boolean header.
pub fn header_flag(headers: Option<&FieldTable>, name: &str) -> bool {
    matches!(
        headers.and_then(|h| h.inner().get(name)),
        Some(AMQPValue::Boolean(true))
    )
}

/// Reads a text header.
pub fn header_text(headers: Option<&FieldTable>, name: &str) -> Option<String> {
    match headers?.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}

/// A header value of text, cut to a size brokers and UIs handle well.
pub fn text_header(text: &str) -> AMQPValue {
    let cut: String = text.chars().take(1000).collect();
    AMQPValue::LongString(LongString::from(cut))
}

struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!("forwarder_in_flight").set(n as f64);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let n = self.0.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        metrics::gauge!("forwarder_in_flight").set(n as f64);
    }
}

/// What to do with the delivery once handled.
#[derive(Debug)]
enum Settle {
    Ack,
    /// Hand it back for redelivery (after a pause), or park it if this was its last chance.
    Requeue(String),
    /// Leave it unacknowledged: the channel is going away and the broker redelivers it.
    Abandon,
}

/// Why a step of a delivery failed.
#[derive(Debug)]
enum StepError {
    /// A dependency is away: pause, wait, and try the step again.
    Unavailable(Dependency, String),
    /// Anything else: give the message up to redelivery.
    Failed(String),
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        if error.is_unavailable() {
            StepError::Unavailable(Dependency::Database, error.to_string())
        } else {
            StepError::Failed(error.to_string())
        }
    }
}

impl From<PublishError> for StepError {
    /// Every publish failure is the publisher's: not connected, no confirm, or a route that
    /// is missing (it re-declares the topology) — all worth waiting out rather than counting.
    fn from(error: PublishError) -> Self {
        StepError::Unavailable(Dependency::Publisher, error.to_string())
    }
}

/// How a delivery stopped short.
#[derive(Debug)]
enum Halt {
    /// The channel is going away.
    Stopping,
    /// A step failed for good.
    Failed(String),
}

impl From<Halt> for Settle {
    fn from(halt: Halt) -> Self {
        match halt {
            Halt::Stopping => Settle::Abandon,
            Halt::Failed(reason) => Settle::Requeue(reason),
        }
    }
}

/// Runs `step` until it succeeds. While a dependency is away, the step waits for the pause to
/// end (reporting the outage starts it) and is tried again; the message stays in hand.
async fn until_done<T, F>(
    context: &Context,
    halted: &mut watch::Receiver<bool>,
    what: &str,
    mut step: impl FnMut() -> F,
) -> Result<T, Halt>
where
    F: Future<Output = Result<T, StepError>>,
{
    let mut retried = false;
    loop {
        if !context.pause.wait_running(halted).await {
            return Err(Halt::Stopping);
        }
        match step().await {
            Ok(value) => return Ok(value),
            // One connection the database closed long ago (a restart, an idle timeout) is
            // dropped by the pool on error: the next try gets a new one. Only a second failure
            // means the database is away.
            Err(StepError::Unavailable(Dependency::Database, _)) if !retried => retried = true,
            Err(StepError::Unavailable(dependency, reason)) => {
                metrics::counter!("forwarder_steps_held_total", "dependency" => dependency.as_str())
                    .increment(1);
                context
                    .pause
                    .report(dependency, format_args!("{what}: {reason}"));
            }
            Err(StepError::Failed(reason)) => {
                return Err(Halt::Failed(format!("{what}: {reason}")));
            }
        }
    }
}

async fn handle(context: &Context, delivery: Delivery, mut halted: watch::Receiver<bool>) {
    let _in_flight = InFlight::enter(&context.in_flight);
    let settle = match Envelope::decode(&delivery.data) {
        Ok(envelope) => process(context, &delivery, envelope, &mut halted).await,
        Err(error) => {
            let reason = format!("undecodable message: {error}");
            park_as_is(context, &delivery, &reason, "undecodable", &mut halted).await
        }
    };
    let result = match settle {
        Settle::Ack => bounded("ack", delivery.ack(BasicAckOptions::default())).await,
        Settle::Abandon => return,
        Settle::Requeue(reason) => {
            let headers = delivery.properties.headers().as_ref();
            let returned = header_number(headers, DELIVERY_COUNT_HEADER).unwrap_or(0);
            if returned + 1 >= DELIVERY_LIMIT {
                // One more return and the broker parks it silently: park it ourselves.
                let reason = format!("gave up after {} deliveries: {reason}", returned + 1);
                match park_as_is(context, &delivery, &reason, "delivery_limit", &mut halted).await {
                    Settle::Ack => {
                        record_given_up(context, &delivery, &reason).await;
                        bounded("ack", delivery.ack(BasicAckOptions::default())).await
                    }
                    _ => return,
                }
            } else {
                log::warn!("handing a message back for redelivery: {reason}");
                tokio::time::sleep(REQUEUE_PAUSE).await;
                bounded(
                    "nack",
                    delivery.nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    }),
                )
                .await
            }
        }
    };
    if let Err(error) = result {
        // The channel is gone: the broker redelivers the message to whoever consumes next.
        log::warn!("could not settle a delivery: {error}");
    }
}

/// Parks a message exactly as it came, with `reason`; `Settle::Ack` once it is parked.
async fn park_as_is(
    context: &Context,
    delivery: &Delivery,
    reason: &str,
    why: &'static str,
    halted: &mut watch::Receiver<bool>,
) -> Settle {
    log::warn!("parking a message: {reason}");
    let mut headers = FieldTable::default();
    headers.insert(REASON_HEADER.into(), text_header(reason));
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    let (publisher, route, id, headers) = (
        &context.publisher,
        &context.topology.parked_route(),
        id.as_str(),
        &headers,
    );
    let parked = until_done(context, halted, "parking a message", move || async move {
        Ok(publisher
            .publish_bytes(route, &delivery.data, id, headers.clone())
            .await?)
    })
    .await;
    match parked {
        Ok(()) => {
            metrics::counter!("forwarder_parked_messages_total", "why" => why).increment(1);
            Settle::Ack
        }
        Err(halt) => halt.into(),
    }
}

/// Records the undone events of a message parked after too many deliveries as refused, so
/// they have a failure row like every parked event. Best effort: the database refusing this
/// message is what brought it here, so a failure is logged, not retried.
async fn record_given_up(context: &Context, delivery: &Delivery, reason: &str) {
    let Ok(envelope) = Envelope::decode(&delivery.data) else {
        return;
    };
    let part = envelope.positions();
    let rounds = header_number(delivery.properties.headers().as_ref(), ATTEMPT_HEADER)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
        .saturating_add(1);
    let recorded = async {
        let undone = context
            .store
            .undone_positions(envelope.chunk_id, part.ranges(), false)
            .await?
            .map_or_else(|| part.clone(), Positions::from_ranges);
        let refused: Vec<Failure<'_>> = part
            .iter()
            .zip(&envelope.events)
            .filter(|(position, _)| undone.contains(*position))
            .map(|(position, event)| Failure {
                position,
                event,
                reason: reason.to_owned(),
                status: None,
                attempts: Some(rounds),
            })
            .collect();
        let outcome = PartOutcome {
            delivered: Vec::new(),
            refused,
        };
        context
            .store
            .record_outcome(envelope.chunk_id, &envelope.tenant, &outcome)
            .await
            .map(|_| outcome.refused.len())
    };
    match recorded.await {
        Ok(parked) => count_outcome(&envelope.tenant, 0, parked),
        Err(error) => log::warn!(
            "chunk {}: parked, but its failures could not be recorded: {error}",
            envelope.chunk_id
        ),
    }
}

/// Counts recorded outcomes per tenant: `forwarder_events_delivered_total{tenant}` and
/// `forwarder_events_parked_total{tenant}`. The tenant comes from the message, which carries
/// what ingest-api stored: one of its configured API keys' tenants (`API_KEYS`), so the label
/// has as many values as there are configured tenants, not one per client or event.
fn count_outcome(tenant: &str, delivered: usize, parked: usize) {
    if delivered > 0 {
        metrics::counter!("forwarder_events_delivered_total", "tenant" => tenant.to_owned())
            .increment(delivered as u64);
    }
    if parked > 0 {
        metrics::counter!("forwarder_events_parked_total", "tenant" => tenant.to_owned())
            .increment(parked as u64);
    }
}

/// The events of a message still to deliver, with their positions in the chunk (ascending).
#[derive(Debug, Clone, PartialEq)]
struct Work {
    positions: Vec<u32>,
    events: Vec<Event>,
}

impl Work {
    /// The events of `envelope` at the positions in `undone`.
    fn select(envelope: Envelope, undone: &Positions) -> Self {
        let (positions, events) = envelope
            .positions()
            .iter()
            .zip(envelope.events)
            .filter(|(position, _)| undone.contains(*position))
            .unzip();
        Self { positions, events }
    }

    /// The positions and events at `indexes` (any order), in chunk order.
    fn part(&self, indexes: impl IntoIterator<Item = usize>) -> (Positions, Vec<Event>) {
        let mut indexes: Vec<usize> = indexes
            .into_iter()
            .filter(|i| *i < self.events.len())
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        let positions = Positions::from_positions(indexes.iter().map(|i| self.positions[*i]));
        let events = indexes.iter().map(|i| self.events[*i].clone()).collect();
        (positions, events)
    }
}

async fn process(
    context: &Context,
    delivery: &Delivery,
    envelope: Envelope,
    halted: &mut watch::Receiver<bool>,
) -> Settle {
    let headers = delivery.properties.headers().as_ref();
    let attempt = header_number(headers, ATTEMPT_HEADER)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let redriven = header_flag(headers, REDRIVEN_HEADER);
    let chunk_id = envelope.chunk_id;
    let tenant = envelope.tenant.clone();
    let part = envelope.positions();
    let _chunk = context.chunk_locks.lock(chunk_id).await;

    let (store, ranges) = (&context.store, part.ranges());
    let undone = until_done(
        context,
        halted,
        "reading the chunk's delivery state",
        move || async move { Ok(store.undone_positions(chunk_id, ranges, redriven).await?) },
    )
    .await;
    let undone = match undone {
        Ok(Some(ranges)) => Positions::from_ranges(ranges),
        // No such chunk (never stored here, or deleted by retention): deliver what came.
        Ok(None) => part.clone(),
        Err(halt) => return halt.into(),
    };
    let work = Work::select(envelope, &undone);
    if work.events.is_empty() {
        metrics::counter!("forwarder_chunks_skipped_total").increment(1);
        log::debug!(
            "chunk {chunk_id}: the {} events of this message were handled before; skipped",
            part.len()
        );
        return Settle::Ack;
    }
    if work.events.len() < part.len() {
        let skipped = part.len() - work.events.len();
        metrics::counter!("forwarder_events_skipped_total").increment(skipped as u64);
        log::debug!("chunk {chunk_id}: {skipped} events of this message were handled before");
    }

    let sent = deliver_chunk(
        &context.client,
        &context.policy,
        &tenant,
        &work.events,
        attempt,
    );
    let outcome = match tokio::time::timeout(context.delivery_timeout, sent).await {
        Ok(outcome) => outcome,
        Err(_) => {
            // Whatever was in flight is dropped (the HTTP call is cancelled); the events are
            // handled as after a transient failure.
            metrics::counter!("forwarder_delivery_timeouts_total").increment(1);
            let reason = format!(
                "delivery deadline exceeded (DELIVERY_TIMEOUT {:?})",
                context.delivery_timeout
            );
            log::warn!(
                "chunk {chunk_id}: {reason}; its {} events go through the retry path",
                work.events.len()
            );
            deadline_outcome(work.events.len(), attempt, &context.policy, reason)
        }
    };
    metrics::counter!("forwarder_events_forwarded_total")
        .increment(outcome.delivered_count() as u64);
    let settlement = plan(
        &context.topology,
        &tenant,
        chunk_id,
        &work,
        outcome,
        attempt,
        redriven,
    );
    settle(context, settlement, halted).await
}

/// The outcome of a delivery of `n` events cut short by its deadline, on the message's
/// `attempt`-th trip through the retry queues: every event is retried through the next retry
/// queue, as after a transient Ncanto failure — or, out of attempts, recorded as failed and
/// parked.
fn deadline_outcome(n: usize, attempt: u32, policy: &RetryPolicy, reason: String) -> ChunkOutcome {
    if attempt >= policy.max_attempts {
        let reason = format!(
            "gave up after {} retry rounds; last failure: {reason}",
            attempt + 1
        );
        ChunkOutcome {
            failed: (0..n)
                .map(|index| FailedEvent {
                    index,
                    reason: reason.clone(),
                    status: None,
                })
                .collect(),
            ..ChunkOutcome::default()
        }
    } else {
        ChunkOutcome {
            requeue: Some(Requeue {
                indexes: std::iter::once(0..n).collect(),
                queue: retry_queue_for(attempt + 1, None, &policy.queue_delays),
                reason,
            }),
            ..ChunkOutcome::default()
        }
    }
}

/// A message to publish while settling.
#[derive(Debug, Clone)]
struct Outbound {
    route: Route,
    envelope: Envelope,
    headers: FieldTable,
    /// For the log line: the retry delay, or the park reason.
    note: String,
}

/// Everything a delivery's outcome leads to, decided before any of it is done.
#[derive(Debug, Clone)]
struct Settlement {
    chunk_id: i64,
    tenant: String,
    /// Positions delivered.
    delivered: Positions,
    /// Refused events: position, event, reason, Ncanto's status.
    refused: Vec<(u32, Event, String, Option<u16>)>,
    /// Delivery rounds the refused events went through, this one included.
    rounds: u32,
    /// The events to retry, as a message of their own part.
    requeue: Option<Outbound>,
    /// The refused events, as a message of their own part.
    park: Option<Outbound>,
}

/// Maps an outcome (indexes into `work`) onto positions of the chunk and the messages to send.
fn plan(
    topology: &Topology,
    tenant: &str,
    chunk_id: i64,
    work: &Work,
    outcome: ChunkOutcome,
    attempt: u32,
    redriven: bool,
) -> Settlement {
    let delivered = work.part(outcome.delivered.iter().cloned().flatten()).0;
    let mut failed = outcome.failed;
    failed.sort_by_key(|f| f.index);
    failed.dedup_by_key(|f| f.index);
    failed.retain(|f| f.index < work.events.len());
    let refused: Vec<(u32, Event, String, Option<u16>)> = failed
        .iter()
        .map(|f| {
            (
                work.positions[f.index],
                work.events[f.index].clone(),
                f.reason.clone(),
                f.status,
            )
        })
        .collect();
    let park = failed.first().map(|first| {
        let (positions, events) = work.part(failed.iter().map(|f| f.index));
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), text_header(&first.reason));
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        Outbound {
            route: topology.parked_route(),
            envelope: Envelope::part(tenant, chunk_id, positions, events),
            headers,
            note: first.reason.clone(),
        }
    });
    let requeue = outcome.requeue.and_then(|requeue| {
        let queues = topology.retry_queues();
        let (queue, delay) = queues.get(requeue.queue).or(queues.last()).cloned()?;
        let (positions, events) = work.part(requeue.indexes.into_iter().flatten());
        let mut headers = FieldTable::default();
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt + 1)),
        );
        headers.insert(LAST_ERROR_HEADER.into(), text_header(&requeue.reason));
        headers.insert(REDRIVEN_HEADER.into(), AMQPValue::Boolean(redriven));
        Some(Outbound {
            route: Topology::queue_route(queue),
            envelope: Envelope::part(tenant, chunk_id, positions, events),
            headers,
            note: format!("in {delay:?} (attempt {}): {}", attempt + 1, requeue.reason),
        })
    });
    Settlement {
        chunk_id,
        tenant: tenant.to_owned(),
        delivered,
        refused,
        rounds: attempt.saturating_add(1),
        requeue,
        park,
    }
}

/// Does what `settlement` says, each step waiting out outages, then acknowledges.
async fn settle(
    context: &Context,
    settlement: Settlement,
    halted: &mut watch::Receiver<bool>,
) -> Settle {
    let chunk_id = settlement.chunk_id;
    let publisher = &context.publisher;
    if let Some(requeue) = &settlement.requeue {
        let sent = until_done(
            context,
            halted,
            "sending events to a retry queue",
            move || async move {
                Ok(publisher
                    .publish_with(&requeue.route, &requeue.envelope, requeue.headers.clone())
                    .await?)
            },
        )
        .await;
        if let Err(halt) = sent {
            return halt.into();
        }
        metrics::counter!("forwarder_requeued_total").increment(1);
        log::info!(
            "chunk {chunk_id}: {} events retried {}",
            requeue.envelope.events.len(),
            requeue.note
        );
    }
    if let Some(park) = &settlement.park {
        let parked = until_done(
            context,
            halted,
            "parking refused events",
            move || async move {
                Ok(publisher
                    .publish_with(&park.route, &park.envelope, park.headers.clone())
                    .await?)
            },
        )
        .await;
        if let Err(halt) = parked {
            return halt.into();
        }
        metrics::counter!("forwarder_events_failed_total")
            .increment(park.envelope.events.len() as u64);
        metrics::counter!("forwarder_parked_messages_total", "why" => "failed").increment(1);
        log::warn!(
            "chunk {chunk_id}: {} events parked: {}",
            park.envelope.events.len(),
            park.note
        );
    }
    let outcome = PartOutcome {
        delivered: settlement.delivered.ranges().to_vec(),
        refused: settlement
            .refused
            .iter()
            .map(|(position, event, reason, status)| Failure {
                position: *position,
                event,
                reason: reason.clone(),
                status: *status,
                attempts: Some(settlement.rounds),
            })
            .collect(),
    };
    if outcome.delivered.is_empty() && outcome.refused.is_empty() {
        return Settle::Ack;
    }
    let (store, tenant, outcome) = (&context.store, settlement.tenant.as_str(), &outcome);
    let recorded = until_done(
        context,
        halted,
        "recording the delivery",
        move || async move { Ok(store.record_outcome(chunk_id, tenant, outcome).await?) },
    )
    .await;
    match recorded {
        Ok(state) => {
            count_outcome(tenant, settlement.delivered.len(), settlement.refused.len());
            if state == Some(ChunkState::Forwarded) {
                log::debug!("chunk {chunk_id}: every event delivered");
            }
            Settle::Ack
        }
        Err(halt) => halt.into(),
    }
}

#[cfg(test)]
// Lists of position ranges, where one range is as normal as several.
#[allow(clippy::single_range_in_vec_init)]
mod tests {

    #[tokio::test]
    async fn messages_of_one_chunk_are_handled_in_turn_and_others_pass() {
        let locks = ChunkLocks::default();
        let first = locks.lock(7).await;
        // Another chunk is not held up.
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock(8))
            .await
            .expect("another chunk's lock is free");
        assert_eq!(locks.len(), 2);
        drop(other);
        assert_eq!(locks.len(), 1);
        // The same chunk waits for the first message…
        let mut second = std::pin::pin!(locks.lock(7));
        assert!(futures_util::FutureExt::now_or_never(second.as_mut()).is_none());
        drop(first);
        // …and goes on once it is handled; the entry stays while the second holds it.
        let second = second.await;
        assert_eq!(locks.len(), 1);
        drop(second);
        assert!(locks.is_empty(), "no entry left behind");
    }

    use super::*;

    fn event(n: usize) -> Event {
        serde_json::from_value(serde_json::json!({
            "timestamp": "2025-07-09T10:15:00Z",
            "subscriber": format!("user_{n}"),
            "assetId": "asset_1",
            "interaction": "play",
            "ratingEquivalent": 0.5,
            "setting": {"device": "web"}
        }))
        .unwrap()
    }

    fn events(n: usize) -> Vec<Event> {
        (0..n).map(event).collect()
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            inline_retries: 3,
            inline_base: Duration::from_millis(200),
            inline_max: Duration::from_secs(2),
            max_attempts,
            queue_delays: interaction_bus::RETRY_DELAYS.to_vec(),
        }
    }

    #[test]
    fn a_delivery_past_its_deadline_retries_every_event_through_the_next_retry_queue() {
        // (attempt, max_attempts) → queue used, or None when parked.
        let table = [
            (0, 12, Some(0)),
            (1, 12, Some(1)),
            (11, 12, Some(3)),
            (12, 12, None),
            (0, 0, None),
        ];
        for (attempt, max_attempts, queue) in table {
            let outcome = deadline_outcome(3, attempt, &policy(max_attempts), "late".into());
            assert_eq!(outcome.delivered_count(), 0, "{attempt}");
            match queue {
                Some(queue) => {
                    let requeue = outcome.requeue.unwrap();
                    assert_eq!((requeue.queue, requeue.indexes), (queue, vec![0..3]));
                    assert_eq!(requeue.reason, "late");
                    assert!(outcome.failed.is_empty());
                }
                None => {
                    assert!(outcome.requeue.is_none(), "{attempt}");
                    assert_eq!(outcome.failed.len(), 3);
                    assert!(outcome.failed[0].reason.contains("last failure: late"));
                }
            }
        }
    }

    #[test]
    fn only_the_undone_events_of_a_message_are_selected_with_their_positions() {
        let whole = Envelope::new("t", 1, events(6));
        let part = Envelope::part("t", 1, Positions::from_positions([2, 3, 7]), events(3));
        // (message, undone positions) → positions selected
        let table: [(&Envelope, Positions, Vec<u32>); 5] = [
            (&whole, Positions::whole(6), vec![0, 1, 2, 3, 4, 5]),
            (&whole, Positions::from_ranges([1..3, 5..9]), vec![1, 2, 5]),
            (&whole, Positions::default(), vec![]),
            (&part, Positions::from_positions([3, 7]), vec![3, 7]),
            (&part, Positions::from_positions([0, 1, 4]), vec![]),
        ];
        for (envelope, undone, expected) in table {
            let work = Work::select(envelope.clone(), &undone);
            assert_eq!(work.positions, expected, "{undone:?}");
            // Each event stays paired with its own position.
            let all = envelope.positions().iter().collect::<Vec<_>>();
            for (position, event) in work.positions.iter().zip(&work.events) {
                let index = all.iter().position(|p| p == position).unwrap();
                assert_eq!(*event, envelope.events[index]);
            }
        }
    }

    #[test]
    fn an_outcome_becomes_positions_of_the_chunk_and_messages_of_their_own_part() {
        let topology = Topology::new("p");
        // A re-driven message carrying positions 10..16 of chunk 9, of which 11 was done.
        let envelope = Envelope::part("t", 9, Positions::from_ranges([10..16]), events(6));
        let work = Work::select(envelope, &Positions::from_positions([10, 12, 13, 14, 15]));
        assert_eq!(work.positions, [10, 12, 13, 14, 15]);
        let outcome = ChunkOutcome {
            delivered: vec![0..1, 3..4],
            failed: vec![
                FailedEvent {
                    index: 2,
                    reason: "400: no".into(),
                    status: Some(400),
                },
                FailedEvent {
                    index: 1,
                    reason: "400: no".into(),
                    status: Some(400),
                },
            ],
            requeue: Some(Requeue {
                indexes: vec![4..5],
                queue: 1,
                reason: "503".into(),
            }),
        };
        let settlement = plan(&topology, "t", 9, &work, outcome, 2, true);
        assert_eq!(settlement.delivered.ranges(), [10..11, 14..15]);
        let refused: Vec<u32> = settlement.refused.iter().map(|r| r.0).collect();
        assert_eq!(refused, [12, 13]);
        assert_eq!(settlement.refused[0].1, work.events[1]);

        let park = settlement.park.unwrap();
        assert_eq!(park.route, topology.parked_route());
        assert_eq!(park.envelope.part, Some(Positions::from_ranges([12..14])));
        assert_eq!(park.envelope.events, work.events[1..3]);
        assert_eq!(
            header_text(Some(&park.headers), REASON_HEADER).as_deref(),
            Some("400: no")
        );

        let requeue = settlement.requeue.unwrap();
        assert_eq!(requeue.route.routing_key, topology.retry_queues()[1].0);
        assert_eq!(requeue.envelope.part, Some(Positions::from_positions([15])));
        assert_eq!(requeue.envelope.events, work.events[4..5]);
        assert_eq!(
            header_number(Some(&requeue.headers), ATTEMPT_HEADER),
            Some(3)
        );
        assert!(
            header_flag(Some(&requeue.headers), REDRIVEN_HEADER),
            "a retried re-drive stays a re-drive"
        );
        // Every selected position has exactly one outcome.
        let mut all: Vec<u32> = settlement.delivered.iter().collect();
        all.extend(refused);
        all.extend(requeue.envelope.positions().iter());
        all.sort_unstable();
        assert_eq!(all, work.positions);
    }

    #[test]
    fn a_clean_delivery_plans_no_messages() {
        let work = Work::select(Envelope::new("t", 1, events(4)), &Positions::whole(4));
        let outcome = ChunkOutcome {
            delivered: vec![0..4],
            ..ChunkOutcome::default()
        };
        let settlement = plan(&Topology::new("p"), "t", 1, &work, outcome, 0, false);
        assert_eq!(settlement.delivered, Positions::whole(4));
        assert!(settlement.requeue.is_none() && settlement.park.is_none());
        assert!(settlement.refused.is_empty());
    }

    #[test]
    fn store_errors_hold_the_message_only_when_the_database_is_away() {
        let away = StepError::from(StoreError::Unavailable("refused".into()));
        assert!(matches!(
            away,
            StepError::Unavailable(Dependency::Database, _)
        ));
        let refused = StepError::from(StoreError::Corrupt("bad row".into()));
        assert!(matches!(refused, StepError::Failed(_)));
        for error in [
            PublishError::NotConnected,
            PublishError::ConfirmTimeout,
            PublishError::Returned,
            PublishError::Nacked,
        ] {
            assert!(matches!(
                StepError::from(error),
                StepError::Unavailable(Dependency::Publisher, _)
            ));
        }
    }
}
