//! The Ncanto API client: `POST {NCANTO_API_URL}/interactions` with one canonical event or an
//! array of them, and the classification of every outcome into success, transient or permanent.

use std::time::{Duration, Instant};

use interaction_core::Interaction;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};

use crate::retry::{SendError, is_retryable_status, parse_retry_after};

/// The header naming the tenant whose events a call carries.
pub const TENANT_HEADER: &str = "x-tenant";

/// Client settings.
#[derive(Debug, Clone)]
pub struct NcantoConfig {
    /// Base URL, e.g. `https://api.ncanto.example`; `/interactions` is appended.
    pub url: String,
    /// The API key; sent in `auth_header`.
    pub api_key: String,
    /// Header carrying the key: with `authorization` the value is `Bearer <key>`, with any
    /// other header the bare key.
    pub auth_header: String,
    /// Per-call timeout (connect + response).
    pub timeout: Duration,
    /// Events per call; 1 sends a single object instead of an array.
    pub batch_size: usize,
}

/// A Ncanto client. Cheap to clone (connection pool shared).
#[derive(Clone)]
pub struct NcantoClient {
    http: reqwest::Client,
    endpoint: String,
    auth: Option<(HeaderName, HeaderValue)>,
    batch_size: usize,
}

impl NcantoClient {
    /// Builds the client; fails on a malformed header name or key.
    pub fn new(config: &NcantoConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .build()?;
        let auth = if config.api_key.is_empty() {
            None
        } else {
            let name = HeaderName::from_bytes(config.auth_header.trim().as_bytes())?;
            let value = if name == reqwest::header::AUTHORIZATION {
                format!("Bearer {}", config.api_key)
            } else {
                config.api_key.clone()
            };
            let mut value = HeaderValue::from_str(&value)?;
            value.set_sensitive(true);
            Some((name, value))
        };
        Ok(Self {
            http,
            endpoint: format!("{}/interactions", config.url.trim_end_matches('/')),
            auth,
            batch_size: config.batch_size.max(1),
        })
    }

    /// Events per call.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Sends one call with `events` (at most [`Self::batch_size`]).
    pub async fn send(&self, tenant: &str, events: &[&Interaction]) -> Result<(), SendError> {
        let body = if self.batch_size == 1 && events.len() == 1 {
            serde_json::to_vec(events[0])
        } else {
            serde_json::to_vec(events)
        }
        .map_err(|e| SendError::Permanent {
            reason: format!("cannot encode events: {e}"),
            status: 0,
        })?;
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(TENANT_HEADER, tenant)
            .body(body);
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let started = Instant::now();
        let result = request.send().await;
        metrics::histogram!("forwarder_ncanto_seconds").record(started.elapsed().as_secs_f64());
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                metrics::counter!("forwarder_ncanto_calls_total", "outcome" => "error")
                    .increment(1);
                return Err(SendError::Transient {
                    reason: describe(&error),
                    retry_after: None,
                });
            }
        };
        let status = response.status().as_u16();
        metrics::counter!("forwarder_ncanto_calls_total", "outcome" => status.to_string())
            .increment(1);
        if response.status().is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // A short excerpt of Ncanto's answer makes failure records actionable.
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(300).collect();
        let reason = format!("Ncanto answered {status}: {}", excerpt.trim());
        if is_retryable_status(status) {
            Err(SendError::Transient {
                reason,
                retry_after,
            })
        } else {
            Err(SendError::Permanent { reason, status })
        }
    }
}

fn describe(error: &reqwest::Error) -> String {
    // Without the URL: it is configuration, and the same for every call.
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = format!("Ncanto {kind}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
