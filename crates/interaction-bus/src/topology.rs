//! The broker objects both binaries rely on, named under one prefix (`AMQP_PREFIX`), and the
//! one function that declares them.
//!
//! ```text
//!  {p}.events (direct) ──"forward"──▶ {p}.forward (quorum, delivery-limit) ──dead letters──┐
//!        ▲                                                                                  │
//!        │ dead letter "forward" when the TTL expires                                       ▼
//!  {p}.retry.5s / .30s / .2m / .10m (quorum, TTL)           {p}.dlx (direct) ──"parked"──▶ {p}.parked
//! ```
//!
//! Why this shape:
//! - Every queue is a **quorum queue**: replicated, durable, and the only kind that supports
//!   `x-delivery-limit` and at-least-once dead-lettering, on RabbitMQ 3.10 and 4.x alike.
//! - **Delayed retries without sleeping consumers**: the forwarder publishes a failed chunk to
//!   a retry queue (default exchange, routing key = the queue name); when its TTL expires the
//!   broker dead-letters it back to `{p}.events` with routing key `forward`.
//! - **Poison messages park themselves**: after `DELIVERY_LIMIT` redeliveries (consumer
//!   crashes, requeues) the forward queue dead-letters a message to `{p}.dlx` → `{p}.parked`,
//!   where operators can inspect and re-drive it.
//! - **Dead-lettering is at-least-once** (`x-dead-letter-strategy`), which RabbitMQ honours
//!   only together with `x-overflow=reject-publish`; the default at-most-once strategy could
//!   drop a chunk on its way to a retry or parked queue.
//!
//! Declaring is idempotent with the same arguments. Changing an argument of an existing queue
//! makes the broker refuse the declaration (`PRECONDITION_FAILED`); such a change needs a
//! new prefix or a migration (policies, or draining and deleting the queue).

use crate::error::BusError;
use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use std::time::Duration;

/// Routing key from the events exchange to the forward queue.
pub const FORWARD_ROUTING_KEY: &str = "forward";
/// Routing key from the dead-letter exchange to the parked queue.
pub const PARKED_ROUTING_KEY: &str = "parked";
/// How many times the forward queue delivers a message before parking it. High enough that a
/// few forwarder restarts or short outages never park work, low enough that a message that
/// crashes every consumer does not loop forever.
pub const DELIVERY_LIMIT: i64 = 20;
/// The retry schedule's delays, shortest first; one queue each.
pub const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(2 * 60),
    Duration::from_secs(10 * 60),
];

/// Where a message is published: an exchange and a routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The exchange (`""` is the default exchange, which routes by queue name).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
}

/// The names of every exchange and queue, all under one prefix so that environments (and
/// tests, with a `test-<uuid>` prefix) share a broker without seeing each other's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
}

impl Topology {
    /// Names under `prefix` (the `AMQP_PREFIX` setting).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The prefix every name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}.events`: the direct exchange ingest-api publishes chunks to.
    pub fn exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The routing key of chunk messages: `"forward"`.
    pub fn forward_routing_key(&self) -> &'static str {
        FORWARD_ROUTING_KEY
    }

    /// `{prefix}.forward`: the queue the forwarder consumes.
    pub fn forward_queue(&self) -> String {
        format!("{}.forward", self.prefix)
    }

    /// `({prefix}.retry.<delay>, delay)` for each of [`RETRY_DELAYS`], shortest first: e.g.
    /// `interactions.retry.5s`. Publish to one through the default exchange (`""`) with the
    /// queue name as routing key; the message comes back to the forward queue after `delay`.
    pub fn retry_queues(&self) -> Vec<(String, Duration)> {
        RETRY_DELAYS
            .iter()
            .map(|delay| {
                (
                    format!("{}.retry.{}", self.prefix, delay_label(*delay)),
                    *delay,
                )
            })
            .collect()
    }

    /// `{prefix}.dlx`: the direct exchange messages are dead-lettered to once they exceed the
    /// forward queue's delivery limit (or are rejected without requeue).
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The routing key of dead-lettered messages: `"parked"`.
    pub fn parked_routing_key(&self) -> &'static str {
        PARKED_ROUTING_KEY
    }

    /// `{prefix}.parked`: where failed work waits for an operator.
    pub fn parked_queue(&self) -> String {
        format!("{}.parked", self.prefix)
    }

    /// Where new chunks go: the events exchange, routing key `forward`.
    pub fn forward_route(&self) -> Route {
        Route {
            exchange: self.exchange(),
            routing_key: FORWARD_ROUTING_KEY.to_owned(),
        }
    }

    /// Straight into one queue, through the default exchange (used for the retry queues,
    /// which no exchange routes to, and for parking).
    pub fn queue_route(queue: impl Into<String>) -> Route {
        Route {
            exchange: String::new(),
            routing_key: queue.into(),
        }
    }

    /// Straight into the parked queue.
    pub fn parked_route(&self) -> Route {
        Self::queue_route(self.parked_queue())
    }

    /// Every queue: forward, the retry queues, parked.
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues = vec![self.forward_queue()];
        queues.extend(self.retry_queues().into_iter().map(|(name, _)| name));
        queues.push(self.parked_queue());
        queues
    }

    /// Every exchange: events, dlx.
    pub fn all_exchanges(&self) -> Vec<String> {
        vec![self.exchange(), self.dead_letter_exchange()]
    }
}

