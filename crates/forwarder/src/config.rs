//! Configuration: flags or environment variables (and `.env` for local runs). `forwarder
//! --help` and `forwarder <command> --help` list every option with its variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{ArgGroup, Args, Parser, Subcommand};
use interaction_runtime::{Connections, LogFormat, parse_duration, parse_optional_path};
use secrecy::SecretString;

/// Delivers stored interaction events from RabbitMQ to Ncanto; also re-drives parked work,
/// replays stored events, purges old ones and shows where an event is.
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
    /// Show where events are: received, chunk, published, delivered or parked (and why).
    Trace(TraceArgs),
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
    /// Resume after this event row id among the events received at --since exactly, as an
    /// interrupted replay says (0: from --since).
    #[arg(long, default_value_t = 0)]
    pub after_id: i64,
}

/// `forwarder purge`.
#[derive(Debug, Clone, Args)]
pub struct PurgeArgs {
    /// Drop the day partitions of events received longer ago than this (e.g. 30d).
    #[arg(long, value_parser = parse_duration)]
    pub older_than: Duration,
    /// List the partitions that would be dropped or kept, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `forwarder trace`: by `--event-id`, or `--subscriber` over a window of at most a day.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["event_id", "subscriber"])))]
pub struct TraceArgs {
    /// The tenant whose events to look up.
    #[arg(long)]
    pub tenant: String,
    /// The event with this eventId.
    #[arg(long, value_name = "ID")]
    pub event_id: Option<String>,
    /// The events of this subscriber received in the window.
    #[arg(long)]
    pub subscriber: Option<String>,
    /// Received at or after this instant (RFC 3339); a day before --until when omitted.
    #[arg(long, conflicts_with = "event_id")]
    pub since: Option<DateTime<Utc>>,
    /// Received before this instant (RFC 3339); now when omitted.
    #[arg(long, conflicts_with = "event_id")]
    pub until: Option<DateTime<Utc>>,
    /// At most this many events (1 to 1000; 100 when omitted).
    #[arg(long, conflicts_with = "event_id")]
    pub limit: Option<i64>,
    /// Print JSON (as GET /trace on the admin port) instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl TraceArgs {
    /// The lookup these arguments ask for; `now` ends a window without `--until`.
    pub fn query(
        &self,
        now: DateTime<Utc>,
    ) -> Result<crate::trace::TraceQuery, crate::trace::TraceError> {
        use crate::trace::TraceQuery;
        match (&self.event_id, &self.subscriber) {
            (Some(event_id), _) => Ok(TraceQuery::event(&self.tenant, event_id)),
            (None, Some(subscriber)) => TraceQuery::subscriber(
                &self.tenant,
                subscriber,
                self.since,
                self.until,
                self.limit,
                now,
            ),
            // clap requires one of them.
            (None, None) => Err(crate::trace::TraceError::MissingParameters(vec![
                "--event-id or --subscriber",
            ])),
        }
    }

    /// How to print.
    pub fn format(&self) -> crate::trace::Format {
        if self.json {
            crate::trace::Format::Json
        } else {
            crate::trace::Format::Table
        }
    }
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
    // A secret: `Debug` of the configuration shows it redacted (DESIGN.md invariant 6).
    #[arg(
        long,
        env = "NCANTO_API_KEY",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub ncanto_api_key: SecretString,

