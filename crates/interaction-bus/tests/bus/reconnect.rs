//! The publisher's own reconnect loop, through a proxy whose connections the test cuts.

use crate::common::{Proxy, TestTopology, envelope, open_channel, wait_for_count};
use interaction_bus::{BusConfig, PublishError, Publisher, lapin::options::ExchangeDeleteOptions};
use std::time::{Duration, Instant};

const CONNECT: Duration = Duration::from_secs(15);

/// Publishes chunk ids from `next` on until one is confirmed or `within` passes; returns how
/// many were confirmed (0 or 1) and advances `next`.
async fn publish_until_confirmed(publisher: &Publisher, next: &mut i64, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let chunk = *next;
        *next += 1;
        match publisher.publish(&envelope(chunk, 1)).await {
            Ok(()) => return 1,
            Err(
                PublishError::NotConnected | PublishError::Broker(_) | PublishError::ConfirmTimeout,
            ) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(other) => panic!("unexpected publish error: {other}"),
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_reconnects_by_itself_after_its_connection_is_cut() {
    let test = TestTopology::new();
    let proxy = Proxy::start().await;
    let publisher = Publisher::start(BusConfig {
        url: proxy.url().into(),
        ..test.config()
    });
    assert!(publisher.wait_connected(CONNECT).await);
    assert_eq!(proxy.accepted(), 1);
    let mut next = 0;
    let mut confirmed = publish_until_confirmed(&publisher, &mut next, CONNECT).await;
    assert_eq!(confirmed, 1);

    for round in 2..=3 {
        proxy.cut_all();
        confirmed += publish_until_confirmed(&publisher, &mut next, Duration::from_secs(20)).await;
        assert_eq!(
            confirmed, round,
            "no publish was confirmed after cut {round}"
        );
        assert!(
            proxy.accepted() >= round as usize,
            "a new connection after cut {round}"
        );
    }
    assert!(publisher.is_connected());

    let (_connection, channel) = open_channel().await;
    let count = wait_for_count(
        &channel,
        &test.topology.forward_queue(),
        confirmed,
        Duration::from_secs(5),
    )
    .await;
    // Every confirmed chunk is in the queue. (A publish that failed may have reached the
    // queue too — the relay re-publishes those and the forwarder skips the duplicate.)
    assert!(count >= confirmed, "{count} < {confirmed}");
    publisher.close().await;
}

#[tokio::test]
async fn a_publisher_started_while_the_broker_is_away_connects_when_it_comes_back() {
    let test = TestTopology::new();
    let proxy = Proxy::start().await;
    proxy.set_refusing(true);
    let publisher = Publisher::start(BusConfig {
        url: proxy.url().into(),
        ..test.config()
    });

    assert!(!publisher.wait_connected(Duration::from_millis(500)).await);
    assert_eq!(
        publisher.publish(&envelope(1, 1)).await,
        Err(PublishError::NotConnected)
    );

    proxy.set_refusing(false);
    // reconnect_max is 1 s in tests, so the next attempt comes within about a second.
    assert!(publisher.wait_connected(CONNECT).await);
    publisher.publish(&envelope(2, 1)).await.unwrap();
    publisher.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_stops_answering_makes_publish_time_out_not_hang() {
    let test = TestTopology::new();
    let proxy = Proxy::start().await;
    let publisher = Publisher::start(BusConfig {
        url: proxy.url().into(),
        confirm_timeout: Duration::from_millis(500),
        ..test.config()
    });
    assert!(publisher.wait_connected(CONNECT).await);
    publisher.publish(&envelope(1, 1)).await.unwrap();

    proxy.set_frozen(true);
    let started = Instant::now();
    let stuck: Vec<_> = (2..6)
        .map(|chunk| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish(&envelope(chunk, 1)).await })
        })
        .collect();
    for publish in stuck {
        assert_eq!(publish.await.unwrap(), Err(PublishError::ConfirmTimeout));
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The connection itself was fine all along: once the broker answers again, publishing
    // works on it without a reconnect.
    proxy.set_frozen(false);
    let mut next = 10;
    assert_eq!(
        publish_until_confirmed(&publisher, &mut next, CONNECT).await,
        1
    );
    assert_eq!(proxy.accepted(), 1);
    publisher.close().await;
}

#[tokio::test]
async fn the_publisher_recovers_when_the_broker_closes_its_channel() {
    let test = TestTopology::new();
    let publisher = Publisher::start(test.config());
    assert!(publisher.wait_connected(CONNECT).await);

    // Publishing to a missing exchange is a channel error (404): the broker closes the
    // channel. The publisher must notice, reconnect and declare the exchange again.
    let (_connection, channel) = open_channel().await;
    channel
        .exchange_delete(
            test.topology.exchange().as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await
        .unwrap();
    let failed = publisher.publish(&envelope(1, 1)).await;
    assert!(
        matches!(failed, Err(PublishError::Broker(ref e)) if e.contains("NOT_FOUND")),
        "{failed:?}"
    );

    let mut next = 2;
    assert_eq!(
        publish_until_confirmed(&publisher, &mut next, CONNECT).await,
        1
    );
    publisher.close().await;
}
