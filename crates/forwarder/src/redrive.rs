//! `forwarder redrive`: moves parked messages back to the forward queue once the cause is
//! fixed, optionally only some chunks or one tenant. Each moved message is published (with
//! confirm) before its parked copy is acknowledged, so nothing is lost if the command dies;
//! messages not selected — and a dry run's — go back to the parked queue untouched when the
//! command's channel closes.
//!
//! Two kinds of message wait in the parked queue, and both are listed with their reason:
//! - **parked by the forwarder** (`x-park-reason`): events Ncanto refused or that ran out of
//!   retry attempts, each with an `event_failures` row. Re-driven with `x-redriven`, so the
//!   forwarder tries those refused events again (and records them delivered if they arrive).
//! - **dead-lettered by RabbitMQ** (no `x-park-reason`; the broker's `x-death` header says why,
//!   e.g. `delivery_limit` after a message was handed back too often — a consumer that kept
//!   crashing on it). Their events have no outcome recorded, so they are re-driven as ordinary
//!   work: the forwarder delivers whatever of them is still undone.

use std::path::Path;
use std::time::Duration;

use interaction_bus::lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use interaction_bus::lapin::types::{AMQPValue, FieldTable};
use interaction_bus::{Envelope, Publisher, Topology, declare_topology};
use secrecy::SecretString;

use crate::consumer::{ATTEMPT_HEADER, REASON_HEADER, REDRIVEN_HEADER, header_text};

/// Which parked messages to move.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    /// Only these chunks (all when empty).
    pub chunks: Vec<i64>,
    /// Only this tenant.
    pub tenant: Option<String>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Move nothing.
    pub dry_run: bool,
}

impl RedriveFilter {
    fn selects(&self, envelope: &Envelope) -> bool {
        (self.chunks.is_empty() || self.chunks.contains(&envelope.chunk_id))
            && self.tenant.as_ref().is_none_or(|t| *t == envelope.tenant)
    }
}

/// What a re-drive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedriveReport {
    /// Messages looked at.
    pub examined: usize,
    /// Messages moved (or, in a dry run, that would be).
    pub moved: usize,
    /// Events in them.
    pub events: usize,
    /// Messages left parked because they cannot be decoded (fix or delete them by hand).
    pub undecodable: usize,
    /// Selected messages dead-lettered by RabbitMQ rather than parked by the forwarder.
    pub dead_lettered: usize,
    /// `(chunk, reason)` of each selected message.
    pub selected: Vec<(i64, String)>,
}

/// Re-drives parked messages of `topology` through `publisher`, reading them over a
/// connection of its own to `amqp_url` (trusting `amqp_ca_file` besides the system roots).
pub async fn redrive(
    amqp_url: &SecretString,
    amqp_ca_file: Option<&Path>,
    topology: &Topology,
    publisher: &Publisher,
    filter: &RedriveFilter,
) -> anyhow::Result<RedriveReport> {
    if !filter.dry_run && !publisher.wait_connected(Duration::from_secs(15)).await {
        anyhow::bail!("cannot reach RabbitMQ to publish re-driven messages");
    }
    let connection =
        interaction_bus::connect_named(amqp_url, amqp_ca_file, "forwarder-redrive").await?;
    let channel = connection.create_channel().await?;
    declare_topology(&channel, topology).await?;
    let parked = topology.parked_queue();
    // Only the messages there now: what this command re-parks is not looked at again.
    let waiting = channel
        .queue_declare(
            parked.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count() as usize;
    let mut report = RedriveReport::default();
    while report.examined < waiting && filter.limit.is_none_or(|limit| report.moved < limit) {
        let Some(message) = channel
            .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: false })
            .await?
        else {
            break;
        };
        report.examined += 1;
        let delivery = message.delivery;
        let Ok(envelope) = Envelope::decode(&delivery.data) else {
            // Left unacknowledged: it returns to the parked queue when the channel closes.
            report.undecodable += 1;
            continue;
        };
        if !filter.selects(&envelope) {
            continue;
        }
        let (reason, parked_by) = parked_reason(delivery.properties.headers().as_ref());
        if parked_by == ParkedBy::Broker {
            report.dead_lettered += 1;
        }
        report.selected.push((envelope.chunk_id, reason));
        report.moved += 1;
        report.events += envelope.events.len();
        if filter.dry_run {
            continue;
        }
        let mut headers = FieldTable::default();
        // Only refused events are tried again; a broker dead letter is ordinary work.
        headers.insert(
            REDRIVEN_HEADER.into(),
            AMQPValue::Boolean(parked_by == ParkedBy::Forwarder),
        );
        headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(0));
        publisher
            .publish_with(&topology.forward_route(), &envelope, headers)
            .await
            .map_err(|e| anyhow::anyhow!("re-publishing chunk {}: {e}", envelope.chunk_id))?;
        delivery.ack(BasicAckOptions::default()).await?;
    }
    // Closing returns every message not acknowledged to the parked queue.
    let _ = channel.close(200, "redrive done".into()).await;
    let _ = connection.close(200, "redrive done".into()).await;
    Ok(report)
}

