//! Operational endpoints: `/health` (the spec's JSON), `/livez`, `/readyz`, `/metrics`.
//! `/health` and `/readyz` answer from the background check of [`crate::health`].

use std::sync::atomic::Ordering;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::state::AppState;

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