/// `5s`, `30s`, `2m`, `10m`, `1h`: the largest whole unit, for short readable queue names.
fn delay_label(delay: Duration) -> String {
    let secs = delay.as_secs();
    if delay.subsec_nanos() != 0 {
        format!("{}ms", delay.as_millis())
    } else if secs != 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs != 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// Arguments every queue of ours shares.
fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    // Replicated and fsynced before the confirm: a confirmed chunk survives a node loss.
    // Also the only type with delivery limits and at-least-once dead-lettering.
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

/// Arguments of a quorum queue that dead-letters to `exchange` with `routing_key`.
fn dead_lettering_arguments(exchange: &str, routing_key: &str) -> FieldTable {
    let mut args = quorum_arguments();
    // Where dead letters go: a message must never just vanish from our queues.
    args.insert("x-dead-letter-exchange".into(), long_string(exchange));
    // Dead letters keep their original key ("forward") unless told otherwise; route them
    // explicitly so the target exchange's bindings decide, not the message's history.
    args.insert("x-dead-letter-routing-key".into(), long_string(routing_key));
    // The broker re-publishes dead letters with confirms and keeps them until the target
    // queue accepted them (the default at-most-once strategy may drop them).
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    // Required by at-least-once: without reject-publish the broker silently falls back to
    // at-most-once (it must be able to refuse new messages rather than drop old ones).
    args.insert("x-overflow".into(), long_string("reject-publish"));
    args
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        // Declare, don't just check: the first process to start creates everything.
        passive: false,
        // Survive broker restarts (quorum queues must be durable anyway).
        durable: true,
        // Shared by every ingest-api and forwarder replica, not owned by this connection.
        exclusive: false,
        // Keep messages when the last consumer goes away (forwarders scale to zero).
        auto_delete: false,
        // Wait for declare-ok so a refused declaration is reported, not ignored.
        nowait: false,
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        // Declare, don't just check (see durable_queue).
        passive: false,
        // Survive broker restarts, with their bindings.
        durable: true,
        // Bindings come and go as queues are re-declared; the exchange must stay.
        auto_delete: false,
        // Clients publish to the events exchange directly; the DLX is published to by the
        // broker but also by operators re-driving work, so neither is internal.
        internal: false,
        // Wait for declare-ok so a refused declaration is reported.
        nowait: false,
    }
}

/// Declares both exchanges, every queue and their bindings. Idempotent: run it at every
/// (re)connect of every replica, in any order — no other process "owns" the topology.
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> Result<(), BusError> {
    let exchange = topology.exchange();
    let dlx = topology.dead_letter_exchange();

    for name in [&exchange, &dlx] {
        channel
            .exchange_declare(
                name.as_str().into(),
                // Direct: routing is by exact key ("forward", "parked"); nothing fancier is
                // needed and direct is the cheapest to route.
                ExchangeKind::Direct,
                durable_exchange(),
                FieldTable::default(),
            )
            .await
            .map_err(BusError::amqp(format!("declare exchange {name:?}")))?;
    }

    let forward = topology.forward_queue();
    let mut forward_args = dead_lettering_arguments(&dlx, PARKED_ROUTING_KEY);
    // Redeliveries before a message is parked instead of crashing consumers forever.
    forward_args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    declare_queue(channel, &forward, forward_args).await?;
    bind(channel, &forward, &exchange, FORWARD_ROUTING_KEY).await?;

    for (name, delay) in topology.retry_queues() {
        // Expired messages go back to the events exchange → forward queue: a delayed retry.
        let mut args = dead_lettering_arguments(&exchange, FORWARD_ROUTING_KEY);
        // The delay itself. Every message in one queue has the same TTL, so expiry happens
        // at the head in order (per-message TTLs would wait behind longer ones).
        args.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        // Not bound anywhere: the forwarder publishes to it through the default exchange.
        declare_queue(channel, &name, args).await?;
    }

    let parked = topology.parked_queue();
    // No dead-lettering and no TTL: parked work waits for a human, however long that takes.
    declare_queue(channel, &parked, quorum_arguments()).await?;
    bind(channel, &parked, &dlx, PARKED_ROUTING_KEY).await?;
    Ok(())
}

