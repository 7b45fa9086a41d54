//! `forwarder serve`: the consumer, the admin port, the `pending_events` gauge's refresher and
//! the optional periodic purge, started together and stopped in order.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use actix_web::dev::Server;
use anyhow::Context as _;
use interaction_bus::{BusConfig, Publisher, RETRY_DELAYS, Topology};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::consumer::{ChunkLocks, Context, consume, supervise_pause};
use crate::ncanto::{NcantoClient, NcantoConfig};
use crate::pause::Pause;
use crate::retry::RetryPolicy;

/// The Ncanto client the configuration describes.
pub fn ncanto(config: &Config) -> anyhow::Result<NcantoClient> {
    NcantoClient::new(&NcantoConfig {
        url: config.ncanto_api_url.clone(),
        api_key: config.ncanto_api_key.clone(),
        auth_header: config.ncanto_auth_header.clone(),
        timeout: config.ncanto_timeout,
        batch_size: config.ncanto_batch_size,
        ca_file: config.ncanto_ca_file.clone(),
    })
    .context("configuring the Ncanto client")
}

/// The retry policy the configuration describes.
pub fn policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        inline_retries: config.inline_retries,
        inline_base: config.retry_base,
        inline_max: config.retry_inline_max,
        max_attempts: config.max_attempts,
        queue_delays: RETRY_DELAYS.to_vec(),
    }
}

/// The broker, CA file, prefix and confirm timeout the configuration describes.
pub fn bus_config(config: &Config) -> BusConfig {
    BusConfig {
        ca_file: config.connections.amqp_ca_file.clone(),
        confirm_timeout: config.connections.publish_confirm_timeout,
        ..BusConfig::new(
            config.connections.amqp_url.clone(),
            config.connections.amqp_prefix.clone(),
        )
    }
}

/// A confirmed publisher for the configuration's broker and prefix. Fails when the AMQP URL is
/// malformed or the CA file unusable (`BusConfig::check`): a configuration mistake stops the
/// command instead of looping in reconnect attempts.
pub fn publisher(config: &Config) -> anyhow::Result<Publisher> {
    let bus = bus_config(config);
    bus.check().context("checking AMQP_URL and AMQP_CA_FILE")?;
    Ok(Publisher::start(bus))
}

/// A running forwarder.
pub struct Forwarder {
    admin_port: u16,
    admin: Server,
    context: Arc<Context>,
    stop: watch::Sender<bool>,
    consumer: JoinHandle<()>,
    supervisor: JoinHandle<()>,
    purge: Option<JoinHandle<()>>,
    pending_gauge: Option<JoinHandle<()>>,
    shutdown: Arc<Notify>,
    shutdown_timeout: Duration,
}

/// Asks a running forwarder to stop gracefully.
#[derive(Clone)]
pub struct ShutdownHandle(Arc<Notify>);

impl ShutdownHandle {
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.0.notify_one();
    }
}

impl Forwarder {
    /// Builds and starts everything, binding `FORWARDER_ADMIN_ADDR`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.admin_addr)
            .with_context(|| format!("binding FORWARDER_ADMIN_ADDR {}", config.admin_addr))?;
        Self::build_with_listener(config, listener).await
    }

    /// Like [`Self::build`], with an admin listener the caller bound (tests use port 0).
    pub async fn build_with_listener(
        config: Config,
        listener: TcpListener,
    ) -> anyhow::Result<Self> {
        // Configuration mistakes (a CA file that cannot be read…) fail before any connection.
        let client = ncanto(&config)?;
        let store = config.connections.store()?;
        if config.connections.migrate_on_start {
            store
                .migrate()
                .await
                .context("applying database migrations")?;
        }
        if let Some(warning) = config.delivery_timeout_warning() {
            log::warn!("{warning}");
        }
        let context = Arc::new(Context {
            store: store.clone(),
            client,
            policy: policy(&config),
            topology: Topology::new(config.connections.amqp_prefix.clone()),
            publisher: publisher(&config)?,
            amqp_url: config.connections.amqp_url.clone(),
            amqp_ca_file: config.connections.amqp_ca_file.clone(),
            prefetch: config.prefetch,
            delivery_timeout: config.delivery_timeout,
            consuming: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            pause: Pause::new(),
            chunk_locks: ChunkLocks::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let consumer = tokio::spawn(consume(context.clone(), stopped.clone()));
        let supervisor = tokio::spawn(supervise_pause(context.clone(), stopped.clone()));
        let pending_gauge = (!config.pending_gauge_interval.is_zero()).then(|| {
            tokio::spawn(crate::tenants::refresh_pending(
                store.clone(),
                config.pending_gauge_interval,
                stopped.clone(),
            ))
        });
        let retention = crate::purge::Retention {
            older_than: config.purge_older_than,
            dedup_window: config.dedup_window,
            failures_older_than: config.purge_failures_older_than,
            batch: config.purge_batch,
        };
        let ages = [
            retention.older_than,
            retention.dedup_window,
            retention.failures_older_than,
        ];
        let purge = ages.iter().any(|age| !age.is_zero()).then(|| {
            tokio::spawn(crate::purge::periodic(
                store,
                retention,
                config.purge_interval,
                stopped,
            ))
        });
        let admin_port = listener.local_addr()?.port();
        let admin = crate::admin::server(
            listener,
            context.clone(),
            interaction_runtime::metrics_handle(),
        )?;
        Ok(Self {
            admin_port,
            admin,
            context,
            stop,
            consumer,
            supervisor,
            purge,
            pending_gauge,
            shutdown: Arc::new(Notify::new()),
            shutdown_timeout: config.shutdown_timeout,
        })
    }

    /// The admin port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// A handle that stops the forwarder gracefully.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }

    /// Runs until SIGTERM/SIGINT or [`ShutdownHandle::shutdown`]; then stops consuming,
    /// finishes the deliveries in hand (acking each), and leaves the rest unacknowledged for
    /// redelivery.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let admin = self.admin.handle();
        let mut admin_server = tokio::spawn(self.admin);
        let failed = tokio::select! {
            result = &mut admin_server => Some(result),
            _ = self.shutdown.notified() => None,
            _ = interaction_runtime::termination() => None,
        };
        log::info!("shutting down: finishing in-flight deliveries");
        let _ = self.stop.send(true);
        if tokio::time::timeout(self.shutdown_timeout, self.consumer)
            .await
            .is_err()
        {
            log::warn!("shutdown timed out; unfinished deliveries will be redelivered");
        }
        if let Some(purge) = self.purge {
            purge.abort();
        }
        if let Some(pending_gauge) = self.pending_gauge {
            pending_gauge.abort();
        }
        // It has seen the stop signal: it ends at its next await.
        let _ = self.supervisor.await;
        self.context.publisher.close().await;
        admin.stop(true).await;
        if let Some(result) = failed {
            result??;
            anyhow::bail!("the admin server stopped by itself");
        }
        log::info!("stopped");
        Ok(())
    }
}
