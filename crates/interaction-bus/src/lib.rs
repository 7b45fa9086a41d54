//! Everything RabbitMQ for the Interaction Logger, defined once for both sides of the queue.
//!
//! `ingest-api` commits events and a chunk row to PostgreSQL (the outbox), then publishes the
//! chunk here as ONE message; `forwarder` consumes it. Both must agree on three things, and
//! this crate is where they are written down:
//!
//! - **the names and shape of the broker objects** ([`Topology`], [`declare_topology`]): one
//!   direct exchange, a quorum `forward` queue, TTL retry queues that dead-letter back to it,
//!   and a dead-letter exchange with a `parked` queue for work that keeps failing;
//! - **the message body** ([`Envelope`]): versioned JSON, so a forwarder never guesses at a
//!   body written by a newer ingest-api; a whole chunk, or a part of one ([`Positions`]) when
//!   its events part ways in the forwarder;
//! - **what "published" means** ([`Publisher`]): the broker confirmed the message (an ack) and
//!   did not return it as unroutable. Only then may a chunk be marked `published`; anything
//!   else leaves it to the relay, which re-publishes it later. The publisher never blocks its
//!   caller on an outage: when there is no usable channel it fails at once.
//!
//! ```no_run
//! use interaction_bus::{BusConfig, Envelope, Publisher};
//! use std::time::Duration;
//!
//! # async fn demo() {
//! let publisher = Publisher::start(BusConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "interactions"));
//! publisher.wait_connected(Duration::from_secs(5)).await;
//! match publisher.publish(&Envelope::new("tenant-a", 42, Vec::new())).await {
//!     Ok(()) => { /* mark chunk 42 published */ }
//!     Err(e) => log::warn!("chunk 42 stays pending for the relay: {e}"),
//! }
//! publisher.close().await;
//! # }
//! ```

mod connect;
mod envelope;
mod error;
mod part;
mod publisher;
mod topology;

pub use connect::{
    DEFAULT_HEARTBEAT_SECS, check_connection_settings, connect, connect_named, redact_url,
};
pub use envelope::{ENVELOPE_VERSION, Envelope, WHOLE_CHUNK_VERSION};
pub use error::{BusError, EnvelopeError, PublishError};
pub use part::Positions;
pub use publisher::{APP_ID, BusConfig, Publisher};
pub use topology::{
    DELIVERY_LIMIT, FORWARD_ROUTING_KEY, PARKED_ROUTING_KEY, RETRY_DELAYS, Route, Topology,
    declare_topology, delete_topology,
};

/// lapin, re-exported so users of this crate name the same version of its types
/// (`lapin::Channel`, `lapin::options::*`) without adding their own dependency.
pub use lapin;
