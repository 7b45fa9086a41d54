//! The scenarios of a whole pipeline.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::pipeline::{Pipeline, Service};

fn now() -> String {
    (chrono::Utc::now() - chrono::TimeDelta::seconds(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn event(subscriber: &str) -> Value {
    json!({"timestamp": now(), "subscriber": subscriber, "assetId": "asset",
           "interaction": "play", "ratingEquivalent": 0.25, "setting": {"device": "web"}})
}

/// The client documentation's examples, verbatim, and their canonical form (one per line).
const SPEC: [(&str, &str); 3] = [
    (
        "/api/v1/log",
        include_str!("../../crates/interaction-core/tests/fixtures/spec/play_complete.json"),
    ),
    (
        "/interact",
        include_str!("../../crates/interaction-core/tests/fixtures/spec/add_to_cart.json"),
    ),
    (
        "/api/v1/logs",
        include_str!("../../crates/interaction-core/tests/fixtures/spec/batch.json"),
    ),
];
const SPEC_CANONICAL: &str =
    include_str!("../../crates/interaction-core/tests/fixtures/spec/canonical.jsonl");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spec_examples_as_written_arrive_at_ncanto_byte_for_byte_canonical() {
    // The default configuration: the examples' 2025 timestamps are accepted as they are.
    let pipeline = Pipeline::start(&[]).await;
    for (path, body) in SPEC {
        let response = pipeline.post_text(path, body).await;
        let status = response.status();
        let answer = response.text().await.unwrap();
        assert_eq!(status, 202, "{path}: {answer}");
    }
    pipeline.wait_for_unique(4, Duration::from_secs(30)).await;
    // The mock accepts only bodies that are canonical JSON; each event it kept, written
    // back the one way interaction_core writes events, must be exactly a line of the fixture.
    let received: Vec<String> = pipeline
        .mock_events()
        .await
        .iter()
        .map(|event| {
            let event: interaction_core::Interaction =
                serde_json::from_value(event.clone()).unwrap();
            serde_json::to_string(&event).unwrap()
        })
        .collect();
    let mut received = received;
    let mut sent: Vec<String> = SPEC_CANONICAL.lines().map(str::to_owned).collect();
    received.sort();
    sent.sort();
    assert_eq!(received, sent);
    let stats = pipeline.mock_stats().await;
    assert_eq!(stats["by_tenant"]["e2e"], 4);
    assert_eq!(stats["by_auth"]["Bearer e2e…"], 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_omitted_ratings_arrive_with_the_profiles_interaction_and_rating() {
    let pipeline = Pipeline::start(&[]).await;
    let body = json!([
        {"timestamp": now(), "subscriber": "a", "assetId": "x", "action": "watch",
         "progress": 0.95, "setting": {"device": "IOS_APP"}},
        {"timestamp": now(), "subscriber": "b", "assetId": "x", "action": "dislike",
         "setting": {"device": "web"}},
        {"timestamp": now(), "subscriber": "c", "assetId": "x", "interaction": "Share",
         "setting": {"device": "web"}},
    ]);
    assert_eq!(pipeline.post("/api/v1/logs", &body).await.status(), 202);
    pipeline.wait_for_unique(3, Duration::from_secs(30)).await;
    let mut received: Vec<(String, String, f64, String)> = pipeline
        .mock_events()
        .await
        .iter()
        .map(|e| {
            (
                e["subscriber"].as_str().unwrap().to_owned(),
                e["interaction"].as_str().unwrap().to_owned(),
                e["ratingEquivalent"].as_f64().unwrap(),
                e["setting"]["device"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    received.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        received,
        [
            ("a".into(), "play_complete".into(), 0.5, "ios_app".into()),
            ("b".into(), "rate".into(), -1.0, "web".into()),
            ("c".into(), "share".into(), 0.75, "web".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_are_reported_to_the_client_and_never_reach_ncanto() {
    let pipeline = Pipeline::start(&[]).await;
    let mut bad = event("bad-rating");
    bad["ratingEquivalent"] = json!(9);
    let body = json!([event("ok-1"), bad, {"subscriber": "no-fields"}, event("ok-2")]);
    let response = pipeline.post("/api/v1/logs", &body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["count"].as_u64(), answer["skipped"].as_u64()),
        (Some(2), Some(2))
    );
    let indexes: HashSet<u64> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, HashSet::from([1, 2]));
    pipeline.wait_for_unique(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let subscribers: HashSet<String> = pipeline
        .mock_events()
        .await
        .iter()
        .map(|e| e["subscriber"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        subscribers,
        HashSet::from(["ok-1".to_owned(), "ok-2".to_owned()])
    );
}

/// Sends `total` events as a mix of 100-event batches and single events from `clients`
/// concurrent clients; returns the subscribers of every event answered 202.
async fn send_mixed(pipeline: &Pipeline, total: usize, clients: usize, tag: &str) -> Vec<String> {
    let per_client = total / clients;
    let sends = (0..clients).map(|c| async move {
        let mut accepted = Vec::new();
        let mut sent = 0;
        while sent < per_client {
            // Half the clients send batches, half single events.
            let n = if c % 2 == 0 {
                100.min(per_client - sent)
            } else {
                1
            };
            let names: Vec<String> = (sent..sent + n).map(|i| format!("{tag}-{c}-{i}")).collect();
            let response = if n == 1 {
                pipeline.post("/api/v1/log", &event(&names[0])).await
            } else {
                let body: Vec<Value> = names.iter().map(|s| event(s)).collect();
                pipeline.post("/api/v1/logs", &json!(body)).await
            };
            if response.status() == 202 {
                accepted.extend(names);
            }
            sent += n;
        }
        accepted
    });
    futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_events_from_concurrent_clients_all_arrive_and_nothing_stays_pending() {
    let pipeline = Pipeline::start(&[]).await;
    // 8 clients of 2,500 events: 4 send batches of 100, 4 send 2,500 single-event requests.
    let accepted = send_mixed(&pipeline, 20_000, 8, "load").await;
    assert_eq!(accepted.len(), 20_000, "every request answered 202");
    let stats = pipeline
        .wait_for_unique(20_000, Duration::from_secs(120))
        .await;
    assert_eq!(stats["duplicates"], 0);
    pipeline
        .wait_for(
            "pending_interactions back at 0",
            Duration::from_secs(30),
            async || (pipeline.health().await["pending_interactions"] == 0).then_some(()),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarder_stopped_with_sigterm_mid_stream_and_started_again_delivers_everything() {
    let mut pipeline = Pipeline::start(&[("NCANTO_BATCH_SIZE", "10"), ("PREFETCH", "2")]).await;
    pipeline.mock_faults(json!({"latency_ms": 30})).await;
    let accepted = send_mixed(&pipeline, 2_000, 4, "term").await;
    assert_eq!(accepted.len(), 2_000);
    pipeline.wait_for_unique(100, Duration::from_secs(30)).await;
    pipeline.terminate(Service::Forwarder(0)).await;
    let delivered = pipeline.mock_stats().await["unique"].as_u64().unwrap();
    assert!(
        delivered < 2_000,
        "stopped mid-stream ({delivered} delivered)"
    );
    pipeline.mock_faults(json!({})).await;
    pipeline.spawn(Service::Forwarder(0));
    pipeline.wait_ready(Service::Forwarder(0)).await;
    let stats = pipeline
        .wait_for_unique(2_000, Duration::from_secs(60))
        .await;
    assert_eq!(stats["duplicates"], 0, "a graceful stop re-sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_api_killed_right_after_its_202s_loses_nothing_it_acknowledged() {
    let mut pipeline = Pipeline::start(&[]).await;
    let accepted = send_mixed(&pipeline, 2_000, 4, "kill").await;
    // No grace: whatever was committed but not yet published must be found by the relay.
    pipeline.kill(Service::Ingest(0));
    assert_eq!(accepted.len(), 2_000);
    pipeline.spawn(Service::Ingest(0));
    pipeline.wait_ready(Service::Ingest(0)).await;
    pipeline
        .wait_for_unique(2_000, Duration::from_secs(60))
        .await;
    let received: HashSet<String> = pipeline
        .mock_events()
        .await
        .iter()
        .map(|e| e["subscriber"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = accepted.iter().filter(|s| !received.contains(*s)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}
