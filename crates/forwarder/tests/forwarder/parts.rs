//! Delivery state per part of a chunk: retries, refusals, re-drives and re-publishes of one
//! chunk interleaving, and every event still delivered.

use std::collections::HashMap;
use std::time::Duration;

use interaction_bus::Envelope;
use interaction_store::ChunkState;
use ncanto_mock::Faults;

use crate::harness::{Harness, event};

/// What reached the mock of the events sent: (delivered, duplicates, lost).
fn tally(harness: &Harness, sent: &[interaction_core::Event]) -> (usize, usize, usize) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for received in harness.mock.events() {
        *seen.entry(received.subscriber).or_default() += 1;
    }
    let delivered = sent
        .iter()
        .filter(|e| seen.contains_key(&e.interaction.subscriber))
        .count();
    let duplicates = seen.values().map(|n| n.saturating_sub(1)).sum();
    (delivered, duplicates, sent.len() - delivered)
}

async fn queued(harness: &Harness, queues: &[String]) -> u32 {
    let mut total = 0;
    for queue in queues {
        total += harness.queue_length(queue).await;
    }
    total
}

#[tokio::test]
async fn a_redrive_of_the_parked_part_while_the_retried_part_waits_loses_nothing() {
    let harness = Harness::new(|c| {
        c.ncanto_batch_size = 5;
        c.inline_retries = 0;
    })
    .await;
    // Event 3 is refused for good; the batch holding event 8 fails until Ncanto recovers.
    harness
        .mock
        .set_faults(Faults {
            reject_asset_pattern: Some("poison".into()),
            fail_asset_pattern: Some("flaky".into()),
            ..Faults::default()
        })
        .await;
    let forwarder = harness.start().await;
    let mut events: Vec<_> = (0..10).map(|n| event(n, "good")).collect();
    events[3] = event(3, "poison");
    events[8] = event(8, "flaky");
    let chunk = harness.submit("acme", events.clone()).await;

    // First pass: 0, 1, 2, 4 delivered; 3 refused and parked; 5..10 in a retry queue.
    harness.wait_for_unique(4, Duration::from_secs(20)).await;
    let parked = harness.topology.parked_queue();
    let retry_queues: Vec<String> = harness
        .topology
        .retry_queues()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    harness
        .wait_for(
            "the refused event parked and the rest waiting in a retry queue",
            Duration::from_secs(20),
            async || {
                let parked = harness.queue_length(&parked).await;
                let retrying = queued(&harness, &retry_queues).await;
                let failures = harness.store.failures(chunk).await.ok()?.len();
                (parked == 1 && retrying == 1 && failures == 1).then_some(())
            },
        )
        .await;

    // The refusal is fixed and an operator re-drives the parked part — while the retried
    // part still waits (Ncanto keeps failing it).
    harness
        .mock
        .set_faults(Faults {
            fail_asset_pattern: Some("flaky".into()),
            ..Faults::default()
        })
        .await;
    let report = forwarder::redrive::redrive(
        &harness.config.connections.amqp_url,
        None,
        &harness.topology,
        &harness.publisher,
        &forwarder::redrive::RedriveFilter {
            chunks: vec![chunk],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (report.moved, report.events, report.dead_lettered),
        (1, 1, 0)
    );
    harness.wait_for_unique(5, Duration::from_secs(20)).await;
    let parts = harness
        .wait_for(
            "the re-driven event recorded as delivered",
            Duration::from_secs(10),
            async || {
                let parts = harness.store.chunk_parts(chunk).await.ok()??;
                parts
                    .delivered
                    .iter()
                    .any(|r| r.contains(&3))
                    .then_some(parts)
            },
        )
        .await;
    assert_ne!(
        parts.state,
        ChunkState::Forwarded,
        "the retried events are not delivered yet: the chunk is not done ({parts:?})"
    );
    assert!(parts.refused.is_empty(), "{parts:?}");

    // Ncanto recovers: the retried part comes back and is delivered, not skipped.
    harness.mock.set_faults(Faults::default()).await;
    harness.wait_for_unique(10, Duration::from_secs(60)).await;
    harness
        .wait_for("the chunk forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
    let (delivered, duplicates, lost) = tally(&harness, &events);
    let summary = format!("sent 10, delivered {delivered}, duplicates {duplicates}, lost {lost}");
    eprintln!("{summary}");
    assert_eq!((delivered, lost), (10, 0), "{summary}");
    assert_eq!(
        harness.queue_length(&parked).await,
        0,
        "nothing left parked"
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn a_whole_chunk_published_again_after_a_partial_delivery_sends_only_the_rest() {
    let harness = Harness::new(|c| {
        c.ncanto_batch_size = 5;
        c.inline_retries = 0;
    })
    .await;
    harness
        .mock
        .set_faults(Faults {
            fail_asset_pattern: Some("flaky".into()),
            ..Faults::default()
        })
        .await;
    let forwarder = harness.start().await;
    let mut events: Vec<_> = (0..10).map(|n| event(n, "good")).collect();
    events[7] = event(7, "flaky");
    let chunk = harness.submit("acme", events.clone()).await;
    harness.wait_for_unique(5, Duration::from_secs(20)).await;
    harness
        .wait_for(
            "the first half recorded as delivered",
            Duration::from_secs(10),
            async || {
                let parts = harness.store.chunk_parts(chunk).await.ok()??;
                (parts.delivered == [0..5]).then_some(())
            },
        )
        .await;

    // The relay (or a reconciler) publishes the whole chunk again meanwhile.
    harness
        .publisher
        .publish(&Envelope::new("acme", chunk, events.clone()))
        .await
        .unwrap();
    harness.mock.set_faults(Faults::default()).await;
    harness.wait_for_unique(10, Duration::from_secs(60)).await;
    harness
        .wait_for("the chunk forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
    let received = harness.mock.events();
    for event in &events[..5] {
        let copies = received
            .iter()
            .filter(|r| r.subscriber == event.interaction.subscriber)
            .count();
        assert_eq!(
            copies, 1,
            "{} was delivered before: not sent again",
            event.interaction.subscriber
        );
    }
    let (delivered, duplicates, lost) = tally(&harness, &events);
    let summary = format!("sent 10, delivered {delivered}, duplicates {duplicates}, lost {lost}");
    eprintln!("{summary}");
    assert_eq!((delivered, lost), (10, 0), "{summary}");
    forwarder.stop().await;
}
