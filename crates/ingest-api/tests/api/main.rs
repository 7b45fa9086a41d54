//! ingest-api, black-box over HTTP against the real PostgreSQL and RabbitMQ: each test with
//! its own database and AMQP prefix, removed again when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod broker;
mod helpers;
mod hostile;
mod ingest;
mod ops;
mod outbox;
mod protocol;
mod skew;
