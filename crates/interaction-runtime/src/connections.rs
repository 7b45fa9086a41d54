//! The connection options every service binary takes, declared once so that ingest-api and
//! forwarder read exactly the same variables the same way.

use std::time::Duration;

use clap::Args;
use interaction_store::{Store, StoreConfig, StoreError};
use secrecy::SecretString;

use crate::parse_duration;

/// Reads a secret option (a URL with a password, a key) straight into a [`SecretString`],
/// so that no `String` copy of it lives on in the parsed configuration.
pub fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// PostgreSQL and RabbitMQ connection settings (flattened into each binary's options).
#[derive(Debug, Clone, Args)]
pub struct Connections {
    /// PostgreSQL URL, with libpq's TLS parameters: `?sslmode=disable|prefer|require|
    /// verify-ca|verify-full`, `sslrootcert=PATH|system`, `sslcert=PATH&sslkey=PATH`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = parse_secret)]
    pub database_url: SecretString,

    /// Most PostgreSQL connections of this process.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 8)]
    pub database_max_connections: usize,

    /// How long to wait for a database connection before failing (503 at the API).
    #[arg(long, env = "DATABASE_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub database_timeout: Duration,

    /// Longest a SQL statement may run (PostgreSQL's statement_timeout; migrations are
    /// exempt). The client gives a statement up 2 s later if the server never answers.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub database_statement_timeout: Duration,

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

impl Connections {
    /// The PostgreSQL pool these options describe (connecting lazily; see [`Store::new`]).
    pub fn store(&self) -> Result<Store, StoreError> {
        Store::new(&StoreConfig {
            url: self.database_url.clone(),
            max_connections: self.database_max_connections,
            acquire_timeout: self.database_timeout,
            statement_timeout: self.database_statement_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        connections: Connections,
    }

    #[test]
    fn debug_output_never_shows_the_database_password() {
        let cli = Cli::try_parse_from([
            "x",
            "--database-url",
            "postgres://app:Tr0ub4dor@db.example/app?sslmode=verify-full",
        ])
        .unwrap();
        let debug = format!("{:?}", cli.connections);
        assert!(!debug.contains("Tr0ub4dor"), "{debug}");
        let store = cli.connections.store();
        let debug = format!("{store:?}");
        assert!(!debug.contains("Tr0ub4dor"), "{debug}");
    }
}
