//! Configuration: one typed struct, read from command-line flags or environment variables
//! (and a `.env` file for local runs). `ingest-api --help` lists every option with its
//! variable; `.env.example` documents each.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use interaction_runtime::{Connections, parse_duration};

/// Accepts interaction events over HTTP, stores them durably in PostgreSQL and publishes them
/// to RabbitMQ for the forwarder.
#[derive(Debug, Clone, Parser)]
#[command(name = "ingest-api", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP API (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
}

/// Every setting of ingest-api.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL and RabbitMQ connections.
    #[command(flatten)]
    pub connections: Connections,

    /// Address the HTTP API listens on.
    #[arg(long, env = "INGEST_ADDR", default_value = "0.0.0.0:8080")]
    pub ingest_addr: SocketAddr,

    /// Address of the admin listener: `/metrics`, `/livez` and `/readyz`, for the cluster's
    /// probes and scrapers only (the API port serves `/health`, `/livez` and `/readyz` but
    /// not `/metrics`).
    #[arg(long, env = "INGEST_ADMIN_ADDR", default_value = "0.0.0.0:8082")]
    pub admin_addr: SocketAddr,

    /// How often the database is checked for `/health` and `/readyz`, which answer from the
    /// last check instead of querying per request.
    #[arg(long, env = "HEALTH_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,

    /// Clients' API keys: `tenant:key` pairs, comma-separated (required to serve; `migrate`
    /// does without).
    #[arg(
        long,
        env = "API_KEYS",
        hide_env_values = true,
        default_value = "",
        hide_default_value = true
    )]
    pub api_keys: String,

    /// Events per second allowed per API key and instance (0: no limit). A request of 500
    /// events counts 500, invalid ones included; one over the limit is refused whole (429).
    /// An app's key is shared by every install of the app, so this caps a whole tenant: the
    /// default is above what one instance can store (~40,000 single events/s on two cores),
    /// so a tenant is never throttled by its own ordinary load — only a runaway key is.
    #[arg(long, env = "RATE_LIMIT_EVENTS_PER_SEC", default_value_t = 100_000)]
    pub rate_limit_events_per_sec: u32,

    /// Events a key may send at once above the steady rate; a single request with more is
    /// refused with 413.
    #[arg(long, env = "RATE_LIMIT_EVENTS_BURST", default_value_t = 100_000)]
    pub rate_limit_events_burst: u32,

    /// Requests per second allowed per client address and instance (0, the default: no
    /// limit), so one address cannot take a whole key's share. Off by default because a
    /// benchmark or a server-side integration sends everything from one address; behind a
    /// load balancer set TRUSTED_PROXY_HOPS too (the Kubernetes manifests do both).
    #[arg(long, env = "RATE_LIMIT_ADDRESS_RPS", default_value_t = 0)]
    pub rate_limit_address_rps: u32,

    /// Requests an address may send at once above RATE_LIMIT_ADDRESS_RPS.
    #[arg(long, env = "RATE_LIMIT_ADDRESS_BURST", default_value_t = 0)]
    pub rate_limit_address_burst: u32,

    /// Proxies in front of ingest-api that append the client address to X-Forwarded-For
    /// (0: none, the peer address is the client's; 1: one load balancer or ingress). Only the
    /// entry the nearest trusted proxy wrote is believed: the rest is whatever clients sent.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,

    /// Browser origins allowed by CORS, comma-separated (`*` for any; empty: none).
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,

    /// Largest request body, in bytes, as sent (compressed or not).
    #[arg(long, env = "BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Largest request body after gzip decompression, in bytes.
    #[arg(long, env = "DECOMPRESSED_LIMIT_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub decompressed_limit_bytes: usize,

    /// Rating-map TOML file overriding or adding rating profiles (empty: built-in profiles).
    // A string, not a path: `RATING_MAP_FILE=` (empty, as in .env.example) must mean "none".
    #[arg(long, env = "RATING_MAP_FILE", default_value = "")]
    pub rating_map_file: String,

    /// Most events in one request.
    #[arg(long, env = "MAX_BATCH_EVENTS", default_value_t = 1000)]
    pub max_batch_events: usize,

    /// How far ahead of the server clock an event's timestamp may be (after clock-skew
    /// correction).
    #[arg(long, env = "MAX_FUTURE_SKEW", default_value = "5m", value_parser = parse_duration)]
    pub max_future_skew: Duration,

    /// Oldest event accepted (0, the default: any age — history imports and apps offline for
    /// weeks send old events on purpose). Timestamps before 2000 are refused regardless.
    #[arg(long, env = "MAX_EVENT_AGE", default_value = "0", value_parser = parse_duration)]
    pub max_event_age: Duration,

    /// How far a request's `sentAt` (the device clock) may be from the server clock before
    /// its events' timestamps are corrected by the difference. Above network delay, so a slow
    /// request is never mistaken for a wrong clock.
    #[arg(long, env = "CLOCK_SKEW_THRESHOLD", default_value = "60s", value_parser = parse_duration)]
    pub clock_skew_threshold: Duration,

    /// Most events one database write (and one AMQP message) carries.
    #[arg(long, env = "WRITE_BATCH_EVENTS", default_value_t = 1000)]
    pub write_batch_events: usize,

    /// Most database writes in flight at once. Requests that arrive while a write is in
    /// flight wait for it and share the next one; a further write starts beside it only for
    /// a full group of WRITE_BATCH_EVENTS.
    #[arg(long, env = "WRITERS", default_value_t = 4)]
    pub writers: usize,

    /// Events that may wait for a write; beyond it requests wait, then get 503.
    #[arg(long, env = "WRITE_QUEUE_EVENTS", default_value_t = 50_000)]
    pub write_queue_events: usize,

    /// Bytes of events (estimated) that may wait for a write; beyond it requests wait, then
    /// get 503. Binds before WRITE_QUEUE_EVENTS when events are large.
    #[arg(long, env = "WRITE_QUEUE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub write_queue_bytes: usize,

    /// Bytes of committed chunks (estimated) waiting for, or in, their publish; beyond it
    /// chunks stay pending and the relay publishes them.
    #[arg(long, env = "PUBLISH_QUEUE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub publish_queue_bytes: usize,

    /// How long a request waits for room in the write queue before 503.
    #[arg(long, env = "WRITE_QUEUE_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub write_queue_timeout: Duration,

    /// How often the relay looks for chunks the broker never confirmed.
    #[arg(long, env = "RELAY_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub relay_interval: Duration,

    /// How old an unpublished chunk must be before the relay re-publishes it.
    #[arg(long, env = "RELAY_AFTER", default_value = "15s", value_parser = parse_duration)]
    pub relay_after: Duration,

    /// Bytes of events (estimated) one relay or reconciler round loads at most (one chunk
    /// if that alone is larger).
    #[arg(long, env = "RELAY_BATCH_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub relay_batch_bytes: usize,

    /// How often the reconciler looks for chunks published but never finished.
    #[arg(long, env = "RECONCILE_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub reconcile_interval: Duration,

    /// How long a chunk may stay published and unfinished before the reconciler publishes it
    /// again. Keep it well above the forwarder's whole retry schedule (MAX_ATTEMPTS trips of
    /// up to 10 min, about 90 min): a chunk still in a retry queue that is published again
    /// may reach Ncanto twice.
    #[arg(long, env = "RECONCILE_AFTER", default_value = "3h", value_parser = parse_duration)]
    pub reconcile_after: Duration,

    /// Seconds clients are told to wait (Retry-After) when the database is unavailable.
    #[arg(long, env = "RETRY_AFTER_SECONDS", default_value_t = 5)]
    pub retry_after_seconds: u64,

    /// How long shutdown waits for in-flight requests and publishes.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: interaction_runtime::LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_example_documents_every_option_with_a_value_that_parses() {
        use clap::CommandFactory;
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example");
        let env = interaction_runtime::env_file_args(&Cli::command(), path.as_ref()).unwrap();
        assert!(env.without_env.is_empty(), "{:?}", env.without_env);
        let cli = Cli::try_parse_from(&env.args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.config.writers, 4);
        assert_eq!(cli.config.rating_map_file, "");
    }

    #[test]
    fn migrate_needs_no_api_keys_but_serving_refuses_to_start_without() {
        let cli =
            Cli::try_parse_from(["ingest-api", "--database-url", "postgres://x/y", "migrate"])
                .unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.config.api_keys, "");
        let error = crate::auth::ApiKeys::parse(&cli.config.api_keys).unwrap_err();
        assert!(error.contains("API_KEYS is empty"), "{error}");
    }

    #[test]
    fn every_option_has_an_environment_variable() {
        use clap::CommandFactory;
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
        }
    }
}
