//! The connection options every service binary takes, declared once so that ingest-api and
//! forwarder read exactly the same variables the same way.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use interaction_store::{Pooler, Store, StoreConfig, StoreError};
use secrecy::SecretString;

use crate::{parse_duration, parse_optional_path};

/// PostgreSQL and RabbitMQ connection settings (flattened into each binary's options).
#[derive(Debug, Clone, Args)]
pub struct Connections {
    /// PostgreSQL URL, with libpq's TLS parameters: `?sslmode=disable|prefer|require|
    /// verify-ca|verify-full`, `sslrootcert=PATH|system`, `sslcert=PATH&sslkey=PATH`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: SecretString,

    /// What DATABASE_URL leads to: `none` (PostgreSQL itself, or a pooler in session mode) or
    /// `transaction` (PgBouncer with `pool_mode = transaction`: every operation runs in one
    /// transaction, nothing stays prepared, and DATABASE_DIRECT_URL is required).
    #[arg(long, env = "DATABASE_POOLER", default_value = "none", value_parser = parse_pooler)]
    pub database_pooler: Pooler,

    /// PostgreSQL itself (not through a transaction pooler), for what needs a session:
    /// migrations and the retention lock. Empty: DATABASE_URL.
    #[arg(
        long,
        env = "DATABASE_DIRECT_URL",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true,
        value_parser = parse_optional_secret
    )]
    // Spelled out so that clap takes the parser's output as is: an empty value means none.
    pub database_direct_url: std::option::Option<SecretString>,

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
            pooler: self.database_pooler,
            direct_url: self.database_direct_url.clone(),
        })
    }
}

fn parse_pooler(value: &str) -> Result<Pooler, String> {
    value.parse()
}

/// A secret that may be left empty (none).
fn parse_optional_secret(value: &str) -> Result<Option<SecretString>, String> {
    Ok((!value.is_empty()).then(|| SecretString::from(value.to_owned())))
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
    fn the_pooler_mode_and_the_direct_url_parse_and_the_url_stays_secret() {
        let plain = parse(&[]);
        assert_eq!(plain.database_pooler, Pooler::None);
        assert!(plain.database_direct_url.is_none());
        let pooled = parse(&[
            "--database-pooler",
            "transaction",
            "--database-direct-url",
            "postgres://u:s3cret@db:5432/x",
        ]);
        assert_eq!(pooled.database_pooler, Pooler::Transaction);
        assert_eq!(
            pooled
                .database_direct_url
                .as_ref()
                .map(|u| u.expose_secret().to_owned()),
            Some("postgres://u:s3cret@db:5432/x".to_owned())
        );
        assert!(!format!("{pooled:?}").contains("s3cret"));
        assert!(pooled.store().is_ok());
        let error = Cli::try_parse_from([
            "test",
            "--database-url",
            "postgres://db",
            "--database-pooler",
            "statement",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("not a pooler mode"), "{error}");
        // Transaction pooling without a direct URL is refused at start-up, saying why.
        let error = parse(&["--database-pooler", "transaction"])
            .store()
            .unwrap_err()
            .to_string();
        assert!(error.contains("DATABASE_DIRECT_URL"), "{error}");
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
