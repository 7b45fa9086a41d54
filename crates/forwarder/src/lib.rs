//! forwarder: delivers stored interaction events to Ncanto.
//!
//! It consumes chunk messages from RabbitMQ ([`consumer`]), skips the events of each message
//! that were handled before, posts the rest to Ncanto in batches ([`deliver`], [`ncanto`]),
//! retries transient failures in process and through TTL retry queues ([`retry`]), parks what
//! fails for good with the reason, and records which events of the chunk were delivered or
//! refused before acknowledging. While its database or its publisher is away it stops
//! consuming and holds what it has ([`pause`]). Operator commands re-drive parked work
//! ([`redrive`]), replay stored events ([`replay`]) and apply retention ([`purge`]); the admin
//! port and `forwarder trace` show where any event is ([`trace`]).

pub mod admin;
pub mod app;
pub mod config;
pub mod consumer;
pub mod deliver;
pub mod ncanto;
pub mod pause;
pub mod progress;
pub mod purge;
pub mod redrive;
pub mod replay;
pub mod retry;
pub mod tenants;
pub mod trace;

pub use app::{Forwarder, ShutdownHandle};
pub use config::{Cli, Command, Config};
