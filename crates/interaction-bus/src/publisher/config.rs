//! How to reach the broker and how patient to be: [`BusConfig`].

use crate::{
    connect::{check_connection_settings, redact_url},
    error::BusError,
};
use secrecy::{ExposeSecret, SecretString};
use std::{fmt, path::PathBuf, time::Duration};

/// Floor of the reconnect delay, whatever the configuration says: a zero delay against a
/// refusing port would spin a core.
pub(super) const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(10);

/// How to reach the broker and how patient to be.
#[derive(Clone)]
pub struct BusConfig {
    /// `AMQP_URL`, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` or `amqps://…` for TLS. A
    /// secret (it holds the password): exposed only to open the connection, logged redacted.
    pub url: SecretString,
    /// `AMQP_CA_FILE`: a PEM bundle of CAs trusted for `amqps://` in addition to the system
    /// roots (a private PKI). `None`: the system roots only.
    pub ca_file: Option<PathBuf>,
    /// `AMQP_PREFIX`: names every exchange and queue (see [`crate::Topology`]).
    pub prefix: String,
    /// How long one publish may wait for its confirm (and for its turn to send) before it
    /// fails with [`crate::PublishError::ConfirmTimeout`]. Default 5 s.
    pub confirm_timeout: Duration,
    /// First delay before reconnecting; doubles per failed attempt. Default 250 ms.
    pub reconnect_min: Duration,
    /// Longest delay between attempts. Default 30 s.
    pub reconnect_max: Duration,
}

impl BusConfig {
    /// `url` and `prefix` with the default timings and no CA file.
    pub fn new(url: impl Into<SecretString>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            prefix: prefix.into(),
            confirm_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
        }
    }
}

impl BusConfig {
    /// Checks what can be checked before connecting: the URL is an AMQP URL and the CA file,
    /// if any, can be read and holds a certificate. Binaries call it at start-up so that a
    /// configuration mistake stops them instead of looping in reconnect attempts.
    pub fn check(&self) -> Result<(), BusError> {
        check_connection_settings(&self.url, self.ca_file.as_deref())
    }
}

impl Default for BusConfig {
    /// The local development broker (as in `.env.example`) and prefix `interactions`.
    fn default() -> Self {
        Self::new("amqp://guest:guest@127.0.0.1:5672/%2f", "interactions")
    }
}

impl fmt::Debug for BusConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusConfig")
            .field("url", &redact_url(self.url.expose_secret()))
            .field("ca_file", &self.ca_file)
            .field("prefix", &self.prefix)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("reconnect_min", &self.reconnect_min)
            .field("reconnect_max", &self.reconnect_max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_the_config_hides_the_password() {
        let config = BusConfig {
            ca_file: Some("/etc/rabbit/ca.pem".into()),
            ..BusConfig::new("amqps://user:hunter2@rabbit:5671/%2f", "p")
        };
        let text = format!("{config:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("user:***@rabbit:5671"), "{text}");
        assert!(text.contains("/etc/rabbit/ca.pem"), "{text}");
    }
}
