//! The binary's configuration: one typed struct, read from command-line flags or environment
//! variables (and a `.env` file for local runs). `ncanto-mock --help` lists every option with
//! its variable; `.env.example` documents each.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};

use crate::faults::{Faults, Outage};
use crate::server::{MockConfig, TlsFiles};
use interaction_runtime::LogFormat;

/// A fake Ncanto recommendation API (`POST /interactions`) for local runs, tests and
/// benchmarks: validates events strictly, counts them, and injects faults on demand.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ncanto-mock",
    version,
    about,
    long_about = None,
    after_help = "Log levels come from RUST_LOG (env_logger syntax, default info).\n\
                  Faults can be changed at run time: POST /faults with a JSON object \
                  (GET /faults shows the fields), DELETE /faults clears them. GET /stats \
                  shows the counts, DELETE /stats resets them. The admin address keeps \
                  serving while an outage=refuse closes the main address."
)]
pub struct Config {
    /// Address of the fake Ncanto API (also serves the admin routes).
    #[arg(long, env = "NCANTO_MOCK_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,

    /// Address serving only the admin routes (/stats, /faults, /health), never closed by an
    /// outage; empty or `none` for no admin address.
    // The leading `::` keeps clap from treating the value as an optional argument: the
    // parser itself maps "none" to None.
    #[arg(
        long,
        env = "NCANTO_MOCK_ADMIN_ADDR",
        default_value = "127.0.0.1:8091",
        value_parser = parse_optional_addr
    )]
    pub admin_addr: ::std::option::Option<SocketAddr>,

    /// Certificate chain (PEM) to serve https on the main address; requires --tls-key
    /// (empty: plain http). The admin address stays plain http.
    // `::std::option::Option`: clap leaves the type alone; the parser maps "" to None.
    #[arg(
        long,
        env = "NCANTO_MOCK_TLS_CERT",
        default_value = "",
        hide_default_value = true,
        value_parser = parse_optional_path
    )]
    pub tls_cert: ::std::option::Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "NCANTO_MOCK_TLS_KEY",
        default_value = "",
        hide_default_value = true,
        value_parser = parse_optional_path
    )]
    pub tls_key: ::std::option::Option<PathBuf>,

    /// API key required as `Authorization: Bearer <key>` on /interactions (empty: none).
    #[arg(long, env = "NCANTO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Fraction (0..=1) of requests answered 500.
    #[arg(long, env = "NCANTO_MOCK_ERROR_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub error_rate: f64,

    /// Milliseconds added before answering each request.
    #[arg(long, env = "NCANTO_MOCK_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,

    /// Fraction (0..=1) of requests answered 429.
    #[arg(long, env = "NCANTO_MOCK_RATE_LIMIT_RATE", default_value_t = 0.0, value_parser = parse_fraction)]
    pub rate_limit_rate: f64,

    /// Retry-After seconds on the injected 429s.
    #[arg(long, env = "NCANTO_MOCK_RETRY_AFTER", default_value_t = 1)]
    pub retry_after: u64,

    /// Refuse (400) requests holding an event whose assetId contains this text (empty: none).
    #[arg(long, env = "NCANTO_MOCK_REJECT_ASSET_PATTERN", default_value = "")]
    pub reject_asset_pattern: String,

    /// Fail (500) requests holding an event whose assetId contains this text (empty: none).
    #[arg(long, env = "NCANTO_MOCK_FAIL_ASSET_PATTERN", default_value = "")]
    pub fail_asset_pattern: String,

    /// Full outage from the start.
    #[arg(long, env = "NCANTO_MOCK_OUTAGE", value_enum, default_value_t = OutageSetting::None)]
    pub outage: OutageSetting,

    /// Keep every accepted event in memory (for tests; turn off for benchmarks).
    #[arg(
        long,
        env = "NCANTO_MOCK_RECORD_EVENTS",
        default_value_t = true,
        action = ArgAction::Set,
        overrides_with = "no_record_events"
    )]
    pub record_events: bool,

    /// Same as --record-events=false.
    #[arg(long, action = ArgAction::SetTrue, overrides_with = "record_events")]
    pub no_record_events: bool,

    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "NCANTO_MOCK_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Seconds between log lines with the counts (0: none).
    #[arg(long, env = "NCANTO_MOCK_STATS_LOG_SECS", default_value_t = 60)]
    pub stats_log_secs: u64,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `NCANTO_MOCK_OUTAGE`: an [`Outage`], or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutageSetting {
    /// No outage.
    None,
    /// Connections refused.
    Refuse,
    /// Requests accepted, never answered.
    Hang,
    /// Every request answered 503.
    Error,
}

impl OutageSetting {
    /// The outage this setting asks for.
    pub fn outage(self) -> Option<Outage> {
        match self {
            Self::None => None,
            Self::Refuse => Some(Outage::Refuse),
            Self::Hang => Some(Outage::Hang),
            Self::Error => Some(Outage::Error),
        }
    }
}

impl Config {
    /// Whether accepted events are kept.
    pub fn records_events(&self) -> bool {
        self.record_events && !self.no_record_events
    }

    /// The faults these settings start with.
    pub fn faults(&self) -> Faults {
        Faults {
            error_rate: self.error_rate,
            latency_ms: self.latency_ms,
            rate_limit_rate: self.rate_limit_rate,
            retry_after_secs: self.retry_after,
            reject_asset_pattern: Some(self.reject_asset_pattern.trim())
                .filter(|pattern| !pattern.is_empty())
                .map(str::to_owned),
            fail_asset_pattern: Some(self.fail_asset_pattern.trim())
                .filter(|pattern| !pattern.is_empty())
                .map(str::to_owned),
            outage: self.outage.outage(),
        }
    }

