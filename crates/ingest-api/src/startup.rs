//! Building and running the application: the HTTP server on an already-bound listener (so
//! tests can use port 0), the write batcher, the outbox publisher, the relay and the
//! reconciler — and taking them down in the right order.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle, Service};
use actix_web::http::{Method, header};
use actix_web::{App, HttpResponse, HttpServer, Resource, Route, web};
use anyhow::Context;
use interaction_bus::{BusConfig, Publisher};
use interaction_core::{Limits, RatingMap};
use interaction_store::ClaimLimits;
use tokio::sync::{Notify, watch};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use crate::auth::ApiKeys;
use crate::auth::{RateLimitConfig, RateLimits};
use crate::batcher::{Batcher, BatcherConfig, Writers};
use crate::config::Config;
use crate::outbox::PublishQueue;
use crate::reconciler::ReconcilerConfig;
use crate::relay::{RELAY_BATCH_CHUNKS, RelayConfig};
use crate::state::AppState;
use crate::{docs, ingest, ops};

/// A running (not yet awaited) ingest-api.
pub struct Application {
    port: u16,
    server: Server,
    admin_port: u16,
    /// `/metrics`, `/livez`, `/readyz` for the cluster only (INGEST_ADMIN_ADDR).
    admin: Server,
    /// The health check and the rate limiters' upkeep.
    upkeep: tokio::task::JoinHandle<()>,
    state: web::Data<AppState>,
    writers: Writers,
    outbox: tokio::task::JoinHandle<()>,
    relay: tokio::task::JoinHandle<()>,
    reconciler: tokio::task::JoinHandle<()>,
    /// Stops the relay, the reconciler and the upkeep.
    stop_relay: watch::Sender<bool>,
    publisher: Publisher,
    shutdown: Arc<Notify>,
    shutdown_timeout: Duration,
}

/// Asks a running application to stop gracefully.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Notify>);

impl ShutdownHandle {
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.0.notify_one();
    }
}

