//! The outbox: what reaches RabbitMQ, and that nothing is lost while it is away.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Proxy, TestApp, database_through};
use crate::ingest::event;

#[tokio::test]
async fn a_published_envelope_decodes_to_the_stored_events() {
    let app = TestApp::spawn().await;
    app.wait_for_broker().await;
    let mut first = event("u1");
    first["eventId"] = json!("evt-1");
    let response = app.post("/api/v1/logs", &json!([first, event("u2")])).await;
    assert_eq!(response.status(), 202);

    let envelopes = app.published().await;
    assert_eq!(envelopes.len(), 1);
    let envelope = &envelopes[0];
    assert_eq!((envelope.version, envelope.tenant.as_str()), (1, "acme"));
    let stored: Vec<_> = app
        .store
        .chunk_events(envelope.chunk_id)
        .await
        .unwrap()
        .iter()
        .map(|row| row.to_event().unwrap())
        .collect();
    assert_eq!(envelope.events, stored);
    assert_eq!(envelope.events[0].event_id.as_deref(), Some("evt-1"));
    assert_eq!(
        app.store.chunk_state(envelope.chunk_id).await.unwrap(),
        Some(interaction_store::ChunkState::Published)
    );
}

#[tokio::test]
async fn with_the_broker_away_events_are_still_accepted_and_the_relay_publishes_them_later() {
    let proxy = Proxy::start_down("127.0.0.1:5672").await;
    let app = TestApp::spawn_with(|c| {
        c.connections.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port).into();
    })
    .await;

    let response = app
        .post("/api/v1/logs", &json!([event("u1"), event("u2")]))
        .await;
    assert_eq!(response.status(), 202, "the broker is not needed to accept");
    // /health answers from the background check: wait for one that has seen the events.
    let health = app
        .health_when(500, |h| h["pending_interactions"] == 2)
        .await;
    assert_eq!(
        (health["rabbitmq"].as_bool(), health["database"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["pending_interactions"], 2);
    assert_eq!(app.store.unpublished_chunk_count().await.unwrap(), 1);

    proxy.restore();
    app.wait_for_broker().await;
    let envelopes = app.published().await;
    assert_eq!(envelopes.iter().map(|e| e.events.len()).sum::<usize>(), 2);
}

#[tokio::test]
async fn a_broker_outage_mid_run_loses_nothing() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let app = TestApp::spawn_with(|c| {
        c.connections.amqp_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port).into();
    })
    .await;
    app.wait_for_broker().await;
    assert_eq!(
        app.post("/api/v1/log", &event("before")).await.status(),
        202
    );
    app.wait_until("the first chunk to be published", async || {
        (app.store.unpublished_chunk_count().await.ok()? == 0).then_some(())
    })
    .await;

    proxy.cut();
    app.wait_for_broker_state(false).await;
    for i in 0..5 {
        let response = app.post("/api/v1/log", &event(&format!("during{i}"))).await;
        assert_eq!(response.status(), 202);
    }
    proxy.restore();
    app.wait_for_broker().await;
    let envelopes = app.published().await;
    let subscribers: Vec<String> = envelopes
        .iter()
        .flat_map(|e| e.events.iter().map(|ev| ev.interaction.subscriber.clone()))
        .collect();
    assert_eq!(subscribers.len(), 6, "{subscribers:?}");
    for i in 0..5 {
        assert!(subscribers.contains(&format!("during{i}")));
    }
}

#[tokio::test]
async fn a_graceful_shutdown_answers_in_flight_requests_and_publishes_what_it_stored() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let mut app = TestApp::spawn_with(|c| database_through(c, &proxy)).await;
    app.wait_for_broker().await;
    assert_eq!(app.post("/api/v1/log", &event("warm")).await.status(), 202);
    let client = app.client.clone();
    let url = app.url("/api/v1/log");
    let send = |i: usize| {
        let request = client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-api-key", crate::helpers::ACME_KEY)
            .json(&event(&format!("u{i}")));
        tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
    };
    // One write in flight (the database paused) and 49 requests queued behind it when the
    // stop begins.
    proxy.pause();
    let mut sends = vec![send(0)];
    app.wait_for_writes(1.0, 0.0).await;
    sends.extend((1..50).map(send));
    app.wait_for_writes(1.0, 49.0).await;
    let store = app.store.clone();
    app.shutdown.shutdown();
    proxy.resume();
    // Every request already queued is written and answered: none is dropped by the stop.
    for send in sends {
        assert_eq!(send.await.unwrap().unwrap(), 202);
    }
    // Every 202 is stored, and everything stored was published before the app stopped.
    assert_eq!(store.pending_event_count().await.unwrap(), 51);
    app.stopped_within(Duration::from_secs(20)).await;
    assert_eq!(store.unpublished_chunk_count().await.unwrap(), 0);
}