async fn declare_queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), BusError> {
    channel
        .queue_declare(name.into(), durable_queue(), args)
        .await
        .map_err(BusError::amqp(format!("declare queue {name:?}")))?;
    Ok(())
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
) -> Result<(), BusError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            // Wait for bind-ok: a missing binding would make every publish unroutable.
            QueueBindOptions { nowait: false },
            FieldTable::default(),
        )
        .await
        .map_err(BusError::amqp(format!(
            "bind queue {queue:?} to {exchange:?} with {routing_key:?}"
        )))
}

/// Deletes every queue (with its messages!) and exchange of `topology`. For tests' cleanup and
/// tearing down an environment; never called by the services. Deleting what does not exist
/// succeeds.
pub async fn delete_topology(channel: &Channel, topology: &Topology) -> Result<(), BusError> {
    for queue in topology.all_queues() {
        channel
            .queue_delete(
                queue.as_str().into(),
                // Unconditionally: cleanup must not depend on consumers or leftovers.
                QueueDeleteOptions {
                    if_unused: false,
                    if_empty: false,
                    nowait: false,
                },
            )
            .await
            .map_err(BusError::amqp(format!("delete queue {queue:?}")))?;
    }
    for exchange in topology.all_exchanges() {
        channel
            .exchange_delete(
                exchange.as_str().into(),
                ExchangeDeleteOptions {
                    if_unused: false,
                    nowait: false,
                },
            )
            .await
            .map_err(BusError::amqp(format!("delete exchange {exchange:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_derived_from_the_prefix() {
        let t = Topology::new("interactions");
        let cases = [
            (t.exchange(), "interactions.events"),
            (t.forward_queue(), "interactions.forward"),
            (t.dead_letter_exchange(), "interactions.dlx"),
            (t.parked_queue(), "interactions.parked"),
            (t.forward_routing_key().to_owned(), "forward"),
            (t.parked_routing_key().to_owned(), "parked"),
            (t.prefix().to_owned(), "interactions"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn retry_queues_are_named_after_their_delay_shortest_first() {
        let got = Topology::new("p").retry_queues();
        let want = [
            ("p.retry.5s", 5),
            ("p.retry.30s", 30),
            ("p.retry.2m", 120),
            ("p.retry.10m", 600),
        ];
        assert_eq!(got.len(), want.len());
        for ((name, delay), (want_name, want_secs)) in got.iter().zip(want) {
            assert_eq!(name, want_name);
            assert_eq!(*delay, Duration::from_secs(want_secs));
        }
    }

    #[test]
    fn delay_labels_use_the_largest_whole_unit() {
        let cases = [
            (Duration::from_secs(0), "0s"),
            (Duration::from_secs(5), "5s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(5400), "90m"),
            (Duration::from_millis(1500), "1500ms"),
        ];
        for (delay, want) in cases {
            assert_eq!(delay_label(delay), want, "{delay:?}");
        }
    }

    #[test]
    fn all_queues_and_exchanges_list_every_name_once() {
        let t = Topology::new("x");
        assert_eq!(
            t.all_queues(),
            [
                "x.forward",
                "x.retry.5s",
                "x.retry.30s",
                "x.retry.2m",
                "x.retry.10m",
                "x.parked"
            ]
        );
        assert_eq!(t.all_exchanges(), ["x.events", "x.dlx"]);
    }

    #[test]
    fn retry_queues_dead_letter_at_least_once_back_to_forward() {
        let args = dead_lettering_arguments("p.events", "forward");
        let get = |k: &str| args.inner().get(k).cloned();
        assert_eq!(get("x-queue-type"), Some(long_string("quorum")));
        assert_eq!(get("x-dead-letter-exchange"), Some(long_string("p.events")));
        assert_eq!(
            get("x-dead-letter-routing-key"),
            Some(long_string("forward"))
        );
        assert_eq!(
            get("x-dead-letter-strategy"),
            Some(long_string("at-least-once"))
        );
        assert_eq!(get("x-overflow"), Some(long_string("reject-publish")));
    }
}