    /// PEM bundle of extra CA certificates trusted for Ncanto's https, besides the system's
    /// store (for a private PKI; empty: none). Certificates and host names are always verified.
    // `::std::option::Option`: clap then leaves the type alone and the parser maps "" (as in
    // .env.example) to None.
    #[arg(
        long,
        env = "NCANTO_CA_FILE",
        default_value = "",
        hide_default_value = true,
        value_parser = parse_optional_path
    )]
    pub ncanto_ca_file: ::std::option::Option<PathBuf>,

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

    /// Deadline of one message's Ncanto calls (with their in-process retries). Past it, the
    /// message's events go through the retry queue and are sent again later. Recording the
    /// outcome is not under it: while the database is away, consumption pauses and the
    /// delivery waits for it instead. Keep it above NCANTO_TIMEOUT x (INLINE_RETRIES + 1) plus the
    /// retry delays, times the calls of a chunk (WRITE_BATCH_EVENTS / NCANTO_BATCH_SIZE), or a
    /// merely slow Ncanto turns into repeated deliveries.
    #[arg(long, env = "DELIVERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub delivery_timeout: Duration,

    /// First in-process retry delay (doubles per retry).
    #[arg(long, env = "RETRY_BASE", default_value = "200ms", value_parser = parse_duration)]
    pub retry_base: Duration,

    /// Longest in-process retry delay; longer waits go through the retry queues.
    #[arg(long, env = "RETRY_INLINE_MAX", default_value = "2s", value_parser = parse_duration)]
    pub retry_inline_max: Duration,

    /// Trips through the retry queues (5s, 30s, 2m, 10m, 10m…) before events are parked.
    #[arg(long, env = "MAX_ATTEMPTS", default_value_t = 12)]
    pub max_attempts: u32,

    /// Address of the admin HTTP port (/livez, /readyz, /health, /metrics, /trace, /tenants).
    #[arg(long, env = "FORWARDER_ADMIN_ADDR", default_value = "0.0.0.0:8081")]
    pub admin_addr: SocketAddr,

    /// How often the `pending_events{tenant}` gauge is read from the database (one query over
    /// unfinished chunks; 0: never).
    #[arg(long, env = "PENDING_GAUGE_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub pending_gauge_interval: Duration,

    /// Purge forwarded events older than this, periodically while serving (0: never).
    #[arg(long, env = "PURGE_OLDER_THAN", default_value = "0", value_parser = parse_duration)]
    pub purge_older_than: Duration,

    /// How often the periodic purge runs.
    #[arg(long, env = "PURGE_INTERVAL", default_value = "1h", value_parser = parse_duration)]
    pub purge_interval: Duration,

    /// How long idempotency keys (`eventId`s) are kept: an event sent again within this is a
    /// duplicate, after it a new event. Applied by the periodic purge and `forwarder purge`.
    /// At least 7 days (0: keep them forever).
    #[arg(long, env = "DEDUP_WINDOW", default_value = "7d", value_parser = parse_dedup_window)]
    pub dedup_window: Duration,

    /// How long failure rows (events Ncanto refused, kept as sent for re-drive) are kept,
    /// by the periodic purge and `forwarder purge` (0: forever).
    #[arg(long, env = "PURGE_FAILURES_OLDER_THAN", default_value = "0", value_parser = parse_duration)]
    pub purge_failures_older_than: Duration,

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

impl Config {
    /// A warning when `DELIVERY_TIMEOUT` is shorter than one call's worst case with its
    /// in-process retries: every delivery that needs them would then be cut short.
    pub fn delivery_timeout_warning(&self) -> Option<String> {
        let calls = self.inline_retries.saturating_add(1);
        let worst_call = self
            .ncanto_timeout
            .saturating_mul(calls)
            .saturating_add(self.retry_inline_max.saturating_mul(self.inline_retries));
        (self.delivery_timeout < worst_call).then(|| {
            format!(
                "DELIVERY_TIMEOUT {:?} is shorter than one call's worst case with its \
                 in-process retries (NCANTO_TIMEOUT {:?} x {calls} + retry delays = \
                 {worst_call:?}): slow calls will be cut short and retried through the retry \
                 queues",
                self.delivery_timeout, self.ncanto_timeout
            )
        })
    }
}

