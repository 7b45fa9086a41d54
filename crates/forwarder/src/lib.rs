//! forwarder: delivers stored interaction events to Ncanto.
//!
//! It consumes chunk messages from RabbitMQ ([`consumer`]), skips chunks already forwarded,
//! posts their events to Ncanto in batches ([`deliver`], [`ncanto`]), retries transient
//! failures in process and through TTL retry queues ([`retry`]), parks what fails for good
//! with the reason, and marks each chunk `forwarded` before acknowledging it. Operator
//! commands re-drive parked work ([`redrive`]), replay stored events ([`replay`]) and apply
//! retention ([`purge`]).

pub mod admin;
pub mod app;
pub mod config;
pub mod consumer;
pub mod deliver;
pub mod ncanto;
pub mod progress;
pub mod purge;
pub mod redrive;
pub mod replay;
pub mod retry;

pub use app::{Forwarder, ShutdownHandle};
pub use config::{Cli, Command, Config};