/// Who put a message in the parked queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkedBy {
    /// The forwarder, with `x-park-reason` (and a failure row per event).
    Forwarder,
    /// RabbitMQ's dead-lettering (`x-death`), or anyone else without a reason.
    Broker,
}

/// Why a parked message is parked: the forwarder's `x-park-reason`, or else what the broker's
/// most recent `x-death` entry says (reason, queue, count).
pub fn parked_reason(headers: Option<&FieldTable>) -> (String, ParkedBy) {
    if let Some(reason) = header_text(headers, REASON_HEADER) {
        return (reason, ParkedBy::Forwarder);
    }
    let death = match headers.and_then(|h| h.inner().get("x-death")) {
        // Most recent first.
        Some(AMQPValue::FieldArray(deaths)) => match deaths.as_slice().first() {
            Some(AMQPValue::FieldTable(death)) => Some(death.clone()),
            _ => None,
        },
        _ => None,
    };
    let reason = match death {
        Some(death) => {
            let death = Some(&death);
            format!(
                "dead-lettered by RabbitMQ: {} in {} ({} times)",
                header_text(death, "reason").unwrap_or_else(|| "unknown reason".into()),
                header_text(death, "queue").unwrap_or_else(|| "an unknown queue".into()),
                crate::consumer::header_number(death, "count").unwrap_or(1)
            )
        }
        None => "parked without a reason (no x-park-reason, no x-death)".into(),
    };
    (reason, ParkedBy::Broker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use interaction_bus::lapin::types::{FieldArray, LongString};

    fn death(reason: &str, queue: &str, count: i64) -> AMQPValue {
        let mut table = FieldTable::default();
        table.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from(reason)),
        );
        table.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from(queue)),
        );
        table.insert("count".into(), AMQPValue::LongLongInt(count));
        AMQPValue::FieldTable(table)
    }

    #[test]
    fn the_reason_comes_from_the_forwarder_or_else_from_the_broker() {
        let ours = {
            let mut h = FieldTable::default();
            h.insert(
                REASON_HEADER.into(),
                AMQPValue::LongString(LongString::from("400: refused")),
            );
            h.insert(
                "x-death".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![death("expired", "p.retry.5s", 1)])),
            );
            h
        };
        let limit = {
            let mut h = FieldTable::default();
            h.insert(
                "x-death".into(),
                AMQPValue::FieldArray(FieldArray::from(vec![
                    death("delivery_limit", "p.forward", 1),
                    death("expired", "p.retry.5s", 2),
                ])),
            );
            h
        };
        let table = [
            (Some(ours), "400: refused", ParkedBy::Forwarder),
            (
                Some(limit),
                "dead-lettered by RabbitMQ: delivery_limit in p.forward (1 times)",
                ParkedBy::Broker,
            ),
            (
                Some(FieldTable::default()),
                "parked without a reason (no x-park-reason, no x-death)",
                ParkedBy::Broker,
            ),
            (
                None,
                "parked without a reason (no x-park-reason, no x-death)",
                ParkedBy::Broker,
            ),
        ];
        for (headers, reason, by) in table {
            assert_eq!(
                parked_reason(headers.as_ref()),
                (reason.to_owned(), by),
                "{headers:?}"
            );
        }
    }
}
