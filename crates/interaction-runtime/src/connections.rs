//! The connection options every service binary takes, declared once so that ingest-api and
//! forwarder read exactly the same variables the same way.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use interaction_store::{Store, StoreConfig, StoreError};
use secrecy::SecretString;

use crate::{parse_duration, parse_optional_path};

/// PostgreSQL and RabbitMQ connection settings (flattened into each binary's options).
#[derive(Debug, Clone, Args)]
pub struct Connections {
    /// PostgreSQL URL, with libpq's TLS parameters: `?sslmode=disable|prefer|require|
    /// verify-ca|verify-full`, `sslrootcert=PATH|system`, `sslcert=PATH&sslkey=PATH`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
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

    /// RabbitMQ URL (`amqps://` for TLS). A secret (it holds the password): `Debug` shows
    /// `[REDACTED]`, logs show it with `***` for the password.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub amqp_url: SecretString,

    /// Prefix of every exchange and queue name.
    #[arg(long, env = "AMQP_PREFIX", default_value = "interactions")]
    pub amqp_prefix: String,

    /// How long to wait for the broker to confirm a publish.
    #[arg(long, env = "PUBLISH_CONFIRM_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub publish_confirm_timeout: Duration,

    /// PEM file of extra CAs trusted for `amqps://` besides the system roots (a private PKI).
    #[arg(
        long,
        env = "AMQP_CA_FILE",
        default_value = "",
        hide_default_value = true,
        value_parser = parse_optional_path
    )]
    // Spelled out so that clap takes the parser's output as is: an empty value means none.
    pub amqp_ca_file: std::option::Option<PathBuf>,
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;
    use secrecy::ExposeSecret;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        connections: Connections,
    }

    fn parse(args: &[&str]) -> Connections {
        let args = ["test", "--database-url", "postgres://db"]
            .iter()
            .chain(args);
        Cli::try_parse_from(args).unwrap().connections
    }

    #[test]
    fn debug_never_shows_the_amqp_password() {
        let connections = parse(&["--amqp-url", "amqps://user:hunter2@rabbit:5671/%2f"]);
        assert_eq!(
            connections.amqp_url.expose_secret(),
            "amqps://user:hunter2@rabbit:5671/%2f"
        );
        let text = format!("{connections:?}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn the_ca_file_is_optional_and_empty_means_none() {
        assert_eq!(parse(&[]).amqp_ca_file, None);
        assert_eq!(parse(&["--amqp-ca-file="]).amqp_ca_file, None);
        assert_eq!(
            parse(&["--amqp-ca-file", "/etc/ca.pem"]).amqp_ca_file,
            Some(PathBuf::from("/etc/ca.pem"))
        );
    }

    #[test]
    fn the_default_amqp_url_is_the_local_broker() {
        assert_eq!(
            parse(&[]).amqp_url.expose_secret(),
            "amqp://guest:guest@127.0.0.1:5672/%2f"
        );
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
