//! Consuming the forward queue: one task per delivery (at most `PREFETCH` at once), manual
//! acks, and a reconnect loop.
//!
//! Each delivery (its Ncanto calls and the state update) runs under `DELIVERY_TIMEOUT`, so a
//! message never holds a prefetch slot forever. A delivery cut short is a transient failure
//! like any other: the message's events go to the next retry queue (or, out of attempts, are
//! parked) and the message is acknowledged only once that is durable. Events Ncanto took
//! before the deadline are sent again — duplicates, never losses.
//!
//! A message is acknowledged only after its outcome is durable: events delivered and the chunk
//! marked `forwarded`; or the rest safely in a retry queue; or the failures recorded and
//! parked. Anything that cannot be made durable (database or broker away) leaves the message
//! unacknowledged for redelivery — delivery is at-least-once, and a chunk already forwarded is
//! skipped when it comes again.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use interaction_bus::lapin::message::Delivery;
use interaction_bus::lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use interaction_bus::lapin::types::{AMQPValue, FieldTable, LongString};
use interaction_bus::{Envelope, Publisher, Topology, declare_topology};
use interaction_core::Event;
use interaction_runtime::reconnect_delay;
use interaction_store::{Failure, Store};
use secrecy::SecretString;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::deliver::{ChunkOutcome, FailedEvent, Requeue, deliver_chunk};
use crate::ncanto::NcantoClient;
use crate::retry::{RetryPolicy, retry_queue_for};

/// Header counting a message's trips through the retry queues.
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header marking a message re-driven from the parked queue by an operator.
pub const REDRIVEN_HEADER: &str = "x-redriven";
/// Header saying why a message was parked.
pub const REASON_HEADER: &str = "x-park-reason";
/// Header with the last failure of a message sent to a retry queue.
pub const LAST_ERROR_HEADER: &str = "x-last-error";

/// How long to hold a message before handing it back when the database is away: without it,
/// every prefetched message would bounce between broker and consumer as fast as they can.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(2);

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
    /// Deadline of one delivery (Ncanto calls + state update).
    pub delivery_timeout: Duration,
    /// Whether the consumer is attached to the queue (for `/health` and `/readyz`).
    pub consuming: AtomicBool,
    /// Deliveries being handled.
    pub in_flight: AtomicUsize,
}

