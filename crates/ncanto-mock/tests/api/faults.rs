//! Injected faults: random errors, rate limits, latency, rejected assets, and the /faults API.

use std::time::{Duration, Instant};

use ncanto_mock::Faults;
use serde_json::{Value, json};

use crate::helpers::{TestMock, event, event_with, invalid_indexes};

#[tokio::test]
async fn an_error_rate_of_1_answers_500_and_records_nothing() {
    let app = TestMock::spawn_with(|c| c.faults.error_rate = 1.0).await;
    for _ in 0..3 {
        assert_eq!(app.post(&event(1)).await.status(), 500);
    }
    let stats = app.mock.stats();
    assert_eq!(
        (stats.requests, stats.failed_requests, stats.received),
        (3, 3, 0)
    );
    assert!(app.mock.events().is_empty());
}

#[tokio::test]
async fn invalid_events_are_400s_even_while_errors_are_injected() {
    let app = TestMock::spawn_with(|c| c.faults.error_rate = 1.0).await;
    let response = app.post(&event_with(1, "interaction", json!("Play"))).await;
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn a_rate_limit_rate_of_1_answers_429_with_retry_after() {
    let app = TestMock::spawn_with(|c| c.faults.rate_limit_rate = 1.0).await;
    let response = app.post(&event(1)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1", "0 seconds means 1");

    app.mock
        .set_faults(Faults {
            rate_limit_rate: 1.0,
            retry_after_secs: 7,
            ..Faults::default()
        })
        .await;
    let response = app.post(&event(1)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(app.mock.stats().failed_requests, 2);
}

#[tokio::test]
async fn partial_rates_fail_some_requests_and_accept_the_others() {
    let app = TestMock::spawn_with(|c| {
        c.faults.error_rate = 0.3;
        c.faults.rate_limit_rate = 0.3;
    })
    .await;
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    for n in 0..200 {
        *statuses
            .entry(app.post(&event(n)).await.status().as_u16())
            .or_default() += 1;
    }
    // Loose bounds: 200 rolls at 30% each land far inside them.
    for status in [200, 429, 500] {
        let count = statuses.get(&status).copied().unwrap_or(0);
        assert!((20..=120).contains(&count), "{statuses:?}");
    }
    let stats = app.mock.stats();
    assert_eq!(stats.received, u64::from(statuses[&200]));
    assert_eq!(
        stats.failed_requests,
        u64::from(statuses[&429] + statuses[&500])
    );
}

#[tokio::test]
async fn latency_delays_every_answer() {
    let app = TestMock::spawn_with(|c| c.faults.latency_ms = 150).await;
    let started = Instant::now();
    assert_eq!(app.post(&event(1)).await.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_reject_pattern_refuses_requests_listing_the_matching_events() {
    let app = TestMock::spawn_with(|c| c.faults.reject_asset_pattern = Some("poison".into())).await;
    let body = json!([
        event(1),
        event_with(2, "assetId", json!("poison_pill")),
        event(3),
        event_with(4, "assetId", json!("more_poison")),
    ]);
    let response = app.post(&body).await;
    assert_eq!(response.status(), 400);
    let json: Value = response.json().await.unwrap();
    assert_eq!(invalid_indexes(&json), [1, 3], "{json}");
    assert!(
        json["invalid"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("poison")
    );

    assert_eq!(app.post(&json!([event(1), event(3)])).await.status(), 200);
    let stats = app.mock.stats();
    assert_eq!((stats.rejected_requests, stats.received), (1, 2));
}

#[tokio::test]
async fn a_fail_pattern_answers_500_until_it_is_cleared() {
    let app = TestMock::spawn_with(|c| c.faults.fail_asset_pattern = Some("flaky".into())).await;
    let body = json!([event(1), event_with(2, "assetId", json!("flaky_2"))]);
    assert_eq!(app.post(&body).await.status(), 500);
    assert_eq!(
        app.post(&json!([event(1)])).await.status(),
        200,
        "other events pass"
    );
    app.mock.set_faults(Faults::default()).await;
    assert_eq!(app.post(&body).await.status(), 200);
    let stats = app.mock.stats();
    assert_eq!((stats.failed_requests, stats.received), (1, 3));
}

#[tokio::test]
async fn faults_are_read_replaced_and_cleared_over_http() {
    let app = TestMock::spawn().await;
    let faults_url = app.url("/faults");
    let get = || async {
        let response = app.client.get(&faults_url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()
    };
    assert_eq!(
        get().await,
        serde_json::to_value(Faults::default()).unwrap()
    );

    let posted = app
        .client
        .post(&faults_url)
        .json(&json!({"error_rate": 1.0, "latency_ms": 5, "outage": "error"}))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let expected = Faults {
        error_rate: 1.0,
        latency_ms: 5,
        outage: Some(ncanto_mock::Outage::Error),
        ..Faults::default()
    };
    assert_eq!(posted.json::<Faults>().await.unwrap(), expected);
    assert_eq!(
        serde_json::from_value::<Faults>(get().await).unwrap(),
        expected
    );
    assert_eq!(app.mock.faults(), expected);
    assert_eq!(app.post(&event(1)).await.status(), 503);

    // A POST replaces every fault, defaults included.
    app.client
        .post(&faults_url)
        .json(&json!({"rate_limit_rate": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(app.post(&event(1)).await.status(), 429);

    let cleared = app.client.delete(&faults_url).send().await.unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(app.mock.faults(), Faults::default());
    assert_eq!(app.post(&event(1)).await.status(), 200);
}

#[tokio::test]
async fn bad_faults_are_400s_and_change_nothing() {
    let app = TestMock::spawn_with(|c| c.faults.latency_ms = 1).await;
    let bodies = [
        json!({"eror_rate": 1.0}),
        json!({"outage": "down"}),
        json!({"error_rate": 1.5}),
        json!({"rate_limit_rate": -1}),
        json!([]),
    ];
    for body in bodies {
        let response = app
            .client
            .post(app.url("/faults"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let json: Value = response.json().await.unwrap();
        assert!(json["error"].is_string(), "{json}");
    }
    assert_eq!(app.mock.faults().latency_ms, 1);
}

#[tokio::test]
async fn try_set_faults_refuses_fractions_outside_0_to_1_and_set_faults_clamps_them() {
    let app = TestMock::spawn().await;
    let too_much = Faults {
        error_rate: 2.0,
        ..Faults::default()
    };
    assert!(app.mock.try_set_faults(too_much.clone()).await.is_err());
    assert_eq!(app.mock.faults(), Faults::default());
    app.mock.set_faults(too_much).await;
    assert_eq!(app.mock.faults().error_rate, 1.0);
}