    /// The interval of the counts' log lines, if any.
    pub fn stats_log_every(&self) -> Duration {
        Duration::from_secs(self.stats_log_secs)
    }

    /// The https files, when both are set; an error when only one is.
    pub fn tls(&self) -> anyhow::Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "NCANTO_MOCK_TLS_CERT is set but NCANTO_MOCK_TLS_KEY is not: https needs both"
            ),
            (None, Some(_)) => anyhow::bail!(
                "NCANTO_MOCK_TLS_KEY is set but NCANTO_MOCK_TLS_CERT is not: https needs both"
            ),
        }
    }

    /// The library's configuration; fails when only one of the https files is given.
    pub fn mock_config(&self) -> anyhow::Result<MockConfig> {
        Ok(MockConfig {
            addr: self.addr,
            faults: self.faults(),
            expected_api_key: self
                .api_key
                .as_deref()
                .map(str::trim)
                .filter(|key| !key.is_empty())
                .map(str::to_owned),
            admin_addr: self.admin_addr,
            record_events: self.records_events(),
            workers: self.workers,
            tls: self.tls()?,
        })
    }
}

/// Parses a file path, or `""` for none.
pub fn parse_optional_path(text: &str) -> Result<Option<PathBuf>, String> {
    let text = text.trim();
    Ok((!text.is_empty()).then(|| PathBuf::from(text)))
}

/// Parses a socket address, or `""`/`none` for none.
pub fn parse_optional_addr(text: &str) -> Result<Option<SocketAddr>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| format!("{text:?} is not an address like 127.0.0.1:8091: {e}"))
}

/// Parses a fraction within 0..=1.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() && (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{text} is not within 0..=1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("ncanto-mock").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_are_a_plain_local_mock() {
        let config = parse(&[]).mock_config().unwrap();
        assert_eq!(config.addr, "127.0.0.1:8090".parse().unwrap());
        assert_eq!(config.admin_addr, Some("127.0.0.1:8091".parse().unwrap()));
        assert_eq!(config.faults.outage, None);
        assert_eq!(config.faults.reject_asset_pattern, None);
        assert_eq!(config.faults.fail_asset_pattern, None);
        assert!(config.record_events);
    }

    #[test]
    fn every_fault_can_be_set_from_flags() {
        let config = parse(&[
            "--error-rate=0.25",
            "--latency-ms=15",
            "--rate-limit-rate=0.5",
            "--retry-after=3",
            "--reject-asset-pattern=bad_",
            "--fail-asset-pattern=flaky_",
            "--outage=hang",
            "--admin-addr=none",
            "--api-key=k1",
            "--no-record-events",
        ])
        .mock_config()
        .unwrap();
        assert_eq!(
            config.faults,
            Faults {
                error_rate: 0.25,
                latency_ms: 15,
                rate_limit_rate: 0.5,
                retry_after_secs: 3,
                reject_asset_pattern: Some("bad_".into()),
                fail_asset_pattern: Some("flaky_".into()),
                outage: Some(Outage::Hang),
            }
        );
        assert_eq!(config.admin_addr, None);
        assert_eq!(config.expected_api_key.as_deref(), Some("k1"));
        assert!(!config.record_events);
        assert!(!parse(&["--record-events=false"]).records_events());
    }

    #[test]
    fn https_needs_both_the_certificate_and_the_key() {
        assert_eq!(parse(&[]).mock_config().unwrap().tls, None);
        assert_eq!(
            parse(&["--tls-cert=", "--tls-key="])
                .mock_config()
                .unwrap()
                .tls,
            None
        );
        let both = parse(&["--tls-cert=/c.pem", "--tls-key=/k.pem"]);
        assert_eq!(
            both.mock_config().unwrap().tls,
            Some(TlsFiles {
                cert_file: "/c.pem".into(),
                key_file: "/k.pem".into(),
            })
        );
        let error = parse(&["--tls-cert=/c.pem"]).mock_config().unwrap_err();
        assert!(
            error.to_string().contains("NCANTO_MOCK_TLS_KEY is not"),
            "{error}"
        );
        let error = parse(&["--tls-key=/k.pem"]).mock_config().unwrap_err();
        assert!(
            error.to_string().contains("NCANTO_MOCK_TLS_CERT is not"),
            "{error}"
        );
    }

    #[test]
    fn out_of_range_fractions_and_bad_addresses_are_refused() {
        for args in [
            ["--error-rate=1.5"],
            ["--rate-limit-rate=-0.1"],
            ["--error-rate=NaN"],
            ["--admin-addr=localhost"],
            ["--outage=down"],
        ] {
            assert!(
                Config::try_parse_from(std::iter::once("ncanto-mock").chain(args)).is_err(),
                "{args:?}"
            );
        }
    }

    #[test]
    fn every_option_has_an_environment_variable() {
        for arg in Config::command().get_arguments() {
            let id = arg.get_id().as_str();
            // --no-record-events is the flag form of NCANTO_MOCK_RECORD_EVENTS.
            if matches!(id, "help" | "version" | "no_record_events") {
                continue;
            }
            assert!(
                arg.get_env().is_some(),
                "--{id} has no environment variable"
            );
        }
    }

    #[test]
    fn env_example_documents_every_option_with_a_value_that_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.env.example");
        let env = interaction_runtime::env_file_args(&Config::command(), path.as_ref()).unwrap();
        let config = Config::try_parse_from(&env.args).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.tls().unwrap(), None, "plain http by default");
        assert_eq!(
            config.faults(),
            Faults {
                retry_after_secs: 1,
                ..Faults::default()
            }
        );
    }
}
