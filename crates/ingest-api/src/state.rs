//! What every request handler shares.

use std::sync::Arc;
use std::time::Instant;

use interaction_bus::Publisher;
use interaction_core::{Limits, RatingMap};
use interaction_runtime::PrometheusHandle;

use crate::auth::{ApiKeys, RateLimits};
use crate::batcher::Batcher;
use crate::health::HealthView;

/// Shared, read-mostly state of the HTTP API.
pub struct AppState {
    /// Who may call.
    pub keys: ApiKeys,
    /// Events per key, requests per address.
    pub rate_limits: Arc<RateLimits>,
    /// Rating profiles and which tenant uses which.
    pub rating: RatingMap,
    /// Normalization limits.
    pub limits: Limits,
    /// Where events are written.
    pub batcher: Batcher,
    /// What the background health check last saw.
    pub health: HealthView,
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
