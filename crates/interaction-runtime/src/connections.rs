//! The connection options every service binary takes, declared once so that ingest-api and
//! forwarder read exactly the same variables the same way.

use std::time::Duration;

use clap::Args;

use crate::parse_duration;

/// PostgreSQL and RabbitMQ connection settings (flattened into each binary's options).
#[derive(Debug, Clone, Args)]
pub struct Connections {
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,

    /// Most PostgreSQL connections of this process.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: usize,

    /// How long to wait for a database connection before failing (503 at the API).
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub database_timeout: Duration,

    /// Apply pending migrations at start-up.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// RabbitMQ URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: String,

    /// Prefix of every exchange and queue name.
    #[arg(long, env = "AMQP_PREFIX", default_value = "interactions")]
    pub amqp_prefix: String,

    /// How long to wait for the broker to confirm a publish.
    #[arg(long, env = "PUBLISH_CONFIRM_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub publish_confirm_timeout: Duration,
}
