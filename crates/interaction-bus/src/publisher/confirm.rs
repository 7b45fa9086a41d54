//! Publishing on the one shared channel, and judging each confirm.
//!
//! Publishes are pipelined (see the parent module's docs): a short lock while lapin numbers a
//! message and queues its frames, then the wait for the confirm with no lock held. A publish
//! is `Ok` only when the broker acked it AND did not return it as unroutable; since lapin
//! hands a `basic.return` to whichever confirm it resolves next, [`verdict`] and the
//! [`ReturnBook`] sort returns out by message id.

use super::{APP_ID, Publisher, closing::InFlight};
use crate::{envelope::Envelope, error::PublishError, topology::Route};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::BasicPublishOptions,
    types::{FieldTable, ShortString},
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// Returned-message ids a channel remembers at most (see the module docs); past that the
/// oldest knowledge is dropped at once — only ever reached if routing stays broken.
const RETURN_BOOK_CAP: usize = 10_000;

/// One established connection with its confirmed channel.
pub(super) struct Live {
    pub(super) connection: Connection,
    pub(super) channel: Channel,
    /// Held while lapin numbers a message and queues its frames (see the module docs).
    send_order: tokio::sync::Mutex<()>,
    returns: Mutex<ReturnBook>,
    /// A task is draining confirms abandoned by timed-out publishes.
    draining: AtomicBool,
}

impl Live {
    /// A connection whose channel is in confirm mode.
    pub(super) fn new(connection: Connection, channel: Channel) -> Self {
        Self {
            connection,
            channel,
            send_order: tokio::sync::Mutex::new(()),
            returns: Mutex::new(ReturnBook::default()),
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
        let confirm = {
            let _order = self.send_order.lock().await;
            self.channel
                .basic_publish(
                    route.exchange.as_str().into(),
                    ShortString::try_new(route.routing_key.clone()).map_err(|_| {
                        PublishError::Broker(format!(
                            "routing key {:?} is longer than 255 bytes",
                            route.routing_key
                        ))
                    })?,
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
        }
        .map_err(broker_error)?;
        // The lock is released: other tasks publish while this one waits for its confirm.
        let (acked, returned) = match confirm.await.map_err(broker_error)? {
            Confirmation::Ack(returned) => (true, returned),
            Confirmation::Nack(returned) => (false, returned),
            Confirmation::NotRequested => {
                return Err(PublishError::Broker(
                    "publisher confirms are not enabled on the channel".to_owned(),
                ));
            }
        };
        let returned_id = returned.map(|message| {
            message
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str().to_owned())
        });
        let mut book = self.returns.lock().unwrap_or_else(PoisonError::into_inner);
        verdict(acked, returned_id, message_id, &mut book)
    }

    /// A timed-out publish dropped its confirm; lapin keeps such confirms until someone
    /// waits for all confirms. Do that in the background (once at a time) so they do not
    /// pile up while the channel lives on.
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

/// Returned-message ids seen on one channel whose owner has not claimed them yet.
#[derive(Debug, Default)]
struct ReturnBook {
    ids: HashMap<String, u32>,
}

impl ReturnBook {
    fn record(&mut self, id: String) {
        if self.ids.len() >= RETURN_BOOK_CAP {
            self.ids.clear();
        }
        *self.ids.entry(id).or_default() += 1;
    }

    fn claim(&mut self, id: &str) -> bool {
        match self.ids.get_mut(id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                self.ids.remove(id);
                true
            }
            None => false,
        }
    }
}

/// Whether a confirmed publish of `own_id` counts as published. `returned` is the message id
/// of the returned message lapin attached to this confirm, if it attached one (`Some(None)`:
/// a returned message without id).
fn verdict(
    acked: bool,
    returned: Option<Option<String>>,
    own_id: &str,
    book: &mut ReturnBook,
) -> Result<(), PublishError> {
    let returned = match returned {
        None => book.claim(own_id),
        Some(Some(id)) if id == own_id => true,
        Some(other) => {
            // Someone else's return: record it for its owner, and distrust our own routing.
            if let Some(id) = other {
                book.record(id);
            }
            book.claim(own_id);
            true
        }
    };
    if !acked {
        Err(PublishError::Nacked)
    } else if returned {
        Err(PublishError::Returned)
    } else {
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_follow_ack_and_returns() {
        // (acked, returned id attached to this confirm, ids already in the book, verdict)
        type Case = (
            bool,
            Option<Option<&'static str>>,
            &'static [&'static str],
            Result<(), PublishError>,
        );
        let cases: [Case; 9] = [
            (true, None, &[], Ok(())),
            (false, None, &[], Err(PublishError::Nacked)),
            (true, Some(Some("7")), &[], Err(PublishError::Returned)),
            (false, Some(Some("7")), &[], Err(PublishError::Nacked)),
            // Our return was attached to another publish's confirm, which recorded it.
            (true, None, &["7"], Err(PublishError::Returned)),
            (true, None, &["8"], Ok(())),
            // We hold another chunk's return: routing was in flux, err on the safe side.
            (true, Some(Some("8")), &[], Err(PublishError::Returned)),
            (true, Some(None), &[], Err(PublishError::Returned)),
            (false, None, &["7"], Err(PublishError::Nacked)),
        ];
        for (acked, returned, book_ids, want) in cases {
            let mut book = ReturnBook::default();
            for id in book_ids {
                book.record((*id).to_owned());
            }
            let got = verdict(
                acked,
                returned.map(|r| r.map(str::to_owned)),
                "7",
                &mut book,
            );
            assert_eq!(got, want, "{acked} {returned:?} {book_ids:?}");
            assert!(!book.ids.contains_key("7"), "own id must be claimed");
        }
    }

    #[test]
    fn foreign_returns_are_kept_for_their_owner() {
        let mut book = ReturnBook::default();
        let _ = verdict(true, Some(Some("8".to_owned())), "7", &mut book);
        assert_eq!(
            verdict(true, None, "8", &mut book),
            Err(PublishError::Returned)
        );
        assert_eq!(verdict(true, None, "8", &mut book), Ok(()));
    }

    #[test]
    fn the_return_book_is_bounded() {
        let mut book = ReturnBook::default();
        for i in 0..(RETURN_BOOK_CAP * 2 + 5) {
            book.record(i.to_string());
        }
        assert!(book.ids.len() <= RETURN_BOOK_CAP);
    }
}
