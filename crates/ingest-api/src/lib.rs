//! ingest-api: the HTTP front of Interaction Logger.
//!
//! Requests are authenticated, read, normalized by `interaction-core`, and handed to the
//! [`batcher`], which commits them to PostgreSQL in shared writes; only then is the client
//! answered 202. Committed chunks are published to RabbitMQ by the [`outbox`] task, the
//! [`relay`] re-publishes any the broker never confirmed, and the [`reconciler`] any it
//! confirmed but that were never finished. The binary (`main.rs`) only wires
//! configuration to [`startup::Application`].

pub mod auth;
pub mod batcher;
pub mod config;
pub mod docs;
pub mod error;
pub mod ingest;
pub mod ops;
pub mod outbox;
pub mod reconciler;
pub mod relay;
pub mod schema;
pub mod startup;
pub mod state;

pub use config::{Cli, Command, Config};
pub use startup::{Application, ShutdownHandle};
