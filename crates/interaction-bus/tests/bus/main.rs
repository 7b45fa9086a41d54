//! Black-box tests of interaction-bus against the real local RabbitMQ (`AMQP_URL`, default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`). Each test works under its own `test-<uuid>`
//! prefix and deletes its exchanges and queues when it ends, so tests run in parallel. The
//! `tls_` tests start a TLS RabbitMQ node of their own instead (`interaction_testing::rabbit`).

// A panic is how a test fails; helpers outside #[test] fns unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod logging;
mod publish;
mod reconnect;
mod retry;
mod tls;
mod topology;
