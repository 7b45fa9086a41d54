//! The limits of the machine for the same work, measured in the same run: PostgreSQL inserting
//! the same event rows with the same statement and durability, and RabbitMQ taking the same
//! messages with publisher confirms. Our figures are reported as a fraction of these.

use std::time::{Duration, Instant};

use interaction_bus::{BusConfig, Envelope, Publisher, Topology};
use interaction_core::Event;
use interaction_store::Store;
use serde::Serialize;

/// A raw rate.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RawRate {
    /// Events per second.
    pub(crate) events_per_s: f64,
    /// Statements (or messages) per second.
    pub(crate) units_per_s: f64,
}

/// `tasks` connections insert chunks of `events` for `duration` with the store's own
/// one-statement chunk insert (UNNEST of one array per column, synchronous commit).
pub(crate) async fn postgres(
    store: &Store,
    events: &[Event],
    tasks: usize,
    duration: Duration,
) -> anyhow::Result<RawRate> {
    let started = Instant::now();
    let deadline = started + duration;
    let runs = (0..tasks).map(|_| {
        let store = store.clone();
        let events = events.to_vec();
        tokio::spawn(async move {
            let refs: Vec<&Event> = events.iter().collect();
            let mut chunks = 0u64;
            while Instant::now() < deadline {
                store.insert_chunks(&[("raw", refs.clone())]).await?;
                chunks += 1;
            }
            anyhow::Ok(chunks)
        })
    });
    let mut chunks = 0;
    for run in futures_util::future::join_all(runs).await {
        chunks += run??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(RawRate {
        events_per_s: (chunks * events.len() as u64) as f64 / seconds,
        units_per_s: chunks as f64 / seconds,
    })
}

/// `tasks` tasks publish the envelope of `events` with confirms for `duration`, on a prefix
/// of their own (deleted afterwards).
pub(crate) async fn rabbitmq(
    amqp_url: &str,
    events: &[Event],
    tasks: usize,
    duration: Duration,
) -> anyhow::Result<RawRate> {
    let prefix = format!("bench-raw-{}", uuid::Uuid::new_v4().simple());
    let publisher = Publisher::start(BusConfig::new(amqp_url, prefix.clone()));
    anyhow::ensure!(
        publisher.wait_connected(Duration::from_secs(15)).await,
        "cannot reach RabbitMQ"
    );
    let envelope = Envelope::new("raw", 1, events.to_vec());
    let started = Instant::now();
    let deadline = started + duration;
    let runs = (0..tasks).map(|_| {
        let publisher = publisher.clone();
        let envelope = envelope.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            while Instant::now() < deadline {
                if publisher.publish(&envelope).await.is_ok() {
                    sent += 1;
                }
            }
            sent
        })
    });
    let sent: u64 = futures_util::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .sum();
    let seconds = started.elapsed().as_secs_f64();
    publisher.close().await;
    let connection = interaction_bus::connect(&amqp_url.into(), None).await?;
    let channel = connection.create_channel().await?;
    interaction_bus::delete_topology(&channel, &Topology::new(prefix)).await?;
    let _ = connection.close(200, "bench done".into()).await;
    Ok(RawRate {
        events_per_s: (sent * events.len() as u64) as f64 / seconds,
        units_per_s: sent as f64 / seconds,
    })
}
