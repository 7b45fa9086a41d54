//! POST /interactions: strict validation, stats, recording, authentication.

use std::collections::BTreeMap;

use ncanto_mock::Stats;
use serde_json::{Value, json};

use crate::helpers::{TestMock, event, event_with, invalid_indexes};

#[tokio::test]
async fn canonical_events_are_accepted_as_one_object_or_an_array() {
    let app = TestMock::spawn().await;

    let one = app.post(&event(1)).await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap(), json!({"accepted": 1}));

    let three = app.post(&json!([event(2), event(3), event(4)])).await;
    assert_eq!(three.status(), 200);
    assert_eq!(three.json::<Value>().await.unwrap(), json!({"accepted": 3}));

    let subscribers: Vec<String> = app
        .mock
        .events()
        .into_iter()
        .map(|e| e.subscriber)
        .collect();
    assert_eq!(subscribers, ["user_1", "user_2", "user_3", "user_4"]);
}

#[tokio::test]
async fn every_deviation_from_the_canonical_form_is_a_400_naming_its_index() {
    let app = TestMock::spawn().await;
    let mut without_comment = event(9);
    without_comment.as_object_mut().unwrap().remove("comment");
    let mut without_setting = event(9);
    without_setting.as_object_mut().unwrap().remove("setting");
    let cases: Vec<(&str, Value)> = vec![
        (
            "capitalized interaction",
            event_with(9, "interaction", json!("Play_Complete")),
        ),
        (
            "capitalized device",
            event_with(9, "setting.device", json!("Web")),
        ),
        (
            "unknown interaction",
            event_with(9, "interaction", json!("watch")),
        ),
        ("extra field", event_with(9, "eventId", json!("e-1"))),
        (
            "extra setting field",
            event_with(9, "setting.os", json!("android")),
        ),
        (
            "null optional field",
            event_with(9, "contextId", Value::Null),
        ),
        (
            "offset timestamp",
            event_with(9, "timestamp", json!("2025-07-09T13:15:00+03:00")),
        ),
        (
            "+00:00 timestamp",
            event_with(9, "timestamp", json!("2025-07-09T10:15:00+00:00")),
        ),
        (
            "timestamp without zone",
            event_with(9, "timestamp", json!("2025-07-09T10:15:00")),
        ),
        (
            "rating above 1",
            event_with(9, "ratingEquivalent", json!(1.25)),
        ),
        (
            "rating as string",
            event_with(9, "ratingEquivalent", json!("0.5")),
        ),
        ("empty subscriber", event_with(9, "subscriber", json!(""))),
        ("blank asset", event_with(9, "assetId", json!("  "))),
        ("empty comment", event_with(9, "comment", json!(""))),
        ("missing setting", without_setting),
        ("a string, not an event", json!("event")),
    ];
    for (case, deviant) in cases {
        let response = app.post(&json!([event(1), deviant, event(2)])).await;
        assert_eq!(response.status(), 400, "{case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(invalid_indexes(&body), [1], "{case}: {body}");
        assert!(body["error"].is_string(), "{case}: {body}");
        assert!(body["invalid"][0]["reason"].is_string(), "{case}: {body}");
    }
    // Optional fields may be absent.
    assert_eq!(app.post(&without_comment).await.status(), 200);

    let stats = app.mock.stats();
    assert_eq!(
        stats.received, 1,
        "nothing from a refused request is recorded"
    );
    assert_eq!(stats.rejected_requests, 16);
    assert_eq!(app.mock.events().len(), 1);
}

#[tokio::test]
async fn a_single_invalid_object_is_reported_as_index_0() {
    let app = TestMock::spawn().await;
    let response = app.post(&event_with(1, "interaction", json!("PLAY"))).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(invalid_indexes(&body), [0]);
}

#[tokio::test]
async fn bodies_that_are_not_events_are_400s() {
    let app = TestMock::spawn().await;
    for body in ["[]", "{", "42", "null"] {
        let response = app
            .client
            .post(app.url("/interactions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["invalid"], json!([]), "{body}");
    }
}

#[tokio::test]
async fn the_content_type_must_be_json() {
    let app = TestMock::spawn().await;
    let body = serde_json::to_string(&event(1)).unwrap();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app.client.post(app.url("/interactions")).body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 415, "{content_type:?}");
    }
    let with_charset = app
        .client
        .post(app.url("/interactions"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(with_charset.status(), 200);
}

#[tokio::test]
async fn stats_count_events_duplicates_tenants_and_masked_keys() {
    let app = TestMock::spawn().await;
    let send = |tenant: Option<&'static str>, auth: Option<&'static str>, body: Value| {
        let mut request = app.client.post(app.url("/interactions")).json(&body);
        if let Some(tenant) = tenant {
            request = request.header("x-tenant", tenant);
        }
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap().status() }
    };
    let acme = Some("Bearer acme-secret-key");
    assert_eq!(
        send(Some("acme"), acme, json!([event(1), event(2)])).await,
        200
    );
    // A retry of the same batch: both events are duplicates.
    assert_eq!(
        send(Some("acme"), acme, json!([event(1), event(2)])).await,
        200
    );
    assert_eq!(
        send(Some("globex"), Some("Bearer glx-key"), event(3)).await,
        200
    );
    assert_eq!(send(None, None, json!([event(4), event(4)])).await, 200);
    assert_eq!(
        send(
            None,
            None,
            json!([event_with(5, "interaction", json!("Play"))])
        )
        .await,
        400
    );

    let expected = Stats {
        requests: 5,
        received: 7,
        unique: 4,
        duplicates: 3,
        rejected_requests: 1,
        failed_requests: 0,
        by_tenant: BTreeMap::from([("".into(), 2), ("acme".into(), 4), ("globex".into(), 1)]),
        by_auth: BTreeMap::from([
            ("".into(), 2),
            ("Bearer acm…".into(), 4),
            ("Bearer glx…".into(), 1),
        ]),
    };
    assert_eq!(app.mock.stats(), expected);
    let over_http: Stats = serde_json::from_value(app.http_stats().await).unwrap();
    assert_eq!(over_http, expected);
    let raw = serde_json::to_string(&app.http_stats().await).unwrap();
    assert!(!raw.contains("acme-secret"), "{raw}");
}

#[tokio::test]
async fn stats_reset_over_http_and_from_the_library() {
    let app = TestMock::spawn().await;
    app.post(&event(1)).await;
    let reset = app.client.delete(app.url("/stats")).send().await.unwrap();
    assert_eq!(reset.status(), 204);
    assert_eq!(app.mock.stats(), Stats::default());
    assert!(app.mock.events().is_empty());

    // The duplicate memory is reset too: the same event is unique again.
    app.post(&event(1)).await;
    assert_eq!(
        (app.mock.stats().unique, app.mock.stats().duplicates),
        (1, 0)
    );
    app.mock.reset_stats();
    assert_eq!(app.mock.stats(), Stats::default());
}

#[tokio::test]
async fn events_are_not_kept_when_recording_is_off() {
    let app = TestMock::spawn_with(|c| c.record_events = false).await;
    assert_eq!(app.post(&json!([event(1), event(1)])).await.status(), 200);
    assert!(app.mock.events().is_empty());
    let stats = app.mock.stats();
    assert_eq!((stats.received, stats.unique, stats.duplicates), (2, 1, 1));
}

#[tokio::test]
async fn the_api_key_is_required_when_configured() {
    let app = TestMock::spawn_with(|c| c.expected_api_key = Some("s3cret-key".into())).await;
    let send = |auth: Option<&'static str>| {
        let mut request = app.client.post(app.url("/interactions")).json(&event(1));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.unwrap() }
    };
    for wrong in [
        None,
        Some("Bearer wrong"),
        Some("s3cret-key"),
        Some("Bearer s3cret-key2"),
    ] {
        let response = send(wrong).await;
        assert_eq!(response.status(), 401, "{wrong:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
    }
    assert_eq!(send(Some("Bearer s3cret-key")).await.status(), 200);
    let stats = app.mock.stats();
    assert_eq!((stats.rejected_requests, stats.received), (4, 1));
    assert_eq!(stats.by_auth, BTreeMap::from([("Bearer s3c…".into(), 1)]));
    // The admin routes need no key.
    assert_eq!(app.http_stats().await["received"], 1);
}

#[tokio::test]
async fn health_answers_ok() {
    let app = TestMock::spawn().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );
}

#[tokio::test]
async fn accepted_events_are_listed_over_http_in_arrival_order() {
    let app = TestMock::spawn().await;
    app.post(&json!([event(1), event(2)])).await;
    app.post(&event(3)).await;
    let listed: Vec<Value> = app
        .client
        .get(app.url("/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed, vec![event(1), event(2), event(3)]);
}
