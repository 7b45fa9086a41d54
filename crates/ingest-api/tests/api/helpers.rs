//! Starting an app per test, and the tools to look at what it did.

use std::net::TcpListener;
use std::time::Duration;

use clap::Parser;
use ingest_api::{Application, Cli, Config, ShutdownHandle};
use interaction_bus::{Envelope, Topology};
use interaction_store::Store;
use interaction_store::testing::TestDatabase;
pub(crate) use interaction_testing::{Proxy, amqp_url};
use lapin::options::BasicGetOptions;
use serde_json::Value;

pub(crate) const ACME_KEY: &str = "acme-key-0123456789";
pub(crate) const GLOBEX_KEY: &str = "globex-key-9876543210";

/// A configuration for tests: everything on loopback, fast relay, a fresh prefix.
pub(crate) fn test_config(database_url: &str) -> Config {
    let prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
    let mut config = Cli::try_parse_from([
        "ingest-api",
        "--database-url",
        database_url,
        "--api-keys",
        &format!("acme:{ACME_KEY},globex:{GLOBEX_KEY}"),
    ])
    .unwrap()
    .config;
    config.connections.amqp_url = amqp_url().into();
    config.connections.amqp_prefix = prefix;
    config.ingest_addr = "127.0.0.1:0".parse().unwrap();
    config.http_workers = 2;
    config.relay_interval = Duration::from_millis(200);
    config.relay_after = Duration::from_millis(500);
    config.connections.publish_confirm_timeout = Duration::from_secs(2);
    config.connections.database_timeout = Duration::from_secs(2);
    config.rating_map_file = String::new();
    config.cors_allowed_origins = "https://app.example.com".into();
    config.shutdown_timeout = Duration::from_secs(10);
    config.rate_limit_events_per_sec = 0;
    config.health_interval = Duration::from_millis(100);
    config
}

/// Points the app's database connections at `proxy` (in front of the machine's PostgreSQL),
/// with a statement timeout long enough for a test to keep a write in flight through a
/// [`Proxy::pause`] on a loaded machine.
pub(crate) fn database_through(config: &mut Config, proxy: &Proxy) {
    use secrecy::ExposeSecret;
    config.connections.database_url = config
        .connections
        .database_url
        .expose_secret()
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port))
        .into();
    config.connections.database_statement_timeout = Duration::from_secs(60);
}

/// A running app, its database and its queues; all removed on drop.
pub(crate) struct TestApp {
    pub(crate) address: String,
    /// The admin listener: `/metrics`, `/livez`, `/readyz`.
    pub(crate) admin: String,
    pub(crate) client: reqwest::Client,
    pub(crate) store: Store,
    pub(crate) topology: Topology,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) stopped: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The app's own database (None for an app started on an unreachable one).
    pub(crate) db: Option<TestDatabase>,
}

