//! forwarder, black-box over AMQP and HTTP against the real PostgreSQL and RabbitMQ and an
//! in-process ncanto-mock; each test with its own database, AMQP prefix and mock.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Scenarios report sent / delivered / duplicates / lost on stderr (shown with --no-capture).
#![allow(clippy::print_stderr)]
// Lists of position ranges, where one range is as normal as several.
#![allow(clippy::single_range_in_vec_init)]

mod delivery;
mod faults;
mod harness;
mod https;
mod operations;
mod outages;
mod parts;
mod trace;
