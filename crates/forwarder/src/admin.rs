//! The forwarder's admin HTTP port: `/livez`, `/readyz`, `/health`, `/metrics`, and for
//! operators `/trace` (where an event is, see [`crate::trace`]) and `/tenants` (each tenant's
//! events by stage, see [`crate::tenants`]).

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, HttpServer, ResponseError, web};
use interaction_runtime::PrometheusHandle;
use serde::Serialize;

use crate::consumer::Context;
use crate::trace::{TraceError, TraceParams, TraceQuery};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct Admin {
    context: Arc<Context>,
    metrics: PrometheusHandle,
    started: Instant,
}

/// Why consumption is paused, in `/health` and `/readyz`.
#[derive(Debug, Serialize)]
pub struct PausedReport {
    /// What is away: `database` or `publisher`.
    pub dependency: &'static str,
    /// The latest error seen from it.
    pub reason: String,
    /// Seconds since the pause began.
    pub seconds: u64,
}

impl PausedReport {
    fn of(context: &Context) -> Option<Self> {
        context.pause.current().map(|paused| Self {
            dependency: paused.dependency.as_str(),
            reason: paused.reason,
            seconds: paused.since.elapsed().as_secs(),
        })
    }
}

/// The body of `/health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok`; `paused` while consumption waits for the database or the publisher (deliveries
    /// in hand are held, nothing is lost); `degraded` when the consumer is detached or the
    /// database is away otherwise.
    pub status: &'static str,
    /// Seconds since start.
    pub uptime: u64,
    /// Whether the consumer is attached to the forward queue.
    pub rabbitmq: bool,
    /// Why consumption is paused, if it is.
    pub paused: Option<PausedReport>,
    /// Whether the database answers.
    pub database: bool,
    /// Accepted events not yet forwarded (null while the database is away).
    pub pending_interactions: Option<i64>,
    /// Messages being delivered now.
    pub in_flight: usize,
    /// Version.
    pub version: &'static str,
}

/// Builds the admin server on a bound listener.
pub fn server(
    listener: TcpListener,
    context: Arc<Context>,
    metrics: PrometheusHandle,
) -> std::io::Result<Server> {
    let admin = web::Data::new(Admin {
        context,
        metrics,
        started: Instant::now(),
    });
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(admin.clone())
            .route("/livez", web::get().to(livez))
            .route("/readyz", web::get().to(readyz))
            .route("/health", web::get().to(health))
            .route("/metrics", web::get().to(metrics_text))
            .route("/trace", web::get().to(trace))
            .route("/tenants", web::get().to(tenants))
    })
    .listen(listener)?
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .run())
}

async fn livez() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "alive"}))
}

async fn readyz(admin: web::Data<Admin>) -> HttpResponse {
    let consuming = admin.context.consuming.load(Ordering::SeqCst);
    let database = matches!(
        tokio::time::timeout(CHECK_TIMEOUT, admin.context.store.ping()).await,
        Ok(Ok(()))
    );
    let paused = PausedReport::of(&admin.context);
    if consuming && database && paused.is_none() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "status": if paused.is_some() { "paused" } else { "not ready" },
            "rabbitmq": consuming, "database": database, "paused": paused,
        }))
    }
}

async fn health(admin: web::Data<Admin>) -> HttpResponse {
    let pending = tokio::time::timeout(CHECK_TIMEOUT, admin.context.store.pending_event_count())
        .await
        .ok()
        .and_then(Result::ok);
    let rabbitmq = admin.context.consuming.load(Ordering::SeqCst);
    let database = pending.is_some();
    let paused = PausedReport::of(&admin.context);
    let body = Health {
        status: if paused.is_some() {
            "paused"
        } else if rabbitmq && database {
            "ok"
        } else {
            "degraded"
        },
        uptime: admin.started.elapsed().as_secs(),
        rabbitmq,
        paused,
        database,
        pending_interactions: pending,
        in_flight: admin.context.in_flight.load(Ordering::SeqCst),
        version: env!("CARGO_PKG_VERSION"),
    };
    if body.status == "ok" {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::InternalServerError().json(body)
    }
}

async fn metrics_text(admin: web::Data<Admin>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(admin.metrics.render())
}

impl ResponseError for TraceError {
    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(serde_json::json!({"error": self.to_string()}))
    }
}

/// `GET /trace?tenant=T&eventId=ID`, or `?tenant=T&subscriber=S[&since=…][&until=…][&limit=N]`:
/// the path of each event found, as JSON.
async fn trace(
    admin: web::Data<Admin>,
    params: web::Query<TraceParams>,
) -> Result<HttpResponse, TraceError> {
    let query = TraceQuery::parse(&params, chrono::Utc::now())?;
    let report = crate::trace::trace(&admin.context.store, &query).await?;
    Ok(HttpResponse::Ok().json(report))
}

/// `GET /tenants`: each tenant's accepted, delivered, pending and parked events, from the
/// database (one scan of `chunks`).
async fn tenants(admin: web::Data<Admin>) -> HttpResponse {
    match crate::tenants::counts(&admin.context.store).await {
        Ok(counts) => HttpResponse::Ok().json(counts),
        Err(error) => {
            let status = if error.is_unavailable() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            HttpResponse::build(status).json(serde_json::json!({"error": error.to_string()}))
        }
    }
}