impl TestApp {
    /// Starts an app on a fresh database with the default test configuration.
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts an app on a fresh, migrated database after `adjust` changes its configuration.
    pub(crate) async fn spawn_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let (db, store) = TestDatabase::migrated().await;
        let mut config = test_config(&db.url);
        adjust(&mut config);
        Self::start(config, store, Some(db)).await
    }

    /// Starts an app on the given configuration (its database may be unreachable).
    pub(crate) async fn start(config: Config, store: Store, db: Option<TestDatabase>) -> Self {
        let topology = Topology::new(config.connections.amqp_prefix.clone());
        let listener = TcpListener::bind(config.ingest_addr).unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let app = Application::build_with_listeners(config, listener, admin_listener)
            .await
            .unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        let admin = format!("http://127.0.0.1:{}", app.admin_port());
        let shutdown = app.shutdown_handle();
        let stopped = tokio::spawn(app.run_until_stopped());
        // reqwest's TLS needs a process-wide crypto provider (see interaction-runtime).
        interaction_runtime::install_tls_provider();
        Self {
            address,
            admin,
            client: reqwest::Client::new(),
            store,
            topology,
            shutdown,
            stopped,
            db,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs JSON with acme's key.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_raw(
            path,
            serde_json::to_vec(body).unwrap(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", ACME_KEY),
            ],
        )
        .await
    }

    pub(crate) async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    /// Waits until the app's publisher is connected (its /health says rabbitmq: true).
    pub(crate) async fn wait_for_broker(&self) {
        self.wait_for_broker_state(true).await;
    }

    /// Waits until `/health` answers `status` with a body `accept` takes, and returns the body
    /// (it answers from a background check, so a change shows after a moment).
    pub(crate) async fn health_when(&self, status: u16, accept: impl Fn(&Value) -> bool) -> Value {
        self.wait_until(
            &format!("/health to answer {status} as expected"),
            async || {
                let response = self.client.get(self.url("/health")).send().await.ok()?;
                (response.status() == status).then_some(())?;
                let health: Value = response.json().await.ok()?;
                accept(&health).then_some(health)
            },
        )
        .await
    }

    /// Waits until /health reports the broker connection as `up`.
    pub(crate) async fn wait_for_broker_state(&self, up: bool) {
        self.wait_until("the broker connection state", async || {
            let response = self.client.get(self.url("/health")).send().await.ok()?;
            let health: Value = response.json().await.ok()?;
            (health["rabbitmq"].as_bool() == Some(up)).then_some(())
        })
        .await;
    }

    /// Polls `check` until it returns Some, for at most 20 s.
    pub(crate) async fn wait_until<T>(&self, what: &str, check: impl AsyncFn() -> Option<T>) -> T {
        interaction_testing::wait_until(what, Duration::from_secs(20), check).await
    }

    /// Waits until every stored chunk is confirmed by the broker, then takes the envelopes
    /// off the forward queue, sorted by chunk.
    pub(crate) async fn published(&self) -> Vec<Envelope> {
        self.wait_until("every chunk to be published", async || {
            (self.store.unpublished_chunk_count().await.ok()? == 0).then_some(())
        })
        .await;
        let mut envelopes = self.take_forwarded().await;
        envelopes.sort_by_key(|e| e.chunk_id);
        envelopes
    }

    /// Every envelope in the forward queue, taken off it.
    pub(crate) async fn take_forwarded(&self) -> Vec<Envelope> {
        let connection = interaction_bus::connect(&amqp_url().into(), None)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut envelopes = Vec::new();
        while let Some(message) = channel
            .basic_get(
                self.topology.forward_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            envelopes.push(Envelope::decode(&message.delivery.data).unwrap());
        }
        let _ = connection.close(200, "done".into()).await;
        envelopes
    }

    /// The value of one series of /metrics (`name` or `name{labels}`, as rendered), 0 when
    /// it is not there yet.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// Waits until the gauges of the write path read `in_flight` writes and `waiting` queued
    /// events.
    pub(crate) async fn wait_for_writes(&self, in_flight: f64, waiting: f64) {
        self.wait_until(
            &format!("{in_flight} writes in flight and {waiting} events waiting"),
            async || {
                let now = (
                    self.metric("ingest_db_writes_in_flight").await,
                    self.metric("ingest_write_queue_events").await,
                );
                (now == (in_flight, waiting)).then_some(())
            },
        )
        .await;
    }

    /// Runs SQL on the app's database (see `TestDatabase::execute`).
    pub(crate) async fn sql(&self, statement: &str) -> usize {
        self.db
            .as_ref()
            .expect("the app has a database of its own")
            .execute(statement)
            .await
    }

    /// A channel of the test's own on the broker, to do what operators do to our queues.
    pub(crate) async fn broker_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let connection = interaction_bus::connect(&amqp_url().into(), None)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        (connection, channel)
    }

    /// Waits for an app that was asked to stop; panics if it does not stop in time or fails.
    pub(crate) async fn stopped_within(&mut self, limit: Duration) {
        let result = tokio::time::timeout(limit, &mut self.stopped)
            .await
            .expect("the app stops in time");
        result.unwrap().unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.shutdown();
        self.stopped.abort();
        interaction_testing::delete_topology_blocking(&self.topology);
    }
}
