//! `forwarder redrive`: moves parked messages back to the forward queue once the cause is
//! fixed, optionally only some chunks or one tenant. Each moved message is published (with
//! confirm) before its parked copy is acknowledged, so nothing is lost if the command dies;
//! messages not selected — and a dry run's — go back to the parked queue untouched when the
//! command's channel closes.

use std::path::Path;
use std::time::Duration;

use interaction_bus::lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use interaction_bus::lapin::types::{AMQPValue, FieldTable};
use interaction_bus::{Envelope, Publisher, Topology, declare_topology};
use secrecy::SecretString;

use crate::consumer::{ATTEMPT_HEADER, REASON_HEADER, REDRIVEN_HEADER};

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
        let reason = match delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(REASON_HEADER))
        {
            Some(AMQPValue::LongString(text)) => {
                String::from_utf8_lossy(text.as_bytes()).into_owned()
            }
            _ => String::new(),
        };
        report.selected.push((envelope.chunk_id, reason));
        report.moved += 1;
        report.events += envelope.events.len();
        if filter.dry_run {
            continue;
        }
        let mut headers = FieldTable::default();
        headers.insert(REDRIVEN_HEADER.into(), AMQPValue::Boolean(true));
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