/// Loads the rating map: the built-in profiles, with the file applied when one is set.
pub fn load_rating_map(config: &Config) -> anyhow::Result<RatingMap> {
    let path = config.rating_map_file.trim();
    if path.is_empty() {
        return Ok(RatingMap::builtin());
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading RATING_MAP_FILE {path}"))?;
    RatingMap::from_toml(&text).with_context(|| format!("in RATING_MAP_FILE {path}"))
}

impl Application {
    /// Validates the configuration, runs migrations (unless disabled), connects, and binds
    /// `config.ingest_addr` and `config.admin_addr`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.ingest_addr)
            .with_context(|| format!("binding INGEST_ADDR {}", config.ingest_addr))?;
        let admin = TcpListener::bind(config.admin_addr)
            .with_context(|| format!("binding INGEST_ADMIN_ADDR {}", config.admin_addr))?;
        Self::build_with_listeners(config, listener, admin).await
    }

    /// Like [`Self::build`], on listeners the caller bound: the API's and the admin port's.
    pub async fn build_with_listeners(
        config: Config,
        listener: TcpListener,
        admin_listener: TcpListener,
    ) -> anyhow::Result<Self> {
        let keys = ApiKeys::parse(&config.api_keys).map_err(anyhow::Error::msg)?;
        let rating = load_rating_map(&config)?;
        let limits = Limits {
            max_future_skew: chrono::TimeDelta::from_std(config.max_future_skew)?,
            max_age: (!config.max_event_age.is_zero())
                .then(|| chrono::TimeDelta::from_std(config.max_event_age))
                .transpose()?,
            max_batch_events: config.max_batch_events,
            clock_skew_threshold: chrono::TimeDelta::from_std(config.clock_skew_threshold)?,
        };
        let bus = BusConfig {
            ca_file: config.connections.amqp_ca_file.clone(),
            confirm_timeout: config.connections.publish_confirm_timeout,
            ..BusConfig::new(
                config.connections.amqp_url.clone(),
                config.connections.amqp_prefix.clone(),
            )
        };
        // A malformed URL or an unusable CA file is a configuration mistake: stop here rather
        // than retry connecting forever.
        bus.check().context("checking AMQP_URL and AMQP_CA_FILE")?;
        let store = config.connections.store()?;
        if config.connections.migrate_on_start {
            let applied = store
                .migrate()
                .await
                .context("applying database migrations")?;
            if !applied.is_empty() {
                log::info!("applied migrations: {}", applied.join(", "));
            }
        }
        // Series that dashboards and alerts expect before their first event: counted only
        // when something happens, so they are created here, at zero.
        metrics::counter!("ingest_events_invalid_total").increment(0);
        let publisher = Publisher::start(bus);
        let (publish_tx, publish_rx) = PublishQueue::bounded(config.publish_queue_bytes);
        let outbox = crate::outbox::start(publisher.clone(), store.clone(), publish_rx);
        let (batcher, writers) = Batcher::start(
            store.clone(),
            publish_tx,
            BatcherConfig {
                max_events: config.write_batch_events.max(1),
                writers: config.writers.max(1),
                queue_events: config.write_queue_events.max(1),
                queue_bytes: config.write_queue_bytes.max(1),
                queue_timeout: config.write_queue_timeout,
                // One wait for a connection, one statement given up by the client-side
                // deadline (statement timeout + 2 s), and a second for queueing.
                answer_timeout: config.connections.database_timeout
                    + config.connections.database_statement_timeout
                    + Duration::from_secs(3),
            },
        );
        let (stop_relay, relay_stopped) = watch::channel(false);
        // Long enough for a round's publishes to be confirmed or given up.
        let lease = (config.connections.publish_confirm_timeout * 4).max(Duration::from_secs(30));
        let claim_limits = ClaimLimits {
            chunks: RELAY_BATCH_CHUNKS,
            bytes: i64::try_from(config.relay_batch_bytes).unwrap_or(i64::MAX),
        };
        let relay = crate::relay::start(
            store.clone(),
            publisher.clone(),
            RelayConfig {
                interval: config.relay_interval,
                after: config.relay_after,
                lease,
                limits: claim_limits,
            },
            relay_stopped.clone(),
        );
        let reconciler = crate::reconciler::start(
            store.clone(),
            publisher.clone(),
            ReconcilerConfig {
                interval: config.reconcile_interval,
                after: config.reconcile_after,
                lease,
                limits: claim_limits,
            },
            relay_stopped,
        );

        let rate_limits = Arc::new(RateLimits::new(RateLimitConfig {
            events_per_second: config.rate_limit_events_per_sec,
            events_burst: config.rate_limit_events_burst,
            address_requests_per_second: config.rate_limit_address_rps,
            address_burst: config.rate_limit_address_burst,
            trusted_proxy_hops: config.trusted_proxy_hops,
        }));
        let (health, upkeep) = crate::health::start_upkeep(
            store.clone(),
            rate_limits.clone(),
            config.health_interval,
            stop_relay.subscribe(),
        );
        let state = web::Data::new(AppState {
            keys,
            rate_limits: rate_limits.clone(),
            rating,
            limits,
            batcher,
            health,
            publisher: publisher.clone(),
            body_limit: config.body_limit_bytes,
            decompressed_limit: config.decompressed_limit_bytes,
            retry_after: config.retry_after_seconds,
            started: Instant::now(),
            metrics: interaction_runtime::metrics_handle(),
            stopping: AtomicBool::new(false),
        });

        let port = listener.local_addr()?.port();
        let origins: Vec<String> = config
            .cors_allowed_origins
            .split(',')
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .collect();
        let openapi = docs::ApiDoc::openapi();
        let app_state = state.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .wrap(cors(&origins))
                .wrap_fn(|req, service| {
                    let started = Instant::now();
                    let response = service.call(req);
                    async move {
                        let response = response.await?;
                        let route = response
                            .request()
                            .match_pattern()
                            .unwrap_or_else(|| "unmatched".to_owned());
                        let status = response.status().as_u16().to_string();
                        metrics::counter!("http_requests_total", "route" => route.clone(), "status" => status)
                            .increment(1);
                        metrics::histogram!("http_request_duration_seconds", "route" => route)
                            .record(started.elapsed().as_secs_f64());
                        Ok(response)
                    }
                })
                .service(endpoint("/api/v1/logs", Method::POST, web::post().to(ingest::logs)))
                .service(endpoint("/interact/batch", Method::POST, web::post().to(ingest::logs)))
                .service(endpoint("/api/v1/log", Method::POST, web::post().to(ingest::log_one)))
                .service(endpoint("/interact", Method::POST, web::post().to(ingest::log_one)))
                .service(endpoint("/health", Method::GET, web::get().to(ops::health)))
                .service(endpoint("/livez", Method::GET, web::get().to(ops::livez)))
                .service(endpoint("/readyz", Method::GET, web::get().to(ops::readyz)))
                .service(web::redirect("/docs", "/docs/"))
                .service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", openapi.clone()))
                .default_service(web::to(not_found))
        })
        .listen(listener)?
        // We handle signals ourselves, to drain the batcher and publisher after the server.
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs().max(1));
        if config.http_workers > 0 {
            server = server.workers(config.http_workers);
        }
        let admin_port = admin_listener.local_addr()?.port();
        let admin_state = state.clone();
        let admin = HttpServer::new(move || {
            App::new()
                .app_data(admin_state.clone())
                .service(endpoint(
                    "/metrics",
                    Method::GET,
                    web::get().to(ops::metrics),
                ))
                .service(endpoint("/livez", Method::GET, web::get().to(ops::livez)))
                .service(endpoint("/readyz", Method::GET, web::get().to(ops::readyz)))
                .default_service(web::to(not_found))
        })
        .listen(admin_listener)?
        // Scrapes and probes only: one thread, apart from the API's workers.
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .run();
        Ok(Self {
            port,
            server: server.run(),
            admin_port,
            admin,
            upkeep,
            state,
            writers,
            outbox,
            relay,
            reconciler,
            stop_relay,
            publisher,
            shutdown: Arc::new(Notify::new()),
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The port the API listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the admin listener (`/metrics`, `/livez`, `/readyz`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// A handle that stops the application gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Serves until SIGTERM/SIGINT or [`ShutdownHandle::shutdown`], then stops in order: stop
    /// accepting and finish in-flight requests (each waits for its commit); write what is
    /// queued; publish what was committed; stop the relay and the reconciler; close the broker
    /// connection.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle: ServerHandle = self.server.handle();
        let admin_handle: ServerHandle = self.admin.handle();
        let admin = tokio::spawn(self.admin);
        let mut server = tokio::spawn(self.server);
        let stopped_early = tokio::select! {
            result = &mut server => Some(result),
            _ = self.shutdown.notified() => None,
            _ = interaction_runtime::termination() => None,
        };
        if let Some(result) = stopped_early {
            result??;
            anyhow::bail!("the HTTP server stopped by itself");
        }
        log::info!("shutting down: finishing in-flight requests");
        self.state.stopping.store(true, Ordering::Relaxed);
        handle.stop(true).await;
        let _ = server.await;
        let drain = async {
            self.writers.shutdown().await;
            // The writers held the last senders of the publish queue: the outbox now drains.
            let _ = self.outbox.await;
            let _ = self.stop_relay.send(true);
            let _ = self.relay.await;
            let _ = self.reconciler.await;
            let _ = self.upkeep.await;
        };
        if tokio::time::timeout(self.shutdown_timeout, drain)
            .await
            .is_err()
        {
            log::warn!("shutdown timed out; unpublished chunks stay for the relay");
        }
        self.publisher.close().await;
        // Last: metrics and probes stay up while the rest drains.
        admin_handle.stop(true).await;
        let _ = admin.await;
        log::info!("stopped");
        Ok(())
    }
}

fn cors(origins: &[String]) -> Cors {
    let cors = Cors::default()
        .allowed_methods(["GET", "POST", "OPTIONS"])
        .allowed_headers([
            "content-type",
            "content-encoding",
            "x-api-key",
            "authorization",
            "x-sent-at",
        ])
        // A browser may read a cross-origin answer's Retry-After only if it is exposed: the
        // web SDK waits as told on 429 and 503.
        .expose_headers(["retry-after"])
        // Browsers cache the preflight this long (Chromium caps it at 2 h, Firefox at 24 h):
        // one OPTIONS per origin and page every two hours, not one per batch.
        .max_age(7200);
    if origins.iter().any(|o| o == "*") {
        return cors.allow_any_origin();
    }
    origins
        .iter()
        .fold(cors, |cors, origin| cors.allowed_origin(origin))
}

/// One endpoint: `route` at `path`; any other method gets a 405 that names the allowed one
/// (found by schemathesis: it was a 404, as if the path did not exist).
fn endpoint(path: &str, allowed: Method, route: Route) -> Resource {
    web::resource(path)
        .route(route)
        .default_service(web::to(move || method_not_allowed(allowed.clone())))
}

async fn method_not_allowed(allowed: Method) -> HttpResponse {
    HttpResponse::MethodNotAllowed()
        .insert_header((header::ALLOW, allowed.as_str()))
        .json(serde_json::json!({
            "status": "error",
            "message": format!("method not allowed; this endpoint takes {allowed}"),
        }))
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound().json(serde_json::json!({
        "status": "error",
        "message": "no such endpoint; see /docs",
    }))
}
