//! End-to-end: the three real binaries as processes (own database, own AMQP prefix, free
//! ports), driven only over HTTP — what a client sends to ingest-api must be what the mock
//! Ncanto receives.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The fault scenarios print their report lines (`make faults` shows them).
#![allow(clippy::print_stderr)]

mod browser;
mod faults;
mod load;
mod pipeline;
mod scenarios;
mod tls;