/// `DEDUP_WINDOW`: a duration of at least 7 days, or 0 (keep keys forever). Shorter would
/// let a client's retry after a long offline period (the SDK keeps events for days) store an
/// event twice.
fn parse_dedup_window(value: &str) -> Result<Duration, String> {
    let window = parse_duration(value)?;
    if !window.is_zero() && window < Duration::from_secs(7 * 86_400) {
        return Err(format!(
            "{value} is shorter than 7 days (use 0 to keep keys forever)"
        ));
    }
    Ok(window)
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
        assert_eq!(
            cli.config.ncanto_ca_file, None,
            "NCANTO_CA_FILE= means none"
        );
        assert_eq!(cli.config.delivery_timeout, Duration::from_secs(60));
        assert_eq!(cli.config.delivery_timeout_warning(), None);
    }

    #[test]
    fn debug_of_the_configuration_never_shows_the_ncanto_api_key() {
        let key = "sk-live-5f2b9c0d7e";
        let cli = Cli::try_parse_from([
            "forwarder",
            "--database-url",
            "postgres://x/y",
            "--ncanto-api-key",
            key,
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains(key), "{debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
        let ncanto = crate::ncanto::NcantoConfig {
            url: "https://ncanto.example".into(),
            api_key: cli.config.ncanto_api_key.clone(),
            auth_header: "Authorization".into(),
            timeout: Duration::from_secs(1),
            batch_size: 1,
            ca_file: None,
        };
        assert!(!format!("{ncanto:?}").contains(key));
        use secrecy::ExposeSecret as _;
        assert_eq!(cli.config.ncanto_api_key.expose_secret(), key);
    }

    #[test]
    fn the_ca_file_and_the_delivery_timeout_parse() {
        let cli = Cli::try_parse_from([
            "forwarder",
            "--database-url",
            "postgres://x/y",
            "--ncanto-ca-file",
            "/etc/ncanto/ca.pem",
            "--delivery-timeout",
            "5s",
        ])
        .unwrap();
        assert_eq!(
            cli.config.ncanto_ca_file.as_deref(),
            Some(std::path::Path::new("/etc/ncanto/ca.pem"))
        );
        assert_eq!(cli.config.delivery_timeout, Duration::from_secs(5));
        // 10 s x 4 calls + 3 x 2 s of delays = 46 s > 5 s.
        let warning = cli.config.delivery_timeout_warning().unwrap();
        assert!(warning.contains("46s"), "{warning}");
    }

    #[test]
    fn the_dedup_window_is_a_week_or_more_or_zero() {
        let window = |value: &str| {
            Cli::try_parse_from([
                "forwarder",
                "--database-url",
                "postgres://x/y",
                "--dedup-window",
                value,
            ])
            .map(|cli| cli.config.dedup_window)
        };
        for (value, want) in [
            ("7d", Some(Duration::from_secs(7 * 86_400))),
            ("30d", Some(Duration::from_secs(30 * 86_400))),
            ("0", Some(Duration::ZERO)),
            ("6d", None),
            ("1h", None),
            ("soon", None),
        ] {
            assert_eq!(window(value).ok(), want, "{value}");
        }
        let default =
            Cli::try_parse_from(["forwarder", "--database-url", "postgres://x/y"]).unwrap();
        assert_eq!(default.config.dedup_window, Duration::from_secs(7 * 86_400));
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
        let Some(Command::Trace(trace)) =
            parse(&["trace", "--tenant", "acme", "--event-id", "e-1", "--json"]).unwrap()
        else {
            panic!("trace")
        };
        assert_eq!(
            (trace.event_id.as_deref(), trace.format()),
            (Some("e-1"), crate::trace::Format::Json)
        );
        let Some(Command::Trace(trace)) = parse(&[
            "trace",
            "--tenant",
            "acme",
            "--subscriber",
            "u1",
            "--since",
            "2026-11-30T00:00:00Z",
        ])
        .unwrap() else {
            panic!("trace")
        };
        assert_eq!(
            (trace.subscriber.as_deref(), trace.format()),
            (Some("u1"), crate::trace::Format::Table)
        );
        let now = "2026-11-30T06:00:00Z".parse().unwrap();
        assert!(trace.query(now).is_ok());
        assert!(
            parse(&["trace", "--tenant", "acme"]).is_err(),
            "--event-id or --subscriber is required"
        );
        assert!(
            parse(&[
                "trace",
                "--tenant",
                "a",
                "--event-id",
                "e",
                "--subscriber",
                "u"
            ])
            .is_err(),
            "not both"
        );
        assert!(
            parse(&[
                "trace",
                "--tenant",
                "a",
                "--event-id",
                "e",
                "--since",
                "2026-11-30T00:00:00Z"
            ])
            .is_err(),
            "--since is for a subscriber"
        );
        assert!(parse(&["replay", "--tenant", "a", "--since", "yesterday"]).is_err());
        assert!(parse(&["purge"]).is_err(), "--older-than is required");
    }
}
