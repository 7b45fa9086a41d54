//! The normal path: delivery, batching, skipping, competing consumers, graceful stop.

use std::time::Duration;

use interaction_store::ChunkState;

use crate::harness::{Harness, event};

#[tokio::test]
async fn chunks_arrive_at_ncanto_exactly_in_batches_and_are_marked_forwarded() {
    let harness = Harness::new(|c| c.ncanto_batch_size = 100).await;
    let forwarder = harness.start().await;
    let mut chunks = Vec::new();
    let mut sent = Vec::new();
    for c in 0..3 {
        let events: Vec<_> = (0..250).map(|n| event(c * 1000 + n, "asset")).collect();
        sent.extend(events.iter().map(|e| e.interaction.clone()));
        chunks.push(harness.submit("acme", events).await);
    }
    harness.wait_for_unique(750, Duration::from_secs(20)).await;
    let stats = harness.mock.stats();
    assert_eq!((stats.received, stats.duplicates), (750, 0));
    assert_eq!(
        stats.requests, 9,
        "250 events in calls of 100: 3 calls per chunk"
    );
    assert_eq!(stats.by_tenant.get("acme"), Some(&750));
    let mut received = harness.mock.events();
    received.sort_by(|a, b| a.subscriber.cmp(&b.subscriber));
    sent.sort_by(|a, b| a.subscriber.cmp(&b.subscriber));
    assert_eq!(received, sent, "exactly what was stored");
    harness
        .wait_for(
            "every chunk forwarded",
            Duration::from_secs(10),
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
    assert_eq!(harness.store.pending_event_count().await.unwrap(), 0);
    assert_eq!(
        harness
            .queue_length(&harness.topology.forward_queue())
            .await,
        0
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn a_batch_size_of_one_sends_single_objects() {
    let harness = Harness::new(|c| c.ncanto_batch_size = 1).await;
    let forwarder = harness.start().await;
    harness
        .submit("acme", (0..5).map(|n| event(n, "a")).collect())
        .await;
    harness.wait_for_unique(5, Duration::from_secs(20)).await;
    assert_eq!(harness.mock.stats().requests, 5);
    forwarder.stop().await;
}

#[tokio::test]
async fn a_chunk_already_forwarded_is_skipped_when_it_comes_again() {
    let harness = Harness::new(|_| {}).await;
    let forwarder = harness.start().await;
    let events: Vec<_> = (0..3).map(|n| event(n, "a")).collect();
    let chunk = harness.submit("acme", events.clone()).await;
    harness.wait_for_unique(3, Duration::from_secs(20)).await;
    harness
        .wait_for(
            "the chunk to be forwarded",
            Duration::from_secs(10),
            async || {
                (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                    .then_some(())
            },
        )
        .await;
    // The relay (or a redelivery) publishes it again.
    harness
        .publisher
        .publish(&interaction_bus::Envelope::new("acme", chunk, events))
        .await
        .unwrap();
    harness
        .wait_for(
            "the duplicate message to be consumed",
            Duration::from_secs(10),
            async || {
                (harness
                    .queue_length(&harness.topology.forward_queue())
                    .await
                    == 0)
                    .then_some(())
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(harness.mock.stats().received, 3, "not sent twice");
    forwarder.stop().await;
}

#[tokio::test]
async fn two_forwarders_on_one_queue_deliver_each_chunk_once() {
    let harness = Harness::new(|c| c.prefetch = 4).await;
    let first = harness.start().await;
    let second = harness.start().await;
    for c in 0..30 {
        harness
            .submit("acme", (0..20).map(|n| event(c * 100 + n, "a")).collect())
            .await;
    }
    harness.wait_for_unique(600, Duration::from_secs(30)).await;
    let stats = harness.mock.stats();
    assert_eq!((stats.received, stats.duplicates), (600, 0));
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn a_stop_mid_stream_loses_nothing() {
    let harness = Harness::new(|c| c.prefetch = 4).await;
    harness
        .mock
        .set_faults(ncanto_mock::Faults {
            latency_ms: 100,
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let total = 40 * 10;
    for c in 0..40 {
        harness
            .submit("acme", (0..10).map(|n| event(c * 100 + n, "a")).collect())
            .await;
    }
    harness.wait_for_unique(20, Duration::from_secs(20)).await;
    // SIGTERM's path: stop consuming, finish what is in hand, leave the rest queued.
    forwarder.stop().await;
    let delivered_before_restart = harness.mock.stats().unique;
    assert!(delivered_before_restart < total, "stopped mid-stream");
    harness
        .mock
        .set_faults(ncanto_mock::Faults::default())
        .await;
    let again = harness.start().await;
    harness
        .wait_for_unique(total, Duration::from_secs(30))
        .await;
    let stats = harness.mock.stats();
    // Finished deliveries were acked: a graceful stop duplicates nothing.
    assert_eq!(stats.duplicates, 0, "{stats:?}");
    again.stop().await;
}
