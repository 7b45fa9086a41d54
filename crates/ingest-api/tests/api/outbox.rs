//! The outbox's safety nets: the reconciler (messages the broker lost after confirming them),
//! the relay with an unreadable row, and publishes that come back unroutable.

use interaction_store::ChunkState;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use interaction_bus::Envelope;
use lapin::options::QueuePurgeOptions;
use lapin::types::FieldTable;
use serde_json::Value;

use crate::helpers::{Proxy, TestApp};
use crate::ingest::event;

/// Envelopes by chunk id: a chunk published twice counts once.
fn by_chunk(envelopes: impl IntoIterator<Item = Envelope>) -> BTreeMap<i64, Envelope> {
    envelopes.into_iter().map(|e| (e.chunk_id, e)).collect()
}

/// The subscribers of every event in `chunks`, sorted.
fn subscribers<'a>(chunks: impl IntoIterator<Item = &'a Envelope>) -> Vec<String> {
    let mut names: Vec<String> = chunks
        .into_iter()
        .flat_map(|e| e.events.iter().map(|ev| ev.interaction.subscriber.clone()))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn chunks_purged_from_the_forward_queue_are_published_again_by_the_reconciler() {
    let app = TestApp::spawn_with(|c| {
        c.reconcile_after = Duration::from_secs(2);
        c.reconcile_interval = Duration::from_millis(200);
    })
    .await;
    app.wait_for_broker().await;
    let sent: Vec<String> = (0..5).map(|i| format!("purged{i}")).collect();
    for name in &sent {
        assert_eq!(app.post("/api/v1/log", &event(name)).await.status(), 202);
    }
    app.wait_until("every chunk to be published", async || {
        (app.store.unpublished_chunk_count().await.ok()? == 0).then_some(())
    })
    .await;

    // An operator purges the forward queue (`rabbitmqctl purge_queue` does the same) while
    // no forwarder runs: the broker confirmed the chunks, then lost them.
    let (_connection, channel) = app.broker_channel().await;
    let purged = channel
        .queue_purge(
            app.topology.forward_queue().as_str().into(),
            QueuePurgeOptions::default(),
        )
        .await
        .unwrap();
    assert!(purged >= 1, "the chunks were in the queue");
    assert_eq!(app.metric("ingest_reconciled_chunks_total").await, 0.0);

    // The database still knows they are unfinished: RECONCILE_AFTER later they are back.
    let seen = RefCell::new(BTreeMap::new());
    let back = app
        .wait_until("the purged chunks to be published again", async || {
            let taken = by_chunk(app.take_forwarded().await);
            let mut seen = seen.borrow_mut();
            seen.extend(taken);
            (subscribers(seen.values()) == sent).then(|| seen.clone())
        })
        .await;
    let reconciled = app.metric("ingest_reconciled_chunks_total").await;
    assert!(reconciled >= back.len() as f64, "{reconciled} for {back:?}");
    for chunk_id in back.keys() {
        assert_eq!(
            app.store.chunk_state(*chunk_id).await.unwrap(),
            Some(ChunkState::Published)
        );
    }
}

#[tokio::test]
async fn a_pending_chunk_with_an_unreadable_row_is_reported_and_every_other_chunk_is_published() {
    let proxy = Proxy::start_down("127.0.0.1:5672").await;
    let app = TestApp::spawn_with(|c| {
        c.connections.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port).into();
    })
    .await;
    // One chunk per request (each waits for its commit): good, corrupt, good.
    for name in ["good-before", "corrupt", "good-after"] {
        assert_eq!(app.post("/api/v1/log", &event(name)).await.status(), 202);
    }
    assert_eq!(app.store.unpublished_chunk_count().await.unwrap(), 3);
    // A row no normalized event could have (edited by hand, or by a newer version).
    assert_eq!(
        app.sql("UPDATE events SET interaction = 'teleport' WHERE subscriber = 'corrupt'")
            .await,
        1
    );

    proxy.restore();
    app.wait_for_broker().await;
    app.wait_until("the readable chunks to be published", async || {
        (app.store.unpublished_chunk_count().await.ok()? == 1).then_some(())
    })
    .await;
    let published = by_chunk(app.take_forwarded().await);
    assert_eq!(
        subscribers(published.values()),
        ["good-after", "good-before"]
    );
    let corrupt = find_chunk_of(&app, "corrupt").await;
    assert!(!published.contains_key(&corrupt));
    let series = r#"ingest_relay_corrupt_chunks_total{by="relay"}"#;
    assert_eq!(app.metric(series).await, 1.0);

    // It stays pending, counted where operators look, and out of the relay's way for a while.
    assert_eq!(
        app.store.chunk_state(corrupt).await.unwrap(),
        Some(ChunkState::Pending)
    );
    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["pending_interactions"], 3,
        "published ones count too"
    );
    assert_eq!(
        app.sql(&format!(
            "UPDATE chunks SET leased_until = leased_until
             WHERE id = {corrupt} AND leased_until > now() + interval '5 minutes'"
        ))
        .await,
        1,
        "leased far ahead"
    );

    // Repaired, and its recheck due: it goes out by itself, reported once only.
    app.sql("UPDATE events SET interaction = 'play' WHERE subscriber = 'corrupt'")
        .await;
    app.sql(&format!(
        "UPDATE chunks SET leased_until = NULL WHERE id = {corrupt}"
    ))
    .await;
    let envelopes = app.published().await;
    assert_eq!(subscribers(&envelopes), ["corrupt"]);
    assert_eq!(app.metric(series).await, 1.0);
}

/// The chunk holding `subscriber`'s event (ids start at 1 in a fresh database).
async fn find_chunk_of(app: &TestApp, subscriber: &str) -> i64 {
    for chunk_id in 1..=20 {
        let rows = app.store.chunk_events(chunk_id).await.unwrap();
        if rows.iter().any(|row| row.subscriber == subscriber) {
            return chunk_id;
        }
    }
    panic!("no chunk holds {subscriber}");
}

#[tokio::test]
async fn chunks_whose_publish_comes_back_unroutable_are_never_marked_published_and_go_out_later() {
    let app = TestApp::spawn().await;
    app.wait_for_broker().await;
    // The forward queue loses its binding: publishes come back (mandatory) until the
    // publisher re-declares the topology, which it does after the first return. Many
    // concurrent requests straddle that moment, some routable, some not.
    let (_connection, channel) = app.broker_channel().await;
    channel
        .queue_unbind(
            app.topology.forward_queue().as_str().into(),
            app.topology.exchange().as_str().into(),
            app.topology.forward_routing_key().into(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let sent: Vec<String> = (0..200).map(|i| format!("u{i:03}")).collect();
    let requests = sent.iter().map(|name| {
        let request = app
            .client
            .post(app.url("/api/v1/log"))
            .header("x-api-key", crate::helpers::ACME_KEY)
            .json(&event(name));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");

    // A chunk marked published while unroutable would never reach the queue (the relay takes
    // only pending chunks): every event must arrive.
    let seen = RefCell::new(BTreeMap::new());
    app.wait_until("every chunk in the forward queue", async || {
        let all_published = app.store.unpublished_chunk_count().await.ok()? == 0;
        let taken = by_chunk(app.take_forwarded().await);
        let mut seen = seen.borrow_mut();
        seen.extend(taken);
        (all_published && subscribers(seen.values()) == sent).then_some(())
    })
    .await;
    assert!(
        app.metric("ingest_publish_failures_total").await >= 1.0,
        "the first publish came back unroutable"
    );
    assert!(app.metric("ingest_relay_republished_total").await >= 1.0);
}
