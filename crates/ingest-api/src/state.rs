//! What every request handler shares.

use std::num::NonZeroU32;
use std::time::Instant;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use interaction_bus::Publisher;
use interaction_core::{Limits, RatingMap};
use interaction_runtime::PrometheusHandle;
use interaction_store::Store;

use crate::auth::ApiKeys;
use crate::batcher::Batcher;
use crate::error::ApiError;

/// Shared, read-mostly state of the HTTP API.
pub struct AppState {
    /// Who may call.
    pub keys: ApiKeys,
    /// Requests per second per key; `None` when unlimited.
    pub limiter: Option<DefaultKeyedRateLimiter<usize>>,
    /// Rating profiles and which tenant uses which.
    pub rating: RatingMap,
    /// Normalization limits.
    pub limits: Limits,
    /// Where events are written.
    pub batcher: Batcher,
    /// For health checks.
    pub store: Store,
    /// For health checks.
    pub publisher: Publisher,
    /// Largest body as sent.
    pub body_limit: usize,
    /// Largest body decompressed.
    pub decompressed_limit: usize,
    /// Retry-After for 503s.
    pub retry_after: u64,
    /// Process start, for `uptime`.
    pub started: Instant,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set when shutdown begins: readiness turns false so load balancers stop sending.
    pub stopping: std::sync::atomic::AtomicBool,
}

/// Builds the per-key limiter; `None` when `rps` is 0.
pub fn rate_limiter(rps: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<usize>> {
    let rps = NonZeroU32::new(rps)?;
    let burst = NonZeroU32::new(burst).unwrap_or(rps);
    Some(RateLimiter::keyed(
        Quota::per_second(rps).allow_burst(burst),
    ))
}

impl AppState {
    /// Counts a request against the key's rate; refuses it with Retry-After when over.
    pub fn check_rate(&self, key_index: usize) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key_index).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            metrics::counter!("ingest_rate_limited_total").increment(1);
            ApiError::RateLimited {
                // Retry-After is in whole seconds; round up so a retry is not refused again.
                retry_after: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}
