//! A forwarder (or several) per test, with its database, queues and mock Ncanto.

use std::net::TcpListener;
use std::time::Duration;

use clap::Parser;
use forwarder::{Cli, Config, Forwarder, ShutdownHandle};
use interaction_bus::lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use interaction_bus::lapin::types::FieldTable;
use interaction_bus::{BusConfig, Envelope, Publisher, Topology};
use interaction_core::{Device, Event, Interaction, InteractionType, Setting};
use interaction_store::Store;
use interaction_store::testing::TestDatabase;
use interaction_testing::amqp_url;
use ncanto_mock::{MockConfig, MockServer};

/// An event numbered `n`, on an asset whose name contains `asset`.
pub(crate) fn event(n: usize, asset: &str) -> Event {
    Event {
        interaction: Interaction {
            timestamp: chrono::Utc::now() - chrono::TimeDelta::seconds(n as i64),
            subscriber: format!("user_{n}"),
            asset_id: format!("{asset}_{n}"),
            interaction: InteractionType::Play,
            rating_equivalent: 0.25,
            comment: None,
            context_id: None,
            setting: Setting {
                device: Device::Web,
            },
        },
        event_id: None,
        original_timestamp: None,
    }
}

/// The world of one test.
pub(crate) struct Harness {
    pub(crate) store: Store,
    pub(crate) mock: MockServer,
    pub(crate) topology: Topology,
    pub(crate) publisher: Publisher,
    pub(crate) config: Config,
    /// Kept for its Drop, which removes the database.
    /// The test's database.
    pub db: TestDatabase,
}

/// A running forwarder.
pub(crate) struct Running {
    pub(crate) admin: String,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops it gracefully and waits.
    pub(crate) async fn stop(self) {
        self.shutdown.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the forwarder stops in time")
            .unwrap()
            .unwrap();
    }
}

impl Harness {
    /// A database, a prefix and a mock; `adjust` tunes the forwarder's configuration.
    pub(crate) async fn new(adjust: impl FnOnce(&mut Config)) -> Self {
        Self::with_mock(MockConfig::default(), adjust).await
    }

    /// Like [`Self::new`], with a mock started from `mock` (e.g. serving https).
    pub(crate) async fn with_mock(mock: MockConfig, adjust: impl FnOnce(&mut Config)) -> Self {
        // Logs show in a failing test's output (RUST_LOG decides how much).
        interaction_runtime::init_logging(interaction_runtime::LogFormat::Text);
        let (db, store) = TestDatabase::migrated().await;
        let mock = MockServer::start(mock).await.unwrap();
        let mut config = Cli::try_parse_from(["forwarder", "--database-url", &db.url])
            .unwrap()
            .config;
        config.connections.amqp_url = amqp_url().into();
        config.connections.amqp_prefix = format!("test-{}", uuid::Uuid::new_v4().simple());
        config.ncanto_api_url = mock.url();
        config.ncanto_api_key = String::new().into();
        config.ncanto_ca_file = None;
        config.admin_addr = "127.0.0.1:0".parse().unwrap();
        config.retry_base = Duration::from_millis(10);
        config.retry_inline_max = Duration::from_millis(200);
        config.ncanto_timeout = Duration::from_secs(5);
        config.shutdown_timeout = Duration::from_secs(15);
        config.purge_older_than = Duration::ZERO;
        adjust(&mut config);
        let topology = Topology::new(config.connections.amqp_prefix.clone());
        let publisher = Publisher::start(BusConfig::new(
            config.connections.amqp_url.clone(),
            config.connections.amqp_prefix.clone(),
        ));
        assert!(publisher.wait_connected(Duration::from_secs(15)).await);
        Self {
            store,
            mock,
            topology,
            publisher,
            config,
            db,
        }
    }

    /// Starts a forwarder with the harness's configuration.
    pub(crate) async fn start(&self) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let forwarder = Forwarder::build_with_listener(self.config.clone(), listener)
            .await
            .unwrap();
        let admin = format!("http://127.0.0.1:{}", forwarder.admin_port());
        let shutdown = forwarder.shutdown_handle();
        let task = tokio::spawn(forwarder.run_until_stopped());
        Running {
            admin,
            shutdown,
            task,
        }
    }

    /// Stores events as one chunk, as ingest-api does, and publishes it; returns the chunk.
    pub(crate) async fn submit(&self, tenant: &str, events: Vec<Event>) -> i64 {
        let chunk = self
            .store
            .insert_chunks(&[(tenant, events.iter().collect())])
            .await
            .unwrap()[0]
            .chunk_id
            .unwrap();
        self.publisher
            .publish(&Envelope::new(tenant, chunk, events))
            .await
            .unwrap();
        self.store.mark_published(&[chunk]).await.unwrap();
        chunk
    }

    /// Polls `check` until it returns Some, for at most `limit`.
    pub(crate) async fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        check: impl AsyncFn() -> Option<T>,
    ) -> T {
        interaction_testing::wait_until(what, limit, check).await
    }

    /// Waits until the mock has accepted `n` distinct events.
    pub(crate) async fn wait_for_unique(&self, n: u64, limit: Duration) {
        self.wait_for(&format!("{n} events at the mock"), limit, async || {
            (self.mock.stats().unique >= n).then_some(())
        })
        .await;
    }

    /// Messages waiting in a queue.
    pub(crate) async fn queue_length(&self, queue: &str) -> u32 {
        let connection = interaction_bus::connect(&amqp_url().into(), None)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let count = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap()
            .message_count();
        let _ = connection.close(200, "done".into()).await;
        count
    }

    /// The `x-last-error` of the message waiting in `queue`, if one is: the message is
    /// taken and handed back (requeued), so it stays where it was.
    pub(crate) async fn peek_last_error(&self, queue: &str) -> Option<String> {
        let connection = interaction_bus::connect(&amqp_url().into(), None)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let message = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .unwrap()?;
        let reason = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-last-error").cloned())
            .map(|v| match v {
                interaction_bus::lapin::types::AMQPValue::LongString(s) => {
                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                }
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        message
            .delivery
            .nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            })
            .await
            .unwrap();
        let _ = connection.close(200, "done".into()).await;
        Some(reason)
    }

    /// Takes every message off the parked queue: envelopes (or raw bytes) with their reason.
    pub(crate) async fn take_parked(&self) -> Vec<(Vec<u8>, String)> {
        let connection = interaction_bus::connect(&amqp_url().into(), None)
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let mut parked = Vec::new();
        while let Some(message) = channel
            .basic_get(
                self.topology.parked_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            let reason = message
                .delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-park-reason").cloned())
                .map(|v| match v {
                    interaction_bus::lapin::types::AMQPValue::LongString(s) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            parked.push((message.delivery.data.clone(), reason));
        }
        let _ = connection.close(200, "done".into()).await;
        parked
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        interaction_testing::delete_topology_blocking(&self.topology);
    }
}
