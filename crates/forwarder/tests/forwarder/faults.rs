//! Ncanto failing: transient errors, rate limits, refused events, undecodable messages.

use std::time::{Duration, Instant};

use interaction_bus::{Envelope, lapin::types::FieldTable};
use interaction_store::ChunkState;
use ncanto_mock::Faults;

use crate::harness::{Harness, event};

#[tokio::test]
async fn transient_500s_are_retried_until_everything_arrives() {
    let harness = Harness::new(|c| c.ncanto_batch_size = 5).await;
    harness
        .mock
        .set_faults(Faults {
            error_rate: 0.5,
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let mut chunks = Vec::new();
    for c in 0..10 {
        chunks.push(
            harness
                .submit("acme", (0..10).map(|n| event(c * 100 + n, "a")).collect())
                .await,
        );
    }
    // Some batches need a trip through the 5 s retry queue.
    harness.wait_for_unique(100, Duration::from_secs(40)).await;
    assert!(
        harness.mock.stats().failed_requests > 0,
        "faults were injected"
    );
    assert!(
        harness.take_parked().await.is_empty(),
        "nothing parked for transient faults"
    );
    for chunk in chunks {
        harness
            .wait_for("forwarded", Duration::from_secs(10), async || {
                (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                    .then_some(())
            })
            .await;
    }
    forwarder.stop().await;
}

#[tokio::test]
async fn a_429_retry_after_is_honored() {
    let harness = Harness::new(|c| c.retry_inline_max = Duration::from_secs(3)).await;
    harness
        .mock
        .set_faults(Faults {
            rate_limit_rate: 1.0,
            retry_after_secs: 2,
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let started = Instant::now();
    harness.submit("acme", vec![event(1, "a")]).await;
    harness
        .wait_for("the first 429", Duration::from_secs(10), async || {
            (harness.mock.stats().failed_requests >= 1).then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Without honoring Retry-After the 10 ms base delay would have made four calls by now.
    assert_eq!(harness.mock.stats().failed_requests, 1);
    harness.mock.set_faults(Faults::default()).await;
    harness.wait_for_unique(1, Duration::from_secs(10)).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    forwarder.stop().await;
}

#[tokio::test]
async fn refused_events_are_parked_and_recorded_while_the_rest_arrive_and_redrive_delivers_them() {
    let harness = Harness::new(|c| c.ncanto_batch_size = 10).await;
    harness
        .mock
        .set_faults(Faults {
            reject_asset_pattern: Some("poison".into()),
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let mut events: Vec<_> = (0..10).map(|n| event(n, "good")).collect();
    events[3] = event(3, "poison");
    events[7] = event(7, "poison");
    let chunk = harness.submit("acme", events).await;
    harness.wait_for_unique(8, Duration::from_secs(20)).await;
    harness
        .wait_for(
            "the chunk to be marked failed",
            Duration::from_secs(10),
            async || {
                (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Failed))
                    .then_some(())
            },
        )
        .await;
    let failures = harness.store.failures(chunk).await.unwrap();
    assert_eq!(failures.len(), 2);
    assert!(
        failures
            .iter()
            .all(|f| f.status == Some(400) && f.reason.contains("400"))
    );
    assert!(failures.iter().all(|f| f.event.contains("poison")));
    assert_eq!(
        harness.queue_length(&harness.topology.parked_queue()).await,
        1
    );

    // The cause is fixed; an operator re-drives.
    harness.mock.set_faults(Faults::default()).await;
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
    assert_eq!((report.moved, report.events), (1, 2));
    assert!(report.selected[0].1.contains("400"), "{report:?}");
    harness.wait_for_unique(10, Duration::from_secs(20)).await;
    harness
        .wait_for(
            "the re-driven chunk to be forwarded",
            Duration::from_secs(10),
            async || {
                (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                    .then_some(())
            },
        )
        .await;
    assert_eq!(
        harness.mock.stats().duplicates,
        0,
        "only the refused events were sent again"
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn redrive_filters_and_dry_runs_leave_other_messages_parked() {
    let harness = Harness::new(|_| {}).await;
    for (tenant, chunk) in [("acme", 1), ("acme", 2), ("globex", 3)] {
        harness
            .publisher
            .publish_with(
                &harness.topology.parked_route(),
                &Envelope::new(tenant, chunk, vec![event(chunk as usize, "x")]),
                FieldTable::default(),
            )
            .await
            .unwrap();
    }
    let redrive = async |filter| {
        forwarder::redrive::redrive(
            &harness.config.connections.amqp_url,
            None,
            &harness.topology,
            &harness.publisher,
            &filter,
        )
        .await
        .unwrap()
    };
    let dry = redrive(forwarder::redrive::RedriveFilter {
        dry_run: true,
        ..Default::default()
    })
    .await;
    assert_eq!((dry.examined, dry.moved), (3, 3));
    assert_eq!(
        harness.queue_length(&harness.topology.parked_queue()).await,
        3,
        "a dry run moves nothing"
    );
    let some = redrive(forwarder::redrive::RedriveFilter {
        tenant: Some("globex".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(some.moved, 1);
    assert_eq!(
        harness.queue_length(&harness.topology.parked_queue()).await,
        2
    );
    assert_eq!(
        harness
            .queue_length(&harness.topology.forward_queue())
            .await,
        1
    );
    let limited = redrive(forwarder::redrive::RedriveFilter {
        limit: Some(1),
        ..Default::default()
    })
    .await;
    assert_eq!(limited.moved, 1);
    assert_eq!(
        harness.queue_length(&harness.topology.parked_queue()).await,
        1
    );
}

#[tokio::test]
async fn an_undecodable_message_is_parked_with_its_reason_and_work_goes_on() {
    let harness = Harness::new(|_| {}).await;
    let forwarder = harness.start().await;
    harness
        .publisher
        .publish_bytes(
            &harness.topology.forward_route(),
            b"{not an envelope",
            "junk",
            FieldTable::default(),
        )
        .await
        .unwrap();
    harness.submit("acme", vec![event(1, "a")]).await;
    harness.wait_for_unique(1, Duration::from_secs(20)).await;
    let parked = harness
        .wait_for(
            "the junk to be parked",
            Duration::from_secs(10),
            async || {
                let parked = harness.take_parked().await;
                (!parked.is_empty()).then_some(parked)
            },
        )
        .await;
    assert_eq!(parked[0].0, b"{not an envelope");
    assert!(
        parked[0].1.starts_with("undecodable message"),
        "{}",
        parked[0].1
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn an_ncanto_outage_sends_work_through_the_retry_queue_and_it_arrives_after() {
    let harness = Harness::new(|c| c.inline_retries = 1).await;
    harness
        .mock
        .set_faults(Faults {
            outage: Some(ncanto_mock::Outage::Refuse),
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let chunk = harness
        .submit("acme", (0..3).map(|n| event(n, "a")).collect())
        .await;
    let retry_queue = harness.topology.retry_queues()[0].0.clone();
    harness
        .wait_for(
            "the chunk to wait in the 5 s retry queue",
            Duration::from_secs(10),
            async || (harness.queue_length(&retry_queue).await == 1).then_some(()),
        )
        .await;
    harness.mock.set_faults(Faults::default()).await;
    harness.wait_for_unique(3, Duration::from_secs(20)).await;
    harness
        .wait_for("forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
    assert!(harness.take_parked().await.is_empty());
    forwarder.stop().await;
}

#[tokio::test]
async fn out_of_attempts_the_events_are_parked_as_failed() {
    let harness = Harness::new(|c| {
        c.inline_retries = 0;
        c.max_attempts = 0;
    })
    .await;
    harness
        .mock
        .set_faults(Faults {
            error_rate: 1.0,
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let chunk = harness
        .submit("acme", vec![event(1, "a"), event(2, "a")])
        .await;
    let parked = harness
        .wait_for(
            "the events to be parked",
            Duration::from_secs(10),
            async || {
                let parked = harness.take_parked().await;
                (!parked.is_empty()).then_some(parked)
            },
        )
        .await;
    assert!(
        parked[0].1.contains("gave up after 1 retry rounds"),
        "{}",
        parked[0].1
    );
    assert_eq!(Envelope::decode(&parked[0].0).unwrap().events.len(), 2);
    assert_eq!(harness.store.failures(chunk).await.unwrap().len(), 2);
    assert_eq!(
        harness.store.chunk_state(chunk).await.unwrap(),
        Some(ChunkState::Failed)
    );
    forwarder.stop().await;
}

#[tokio::test]
async fn a_delivery_past_its_deadline_is_retried_through_the_retry_queue_and_arrives_after() {
    let harness = Harness::new(|c| {
        c.delivery_timeout = Duration::from_secs(1);
        // Longer than the deadline: only the deadline can cut the slow call short.
        c.ncanto_timeout = Duration::from_secs(30);
        c.inline_retries = 0;
    })
    .await;
    harness
        .mock
        .set_faults(Faults {
            latency_ms: 20_000,
            ..Default::default()
        })
        .await;
    let forwarder = harness.start().await;
    let chunk = harness
        .submit("acme", (0..3).map(|n| event(n, "slow")).collect())
        .await;
    let retry_queue = harness.topology.retry_queues()[0].0.clone();
    harness
        .wait_for(
            "the chunk to wait in the 5 s retry queue",
            Duration::from_secs(10),
            async || (harness.queue_length(&retry_queue).await == 1).then_some(()),
        )
        .await;
    let reason = harness.peek_last_error(&retry_queue).await.unwrap();
    assert!(reason.contains("delivery deadline exceeded"), "{reason}");
    assert_ne!(
        harness.store.chunk_state(chunk).await.unwrap(),
        Some(ChunkState::Forwarded),
        "not acknowledged as delivered"
    );

    harness.mock.set_faults(Faults::default()).await;
    harness.wait_for_unique(3, Duration::from_secs(60)).await;
    harness
        .wait_for("forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
    assert!(harness.store.failures(chunk).await.unwrap().is_empty());
    assert!(harness.take_parked().await.is_empty());
    forwarder.stop().await;
}
