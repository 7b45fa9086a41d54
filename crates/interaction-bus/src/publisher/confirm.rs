//! Publishing on the one shared channel.
//!
//! Publishes are pipelined (see the parent module's docs): a short lock while lapin numbers a
//! message and queues its frames, then the wait for the verdict with no lock held. A publish
//! is `Ok` only when the broker acked it AND did not return it as unroutable; the channel's
//! [`Judge`] decides that, because lapin may hand a publish's return to another publish's
//! confirm (see `returns`).

use super::{APP_ID, Publisher, closing::InFlight, returns::Judge};
use crate::{envelope::Envelope, error::PublishError, topology::Route};
use lapin::{
    BasicProperties, Channel, Connection,
    options::BasicPublishOptions,
    types::{FieldTable, ShortString},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// One established connection with its confirmed channel.
pub(super) struct Live {
    pub(super) connection: Connection,
    pub(super) channel: Channel,
    /// Held while lapin numbers a message and queues its frames (see the module docs), and
    /// while the publish takes its place with the judge.
    send_order: tokio::sync::Mutex<()>,
    /// Owns every confirm of this channel and gives each publish its verdict.
    judge: Judge,
    /// A task is draining confirms abandoned by publishes cancelled mid-send.
    draining: AtomicBool,
}

impl Live {
    /// A connection whose channel is in confirm mode. Starts the channel's judge, so it must
    /// be called within a tokio runtime.
    pub(super) fn new(connection: Connection, channel: Channel) -> Self {
        Self {
            connection,
            channel,
            send_order: tokio::sync::Mutex::new(()),
            judge: Judge::start(),
            draining: AtomicBool::new(false),
        }
    }

    pub(super) fn usable(&self) -> bool {
        let connection = self.connection.status();
        let channel = self.channel.status();
        connection.connected() && !connection.blocked() && channel.connected() && channel.confirm()
    }

    pub(super) fn describe_state(&self) -> String {
        let connection = self.connection.status();
        let channel = self.channel.status();
        format!(
            "connection connected={} blocked={}, channel connected={} confirm={}",
            connection.connected(),
            connection.blocked(),
            channel.connected(),
            channel.confirm()
        )
    }

    async fn publish(
        &self,
        route: &Route,
        payload: &[u8],
        properties: BasicProperties,
        message_id: &str,
    ) -> Result<(), PublishError> {
        let routing_key = ShortString::try_new(route.routing_key.clone()).map_err(|_| {
            PublishError::Broker(format!(
                "routing key {:?} is longer than 255 bytes",
                route.routing_key
            ))
        })?;
        let verdict = {
            let _order = self.send_order.lock().await;
            // The place is taken before the message can be acked, and filled (or given up,
            // when the slot is dropped) before the next publish takes one.
            let slot = self.judge.reserve();
            let confirm = self
                .channel
                .basic_publish(
                    route.exchange.as_str().into(),
                    routing_key,
                    BasicPublishOptions {
                        // Unroutable must come back to us (basic.return), not vanish.
                        mandatory: true,
                        // Not supported by RabbitMQ (it closes the connection).
                        immediate: false,
                    },
                    payload,
                    properties,
                )
                .await
                .map_err(broker_error)?;
            slot.sent(message_id, confirm)
        };
        // The lock is released: other tasks publish while this one waits for its verdict.
        verdict.await.unwrap_or_else(|_| {
            Err(PublishError::Broker(
                "the channel's confirm judge stopped".to_owned(),
            ))
        })
    }

    /// A publish cancelled while lapin was sending it (its deadline passed) dropped its
    /// confirm; lapin keeps such confirms until someone waits for all confirms. Do that in the
    /// background (once at a time) so they do not pile up while the channel lives on. (A
    /// return lapin attaches to such a confirm is lost to the judge; the chunk it belongs to
    /// may then be marked published although unroutable — the reconciler publishes it again.)
    fn drain_abandoned_confirms(self: &Arc<Self>, patience: Duration) {
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        let live = Arc::clone(self);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(patience, live.channel.wait_for_confirms()).await;
            live.draining.store(false, Ordering::Release);
        });
    }
}

fn broker_error(error: lapin::Error) -> PublishError {
    PublishError::Broker(error.to_string())
}

impl Publisher {
    /// Publishes one chunk to the events exchange with routing key `forward`: persistent,
    /// mandatory, `content_type` `application/json`, `message_id` = the chunk id, `app_id`
    /// [`APP_ID`], `timestamp` now. `Ok` only when the broker acked it and did not return it
    /// as unroutable; then the chunk may be marked `published`.
    ///
    /// Fails at once with [`PublishError::NotConnected`] when there is no usable channel;
    /// otherwise waits at most `confirm_timeout` in total. Any `Err` means "leave the chunk to
    /// the relay".
    pub async fn publish(&self, envelope: &Envelope) -> Result<(), PublishError> {
        let route = self.shared.forward.clone();
        self.publish_with(&route, envelope, FieldTable::default())
            .await
    }

    /// Like [`Self::publish`], to any route and with extra headers (the forwarder uses it for
    /// the retry queues, with an attempt counter, and for parking, with the reason).
    pub async fn publish_with(
        &self,
        route: &Route,
        envelope: &Envelope,
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let payload = envelope
            .try_encode()
            .map_err(|e| PublishError::Broker(format!("cannot encode the envelope: {e}")))?;
        self.publish_bytes(route, &payload, &envelope.chunk_id.to_string(), headers)
            .await
    }

    /// Publishes any payload (the forwarder parks undecodable messages as they came), with
    /// the same persistence, confirm and return handling as [`Self::publish`]. `message_id`
    /// identifies it in returns.
    pub async fn publish_bytes(
        &self,
        route: &Route,
        payload: &[u8],
        message_id: &str,
        headers: FieldTable,
    ) -> Result<(), PublishError> {
        let shared = &self.shared;
        // Count first, then check `closing`: `close` waits for every publish counted before
        // it set the flag, and every later one sees the flag.
        let _in_flight = InFlight::enter(&shared.in_flight);
        if shared.closing.load(Ordering::SeqCst) {
            return Err(PublishError::NotConnected);
        }
        let live = shared.current().ok_or(PublishError::NotConnected)?;
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            // Persistent: written to disk by the queue before the confirm.
            .with_delivery_mode(2)
            .with_message_id(message_id.into())
            .with_app_id(APP_ID.into())
            .with_timestamp(unix_seconds())
            .with_headers(headers);

        let timeout = shared.config.confirm_timeout;
        let outcome = tokio::time::timeout(
            timeout,
            live.publish(route, payload, properties, message_id),
        )
        .await;
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(PublishError::Returned)) => {
                shared.redeclare.notify_one();
                Err(PublishError::Returned)
            }
            Ok(Err(error)) => {
                shared.trouble.notify_one();
                Err(error)
            }
            Err(_elapsed) => {
                live.drain_abandoned_confirms(timeout.saturating_mul(12));
                shared.trouble.notify_one();
                Err(PublishError::ConfirmTimeout)
            }
        }
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
