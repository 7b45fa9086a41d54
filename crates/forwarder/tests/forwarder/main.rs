//! forwarder, black-box over AMQP and HTTP against the real PostgreSQL and RabbitMQ and an
//! in-process ncanto-mock; each test with its own database, AMQP prefix and mock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod delivery;
mod faults;
mod harness;
mod https;
mod operations;
mod outages;
mod parts;
