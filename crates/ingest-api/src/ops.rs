//! Operational endpoints: `/health` (the spec's JSON), `/livez`, `/readyz`, `/metrics`, and
//! the background check they answer from.
//!
//! `/health` is public and `/readyz` is probed by every load balancer: neither touches the
//! database per call. One task per instance checks the database every `HEALTH_INTERVAL` and
//! the handlers read its last result, so a flood of health checks costs memory reads, never
//! a pool connection that a write is waiting for.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::{HttpResponse, web};
use interaction_store::Store;
use serde::Serialize;
use tokio::sync::watch;

use crate::auth::RateLimits;
use crate::state::AppState;

/// How long a background check waits for the database.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// How often idle clients are dropped from the rate limiters' memory.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(10);

/// What the last background check saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checked {
    /// Accepted events not yet forwarded; `None` when the database did not answer.
    pub pending: Option<i64>,
    /// When the check finished; `None` before the first one.
    pub at: Option<Instant>,
}

/// The background check's results, as handlers read them.
#[derive(Debug, Clone)]
pub struct HealthView {
    checked: watch::Receiver<Checked>,
    /// Past this age a result no longer counts (a check that hangs must not leave a stale
    /// "database: true" behind).
    max_age: Duration,
}

impl HealthView {
    /// Pending events if the database answered the last check and that check is recent.
    pub fn pending(&self) -> Option<i64> {
        let checked = *self.checked.borrow();
        let fresh = checked.at.is_some_and(|at| at.elapsed() <= self.max_age);
        checked.pending.filter(|_| fresh)
    }
}

/// Starts the background upkeep: the database check every `interval` (the first at once) and
/// forgetting idle clients of the rate limiters. Stops when `stop` turns true.
pub fn start_upkeep(
    store: Store,
    rate_limits: Arc<RateLimits>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) -> (HealthView, tokio::task::JoinHandle<()>) {
    let interval = interval.max(Duration::from_millis(10));
    let (publish, checked) = watch::channel(Checked::default());
    let view = HealthView {
        checked,
        max_age: interval * 3 + CHECK_TIMEOUT,
    };
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_forget = Instant::now();
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let pending = tokio::time::timeout(CHECK_TIMEOUT, store.pending_event_count())
                .await
                .ok()
                .and_then(Result::ok);
            metrics::counter!("ingest_health_checks_total").increment(1);
            if let Some(pending) = pending {
                metrics::gauge!("ingest_pending_interactions").set(pending as f64);
            }
            publish.send_replace(Checked {
                pending,
                at: Some(Instant::now()),
            });
            if last_forget.elapsed() >= FORGET_IDLE_EVERY {
                forget_idle(&rate_limits);
                last_forget = Instant::now();
            }
        }
    });
    (view, task)
}

fn forget_idle(limits: &RateLimits) {
    limits.forget_idle();
    metrics::gauge!("ingest_rate_limited_addresses_tracked").set(limits.tracked_addresses() as f64);
}

/// The body of `/health`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when a dependency is away.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Seconds since start.
    pub uptime: u64,
    /// Whether the broker connection is up.
    pub rabbitmq: bool,
    /// Whether the database answers.
    pub database: bool,
    /// Accepted events not yet forwarded to Ncanto (null while the database is away).
    pub pending_interactions: Option<i64>,
    /// Service version.
    pub version: &'static str,
    /// Where the API documentation is.
    #[schema(example = "/docs")]
    pub documentation: &'static str,
}

/// `GET /health`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Service health: database, broker, events pending",
    responses(
        (status = 200, description = "Every dependency is up", body = Health),
        (status = 500, description = "Degraded: the database or the broker is away", body = Health),
    )
)]
pub async fn health(state: web::Data<AppState>) -> HttpResponse {
    let pending = state.health.pending();
    let database = pending.is_some();
    let rabbitmq = state.publisher.is_connected();
    let healthy = database && rabbitmq;
    let body = Health {
        status: if healthy { "ok" } else { "degraded" },
        uptime: state.started.elapsed().as_secs(),
        rabbitmq,
        database,
        pending_interactions: pending,
        version: env!("CARGO_PKG_VERSION"),
        documentation: "/docs",
    };
    if healthy {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::InternalServerError().json(body)
    }
}

/// `GET /livez`: the process serves HTTP. Never checks dependencies, so an outage of the
/// database does not make Kubernetes restart every pod.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "operations",
    summary = "Is the process alive",
    responses((status = 200, description = "Alive"))
)]
pub async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

/// `GET /readyz`: this instance can store events (the database answered the last background
/// check) and is not stopping. The broker is not required: chunks wait in PostgreSQL until it
/// is back.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Can this instance store events",
    responses((status = 200, description = "Ready"), (status = 503, description = "Not ready"))
)]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    if state.stopping.load(Ordering::Relaxed) {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "stopping"}));
    }
    match state.health.pending() {
        Some(_) => HttpResponse::Ok().json(serde_json::json!({"status": "ready"})),
        None => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "database unavailable"})),
    }
}

/// `GET /metrics` on the admin listener: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "Prometheus metrics", content_type = "text/plain"))
)]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
