//! Publisher::publish and its outcomes.

use crate::common::{TestTopology, envelope, get_message, open_channel, url_via, wait_for_count};
use interaction_bus::{
    APP_ID, BusConfig, Envelope, PublishError, Publisher, Topology, lapin::types::FieldTable,
};
use std::time::{Duration, Instant};

const CONNECT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_published_envelope_arrives_in_the_forward_queue_intact() {
    let test = TestTopology::new();
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);

    let sent = envelope(42, 3);
    publisher.publish(&sent).await.unwrap();

    let (_connection, channel) = open_channel().await;
    let message = get_message(
        &channel,
        &test.topology.forward_queue(),
        Duration::from_secs(5),
    )
    .await
    .expect("the message is in the forward queue");
    let delivery = message.delivery;
    assert_eq!(Envelope::decode(&delivery.data).unwrap(), sent);
    assert_eq!(delivery.routing_key.as_str(), "forward");
    assert_eq!(delivery.exchange.as_str(), test.topology.exchange());
    let properties = &delivery.properties;
    assert_eq!(*properties.delivery_mode(), Some(2));
    assert_eq!(
        properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(
        properties.message_id().as_ref().map(|s| s.as_str()),
        Some("42")
    );
    assert_eq!(
        properties.app_id().as_ref().map(|s| s.as_str()),
        Some(APP_ID)
    );
    assert!(properties.timestamp().is_some());

    publisher.close().await;
}

#[tokio::test]
async fn a_publish_with_no_queue_bound_is_reported_as_returned_and_the_binding_comes_back() {
    let test = TestTopology::new();
    let topology = &test.topology;
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);

    let (_connection, channel) = open_channel().await;
    channel
        .queue_unbind(
            topology.forward_queue().as_str().into(),
            topology.exchange().as_str().into(),
            topology.forward_routing_key().into(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    assert_eq!(
        publisher.publish(&envelope(1, 1)).await,
        Err(PublishError::Returned)
    );

    // The publisher re-declares the topology after a return, which restores the binding.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut result = Err(PublishError::Returned);
    while result.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        result = publisher.publish(&envelope(2, 1)).await;
    }
    assert_eq!(result, Ok(()));
    let message = get_message(&channel, &topology.forward_queue(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        Envelope::decode(&message.delivery.data).unwrap().chunk_id,
        2
    );

    publisher.close().await;
}

#[tokio::test]
async fn publish_while_the_broker_is_unreachable_fails_at_once_with_not_connected() {
    let test = TestTopology::new();
    let publisher = Publisher::start(BusConfig {
        url: url_via("127.0.0.1:1").into(),
        ..test.config()
    });

    let started = Instant::now();
    assert_eq!(
        publisher.publish(&envelope(1, 1)).await,
        Err(PublishError::NotConnected)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(!publisher.is_connected());

    // Still refused after the supervisor has tried a few times, and still immediate.
    assert!(!publisher.wait_connected(Duration::from_millis(500)).await);
    let started = Instant::now();
    assert_eq!(
        publisher.publish(&envelope(2, 1)).await,
        Err(PublishError::NotConnected)
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let started = Instant::now();
    publisher.close().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_from_many_tasks_are_all_confirmed() {
    const TASKS: i64 = 50;
    const PER_TASK: i64 = 40;
    let test = TestTopology::new();
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let publisher = publisher.clone();
            tokio::spawn(async move {
                for i in 0..PER_TASK {
                    publisher.publish(&envelope(task * PER_TASK + i, 5)).await?;
                }
                Ok::<(), PublishError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    let (_connection, channel) = open_channel().await;
    let want = u32::try_from(TASKS * PER_TASK).unwrap();
    let count = wait_for_count(
        &channel,
        &test.topology.forward_queue(),
        want,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(count, want);

    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_lets_in_flight_publishes_finish_and_refuses_new_ones() {
    let test = TestTopology::new();
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);

    let tasks: Vec<_> = (0..20)
        .map(|chunk| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish(&envelope(chunk, 20)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(5)).await;
    publisher.close().await;

    let mut confirmed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => confirmed += 1,
            Err(PublishError::NotConnected) => {}
            Err(other) => panic!("an in-flight publish failed: {other}"),
        }
    }
    assert!(!publisher.is_connected());
    assert_eq!(
        publisher.publish(&envelope(99, 1)).await,
        Err(PublishError::NotConnected)
    );

    let (_connection, channel) = open_channel().await;
    let count = wait_for_count(
        &channel,
        &test.topology.forward_queue(),
        confirmed,
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(count, confirmed);
}

#[tokio::test]
async fn publish_with_sends_to_the_named_queue_with_the_given_headers() {
    use interaction_bus::Topology;
    use interaction_bus::lapin::types::AMQPValue;
    let test = TestTopology::new();
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);

    let mut headers = FieldTable::default();
    headers.insert("x-attempt".into(), AMQPValue::LongLongInt(3));
    let sent = envelope(7, 2);
    publisher
        .publish_with(&test.topology.parked_route(), &sent, headers)
        .await
        .unwrap();
    let (retry_queue, _) = test.topology.retry_queues()[0].clone();
    publisher
        .publish_with(
            &Topology::queue_route(retry_queue.clone()),
            &sent,
            FieldTable::default(),
        )
        .await
        .unwrap();

    let (_connection, channel) = open_channel().await;
    let parked = get_message(
        &channel,
        &test.topology.parked_queue(),
        Duration::from_secs(5),
    )
    .await
    .expect("the message is in the parked queue");
    assert_eq!(Envelope::decode(&parked.delivery.data).unwrap(), sent);
    let attempt = parked
        .delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-attempt").cloned());
    assert_eq!(attempt, Some(AMQPValue::LongLongInt(3)));
    assert!(
        get_message(&channel, &retry_queue, Duration::from_secs(5))
            .await
            .is_some(),
        "and the other in the retry queue"
    );
    let unroutable = Topology::queue_route("no-such-queue-anywhere");
    assert_eq!(
        publisher
            .publish_with(&unroutable, &sent, FieldTable::default())
            .await,
        Err(PublishError::Returned)
    );
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn among_many_concurrent_publishes_no_unroutable_one_is_ever_reported_published() {
    let test = TestTopology::new();
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);
    let unroutable = Topology::queue_route(format!("{}.nowhere", test.prefix()));
    let forward = test.topology.forward_route();

    // Returns and confirms of many publishes interleave, and the broker acks several at once
    // (multiple acks): lapin then attaches a return to whichever confirm it resolves first.
    let sends: Vec<_> = (0..3000_i64)
        .map(|id| {
            let publisher = publisher.clone();
            let route = if id % 3 == 0 {
                unroutable.clone()
            } else {
                forward.clone()
            };
            tokio::spawn(async move {
                let result = publisher
                    .publish_with(&route, &envelope(id, 1), FieldTable::default())
                    .await;
                (id, result)
            })
        })
        .collect();
    let mut wrongly_published = Vec::new();
    let mut forwarded_ok = 0;
    for send in sends {
        let (id, result) = send.await.unwrap();
        match (id % 3 == 0, result) {
            (true, Ok(())) => wrongly_published.push(id),
            (false, Ok(())) => forwarded_ok += 1,
            (_, Err(_)) => {}
        }
    }
    assert!(wrongly_published.is_empty(), "{wrongly_published:?}");
    // Holding another publish's return counts as returned (a duplicate later, never a loss),
    // but most routable publishes must still get through.
    assert!(
        forwarded_ok >= 1000,
        "{forwarded_ok} of 2000 routable publishes confirmed"
    );
    publisher.close().await;
}
