//! The forwarder's own dependencies away: it pauses, holds what it has, and resumes by itself
//! — and nothing reaches the broker's delivery limit because of it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use interaction_store::ChunkState;
use interaction_testing::Proxy;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::harness::{Harness, event};

/// How long the database stays away: `FAULTS_DB_DOWN_SECS`, 180 s by default (issue 12's
/// scenario) — far longer than `DELIVERY_LIMIT` (20) returns at the old 2 s requeue pause
/// survived (40 s). A shorter value makes a quicker local run.
fn database_down_for() -> Duration {
    let secs = std::env::var("FAULTS_DB_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(180);
    Duration::from_secs(secs)
}

async fn get(client: &reqwest::Client, url: String) -> Option<(u16, Value)> {
    let response = client.get(url).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

#[tokio::test]
async fn the_forwarders_database_away_for_long_under_load_parks_nothing_and_loses_nothing() {
    let down_for = database_down_for();
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let harness = Harness::new(|c| {
        let direct = c.connections.database_url.expose_secret().to_owned();
        let proxied = direct.replace("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port));
        assert_ne!(direct, proxied, "the test database is on 127.0.0.1:5432");
        c.connections.database_url = proxied.into();
        c.connections.database_timeout = Duration::from_millis(500);
        c.prefetch = 8;
        c.ncanto_batch_size = 10;
    })
    .await;
    // Slow enough that deliveries are in flight when the database goes.
    harness
        .mock
        .set_faults(ncanto_mock::Faults {
            latency_ms: 20,
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    interaction_runtime::install_tls_provider();
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    let mut chunks = Vec::new();
    let mut submit = async |c: usize| {
        let events: Vec<_> = (0..20).map(|n| event(c * 100 + n, "load")).collect();
        sent.extend(events.iter().map(|e| e.interaction.subscriber.clone()));
        chunks.push(harness.submit("acme", events).await);
    };
    for c in 0..30 {
        submit(c).await;
    }
    harness.wait_for_unique(100, Duration::from_secs(30)).await;

    // The forwarder's database goes away (harness.store writes directly: ingest goes on).
    proxy.cut();
    let outage = Instant::now();
    let mut next = 30;
    for _ in 0..10 {
        submit(next).await;
        next += 1;
    }
    let paused = harness
        .wait_for(
            "the consumer to pause",
            Duration::from_secs(30),
            async || {
                let (status, health) = get(&client, format!("{}/health", forwarder.admin)).await?;
                (health["status"] == "paused").then_some((status, health))
            },
        )
        .await;
    assert_eq!(paused.0, 500, "{}", paused.1);
    assert_eq!(paused.1["paused"]["dependency"], "database", "{}", paused.1);
    let (ready, body) = get(&client, format!("{}/readyz", forwarder.admin))
        .await
        .unwrap();
    assert_eq!(
        (ready, body["status"].as_str()),
        (503, Some("paused")),
        "{body}"
    );

    // Load keeps coming for the whole outage; the forwarder stays paused and parks nothing.
    while outage.elapsed() < down_for {
        submit(next).await;
        next += 1;
        let (_, health) = get(&client, format!("{}/health", forwarder.admin))
            .await
            .unwrap();
        assert_eq!(health["status"], "paused", "{health}");
        assert_eq!(
            harness.queue_length(&harness.topology.parked_queue()).await,
            0,
            "parked during the outage, after {:?}",
            outage.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    proxy.restore();
    harness
        .wait_for(
            "the consumer to resume",
            Duration::from_secs(30),
            async || {
                let (status, health) = get(&client, format!("{}/health", forwarder.admin)).await?;
                (status == 200 && health["status"] == "ok").then_some(())
            },
        )
        .await;
    let total = sent.len() as u64;
    harness
        .wait_for_unique(total, Duration::from_secs(90))
        .await;
    harness
        .wait_for(
            "every chunk forwarded",
            Duration::from_secs(30),
            async || {
                for chunk in &chunks {
                    if harness.store.chunk_state(*chunk).await.ok()? != Some(ChunkState::Forwarded)
                    {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
    let received: HashSet<String> = harness
        .mock
        .events()
        .into_iter()
        .map(|e| e.subscriber)
        .collect();
    let lost = sent.iter().filter(|s| !received.contains(*s)).count();
    let stats = harness.mock.stats();
    let parked = harness.queue_length(&harness.topology.parked_queue()).await;
    let summary = format!(
        "database away {down_for:?}: sent {}, delivered {}, duplicates {}, lost {lost}, \
         parked {parked}",
        sent.len(),
        stats.unique,
        stats.duplicates
    );
    eprintln!("{summary}");
    assert_eq!((parked, lost), (0, 0), "{summary}");
    forwarder.stop().await;
}
