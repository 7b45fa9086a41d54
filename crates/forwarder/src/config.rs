//! Configuration: flags or environment variables (and `.env` for local runs). `forwarder
//! --help` and `forwarder <command> --help` list every option with its variable.

use std::net::SocketAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use interaction_runtime::{Connections, LogFormat, parse_duration};

/// Delivers stored interaction events from RabbitMQ to Ncanto; also re-drives parked work,
/// replays stored events and purges old ones.
#[derive(Debug, Clone, Parser)]
#[command(name = "forwarder", version, about, long_about = None)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Settings shared by every command.
    #[command(flatten)]
    pub config: Config,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Consume the forward queue and deliver to Ncanto (the default).
    Serve,
    /// Move parked messages back to the forward queue.
    Redrive(RedriveArgs),
    /// Send a tenant's stored events to Ncanto again (for when Ncanto lost data).
    Replay(ReplayArgs),
    /// Delete forwarded events older than a cutoff (retention).
    Purge(PurgeArgs),
    /// Apply pending database migrations, then exit.
    Migrate,
}

/// `forwarder redrive`.
#[derive(Debug, Clone, Args)]
pub struct RedriveArgs {
    /// Only messages of these chunks (repeatable).
    #[arg(long = "chunk", value_name = "ID")]
    pub chunks: Vec<i64>,
    /// Only messages of this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// At most this many messages.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Show what would move, move nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `forwarder replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The tenant whose events to send again.
    #[arg(long)]
    pub tenant: String,
    /// Events received at or after this instant (RFC 3339).
    #[arg(long)]
    pub since: DateTime<Utc>,
    /// Events received before this instant (RFC 3339); now when omitted.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    /// Count what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Most events per second (0: as fast as Ncanto takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
}

/// `forwarder purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Delete forwarded events received longer ago than this (e.g. 30d).
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Duration,
    /// Count what would be deleted, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Settings of the forwarder.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// PostgreSQL and RabbitMQ connections.
    #[command(flatten)]
    pub connections: Connections,

    /// Messages (chunks) delivered at once by this process: the consumer's prefetch.
    #[arg(long, env = "PREFETCH", default_value_t = 16)]
    pub prefetch: u16,

    /// Ncanto's base URL (`/interactions` is appended).
    #[arg(long, env = "NCANTO_API_URL", default_value = "http://127.0.0.1:8090")]
    pub ncanto_api_url: String,

    /// Ncanto API key (empty: none sent).
    #[arg(
        long,
        env = "NCANTO_API_KEY",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub ncanto_api_key: String,

    /// Header carrying the key (`Authorization` sends `Bearer <key>`, others the bare key).
    #[arg(long, env = "NCANTO_AUTH_HEADER", default_value = "Authorization")]
    pub ncanto_auth_header: String,

    /// Events per Ncanto call (1: one object per call).
    #[arg(long, env = "NCANTO_BATCH_SIZE", default_value_t = 100)]
    pub ncanto_batch_size: usize,

    /// Timeout of one Ncanto call.
    #[arg(long, env = "NCANTO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ncanto_timeout: Duration,

    /// In-process retries of a failing call before the events go to a retry queue.
    #[arg(long, env = "INLINE_RETRIES", default_value_t = 3)]
    pub inline_retries: u32,

    /// First in-process retry delay (doubles per retry).
    #[arg(long, env = "RETRY_BASE", default_value = "200ms", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Longest in-process retry delay; longer waits go through the retry queues.
    #[arg(long, env = "RETRY_INLINE_MAX", default_value = "2s", value_parser = parse_duration)]
    pub retry_inline_max: Duration,

    /// Trips through the retry queues (5s, 30s, 2m, 10m, 10m…) before events are parked.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 12)]
    pub max_attempts: u32,

    /// Address of the admin HTTP port (/livez, /readyz, /health, /metrics).
    #[arg(long, env = "FORWARDER_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: SocketAddr,

    /// Purge forwarded events older than this, periodically while serving (0: never).
    #[arg(long, env = "PURGE_OLDER_THAN", default_value = "0", value_parser = parse_duration)]
    pub purge_older_than: Duration,

    /// How often the periodic purge runs.
    #[arg(long, env = "PURGE_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub purge_interval: Duration,

    /// Rows deleted per purge statement (keeps locks and WAL bursts small).
    #[arg(long, env = "PURGE_BATCH", default_value_t = 10_000)]
    pub purge_batch: i64,

    /// How long shutdown waits for in-flight deliveries.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_shared_option_has_an_environment_variable_in_env_example() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example");
        let env = interaction_runtime::env_file_args(&Cli::command(), path.as_ref()).unwrap();
        assert!(env.without_env.is_empty(), "{:?}", env.without_env);
        let cli = Cli::try_parse_from(&env.args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cli.config.ncanto_batch_size, 100);
    }

    #[test]
    fn subcommands_parse_their_arguments() {
        let base = ["forwarder", "--database-url", "postgres://x/y"];
        let parse = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            Cli::try_parse_from(args).map(|c| c.command)
        };
        assert!(parse(&[]).unwrap().is_none());
        let Some(Command::Replay(replay)) = parse(&[
            "replay",
            "--tenant",
            "acme",
            "--since",
            "2025-07-01T00:00:00Z",
            "--rate",
            "500",
        ])
        .unwrap() else {
            panic!("replay")
        };
        assert_eq!(
            (replay.tenant.as_str(), replay.rate, replay.until),
            ("acme", 500, None)
        );
        let Some(Command::Redrive(redrive)) =
            parse(&["redrive", "--chunk", "4", "--chunk", "9", "--dry-run"]).unwrap()
        else {
            panic!("redrive")
        };
        assert_eq!((redrive.chunks, redrive.dry_run), (vec![4, 9], true));
        let Some(Command::Purge(purge)) = parse(&["purge", "--older-than", "30d"]).unwrap() else {
            panic!("purge")
        };
        assert_eq!(purge.older_than, Duration::from_secs(30 * 86_400));
        assert!(parse(&["replay", "--tenant", "a", "--since", "yesterday"]).is_err());
        assert!(parse(&["purge"]).is_err(), "--older-than is required");
    }
}