/// Consumes until `stop` turns true, reconnecting whenever the connection is lost. On stop,
/// cancels the consumer, finishes the deliveries in hand, and leaves the rest unacknowledged
/// for redelivery.
pub async fn consume(context: Arc<Context>, mut stop: watch::Receiver<bool>) {
    let mut failures = 0u32;
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

async fn consume_once(
    context: &Arc<Context>,
    stop: &mut watch::Receiver<bool>,
    failures: &mut u32,
) -> anyhow::Result<()> {
    // Take no work before retries and parking can be published: otherwise the first
    // deliveries would bounce back while the publisher is still connecting.
    tokio::select! {
        connected = context.publisher.wait_connected(Duration::from_secs(30)) => {
            if !connected {
                anyhow::bail!("the publisher cannot reach the broker");
            }
        }
        _ = stop.wait_for(|s| *s) => return Ok(()),
    }
    let connection = interaction_bus::connect_named(
        &context.amqp_url,
        context.amqp_ca_file.as_deref(),
        "forwarder",
    )
    .await?;
    let channel = connection.create_channel().await?;
    declare_topology(&channel, &context.topology).await?;
    // Prefetch bounds the unacknowledged messages this consumer holds: its concurrency, and
    // what is redelivered to others if it dies.
    channel
        .basic_qos(context.prefetch.max(1), BasicQosOptions::default())
        .await?;
    let tag = format!("forwarder-{}", std::process::id());
    let mut consumer = channel
        .basic_consume(
            context.topology.forward_queue().as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    context.consuming.store(true, Ordering::SeqCst);
    *failures = 0;
    log::info!(
        "consuming {} (prefetch {})",
        context.topology.forward_queue(),
        context.prefetch
    );

    let mut tasks = JoinSet::new();
    let result = loop {
        tokio::select! {
            delivery = consumer.next() => match delivery {
                Some(Ok(delivery)) => {
                    let context = context.clone();
                    tasks.spawn(async move { handle(&context, delivery).await });
                }
                Some(Err(error)) => break Err(anyhow::Error::from(error)),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = stop.wait_for(|s| *s) => break Ok(()),
        }
    };
    context.consuming.store(false, Ordering::SeqCst);
    if result.is_ok() {
        // No new deliveries; those prefetched but not started go back on close.
        let _ = channel
            .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
            .await;
        log::info!("consumer cancelled; finishing {} deliveries", tasks.len());
    }
    // Deliveries in hand finish (their acks need the channel, so it stays open until then).
    while tasks.join_next().await.is_some() {}
    let _ = channel.close(200, "forwarder stopping".into()).await;
    let _ = connection.close(200, "forwarder stopping".into()).await;
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
enum Settle {
    Ack,
    /// Hand it back for redelivery (after a pause).
    Retry,
}

async fn handle(context: &Context, delivery: Delivery) {
    let _in_flight = InFlight::enter(&context.in_flight);
    let settle = match Envelope::decode(&delivery.data) {
        Ok(envelope) => process(context, &delivery, envelope).await,
        Err(error) => park_undecodable(context, &delivery, &error.to_string()).await,
    };
    let result = match settle {
        Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
        Settle::Retry => {
            tokio::time::sleep(UNAVAILABLE_PAUSE).await;
            delivery
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await
        }
    };
    if let Err(error) = result {
        // The channel is gone: the broker redelivers the message to whoever consumes next.
        log::warn!("could not settle a delivery: {error}");
    }
}

async fn park_undecodable(context: &Context, delivery: &Delivery, reason: &str) -> Settle {
    let reason = format!("undecodable message: {reason}");
    log::warn!("parking a message: {reason}");
    let mut headers = FieldTable::default();
    headers.insert(REASON_HEADER.into(), text_header(&reason));
    let id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.as_str().to_owned())
        .unwrap_or_default();
    match context
        .publisher
        .publish_bytes(
            &context.topology.parked_route(),
            &delivery.data,
            &id,
            headers,
        )
        .await
    {
        Ok(()) => {
            metrics::counter!("forwarder_parked_messages_total", "why" => "undecodable")
                .increment(1);
            Settle::Ack
        }
        Err(error) => {
            log::warn!("could not park an undecodable message: {error}");
            Settle::Retry
        }
    }
}

async fn process(context: &Context, delivery: &Delivery, envelope: Envelope) -> Settle {
    let headers = delivery.properties.headers().as_ref();
    let attempt = header_number(headers, ATTEMPT_HEADER)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    let redriven = header_flag(headers, REDRIVEN_HEADER);
    let chunk_id = envelope.chunk_id;

    // A chunk forwarded before (a relay re-publish, a redelivery after a crash) is skipped.
    match context.store.chunk_state(chunk_id).await {
        Ok(Some(state)) if state == "forwarded" => {
            metrics::counter!("forwarder_chunks_skipped_total").increment(1);
            log::debug!("chunk {chunk_id} already forwarded; skipped");
            return Settle::Ack;
        }
        Ok(_) => {}
        Err(error) => {
            log::warn!("chunk {chunk_id}: database unavailable ({error}); will retry");
            return Settle::Retry;
        }
    }

    let delivery = async {
        let outcome = deliver_chunk(
            &context.client,
            &context.policy,
            &envelope.tenant,
            &envelope.events,
            attempt,
        )
        .await;
        settle_outcome(context, &envelope, attempt, redriven, outcome).await
    };
    match tokio::time::timeout(context.delivery_timeout, delivery).await {
        Ok(settle) => settle,
        Err(_) => {
            // Whatever was in flight is dropped (the HTTP call is cancelled). The chunk was
            // not marked forwarded, so the message is handled as a transient failure.
            metrics::counter!("forwarder_delivery_timeouts_total").increment(1);
            let reason = format!(
                "delivery deadline exceeded (DELIVERY_TIMEOUT {:?})",
                context.delivery_timeout
            );
            log::warn!(
                "chunk {chunk_id}: {reason}; its {} events go through the retry path",
                envelope.events.len()
            );
            let outcome = deadline_outcome(&envelope.events, attempt, &context.policy, reason);
            settle_outcome(context, &envelope, attempt, redriven, outcome).await
        }
    }
}

/// The outcome of a delivery cut short by its deadline, on the message's `attempt`-th trip
/// through the retry queues: every event is retried through the next retry queue, as after a
/// transient Ncanto failure — or, out of attempts, recorded as failed and parked.
fn deadline_outcome(
    events: &[Event],
    attempt: u32,
    policy: &RetryPolicy,
    reason: String,
) -> ChunkOutcome {
    if attempt >= policy.max_attempts {
        let reason = format!(
            "gave up after {} retry rounds; last failure: {reason}",
            attempt + 1
        );
        ChunkOutcome {
            failed: events
                .iter()
                .map(|event| FailedEvent {
                    event: event.clone(),
                    reason: reason.clone(),
                    status: None,
                })
                .collect(),
            ..ChunkOutcome::default()
        }
    } else {
        ChunkOutcome {
            requeue: Some(Requeue {
                events: events.to_vec(),
                queue: retry_queue_for(attempt + 1, None, &policy.queue_delays),
                reason,
            }),
            ..ChunkOutcome::default()
        }
    }
}

async fn settle_outcome(
    context: &Context,
    envelope: &Envelope,
    attempt: u32,
    redriven: bool,
    outcome: ChunkOutcome,
) -> Settle {
    let chunk_id = envelope.chunk_id;
    metrics::counter!("forwarder_events_forwarded_total").increment(outcome.delivered as u64);

    if !outcome.failed.is_empty() {
        let failures: Vec<Failure<'_>> = outcome
            .failed
            .iter()
            .map(|f| Failure {
                event: &f.event,
                reason: f.reason.clone(),
                status: f.status,
            })
            .collect();
        if let Err(error) = context
            .store
            .record_failures(chunk_id, &envelope.tenant, &failures)
            .await
        {
            log::warn!("chunk {chunk_id}: cannot record failures ({error}); will retry");
            return Settle::Retry;
        }
        let parked = Envelope::new(
            envelope.tenant.clone(),
            chunk_id,
            outcome.failed.iter().map(|f| f.event.clone()).collect(),
        );
        let mut headers = FieldTable::default();
        headers.insert(REASON_HEADER.into(), text_header(&outcome.failed[0].reason));
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt)),
        );
        if let Err(error) = context
            .publisher
            .publish_with(&context.topology.parked_route(), &parked, headers)
            .await
        {
            log::warn!("chunk {chunk_id}: cannot park failed events ({error}); will retry");
            return Settle::Retry;
        }
        metrics::counter!("forwarder_events_failed_total").increment(outcome.failed.len() as u64);
        metrics::counter!("forwarder_parked_messages_total", "why" => "failed").increment(1);
        log::warn!(
            "chunk {chunk_id}: {} events parked: {}",
            outcome.failed.len(),
            outcome.failed[0].reason
        );
    }

    if let Some(requeue) = outcome.requeue {
        let queues = context.topology.retry_queues();
        let Some((queue, delay)) = queues.get(requeue.queue).or(queues.last()).cloned() else {
            return Settle::Retry;
        };
        let mut headers = FieldTable::default();
        headers.insert(
            ATTEMPT_HEADER.into(),
            AMQPValue::LongLongInt(i64::from(attempt + 1)),
        );
        headers.insert(LAST_ERROR_HEADER.into(), text_header(&requeue.reason));
        headers.insert(REDRIVEN_HEADER.into(), AMQPValue::Boolean(redriven));
        let rest = Envelope::new(envelope.tenant.clone(), chunk_id, requeue.events);
        if let Err(error) = context
            .publisher
            .publish_with(&Topology::queue_route(queue), &rest, headers)
            .await
        {
            log::warn!("chunk {chunk_id}: cannot requeue ({error}); will retry");
            return Settle::Retry;
        }
        metrics::counter!("forwarder_requeued_total").increment(1);
        log::info!(
            "chunk {chunk_id}: {} events retried in {delay:?} (attempt {}): {}",
            rest.events.len(),
            attempt + 1,
            requeue.reason
        );
        return Settle::Ack;
    }

    if outcome.failed.is_empty() {
        // Everything this message carried arrived. A re-drive that succeeds resolves the
        // chunk's earlier failures; otherwise a `failed` chunk stays failed.
        if let Err(error) = context.store.mark_forwarded(chunk_id, redriven).await {
            log::warn!("chunk {chunk_id}: delivered but not marked ({error}); will retry");
            return Settle::Retry;
        }
    }
    Settle::Ack
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(n: usize) -> Vec<Event> {
        let event: Event = serde_json::from_value(serde_json::json!({
            "timestamp": "2025-07-09T10:15:00Z",
            "subscriber": "user_1",
            "assetId": "asset_1",
            "interaction": "play",
            "ratingEquivalent": 0.5,
            "setting": {"device": "web"}
        }))
        .unwrap();
        vec![event; n]
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
            let outcome =
                deadline_outcome(&events(3), attempt, &policy(max_attempts), "late".into());
            assert_eq!(outcome.delivered, 0, "{attempt}");
            match queue {
                Some(queue) => {
                    let requeue = outcome.requeue.unwrap();
                    assert_eq!(
                        (requeue.queue, requeue.events.len()),
                        (queue, 3),
                        "{attempt}"
                    );
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
}
