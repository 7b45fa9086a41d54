//! Clock-skew correction over HTTP: `sentAt` from the header or the body, what the response
//! says, what the store keeps, and every bad `sentAt` refused with nothing stored.

use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use interaction_core::format_timestamp;
use serde_json::{Value, json};

use crate::helpers::{ACME_KEY, TestApp};

fn event_at(subscriber: &str, timestamp: DateTime<Utc>) -> Value {
    json!({"timestamp": format_timestamp(&timestamp), "subscriber": subscriber,
           "assetId": "asset_1", "interaction": "play", "setting": {"device": "web"}})
}

/// Every stored event of the app's single chunk: (subscriber, occurred_at, original).
async fn stored(app: &TestApp) -> Vec<(String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    let mut rows = Vec::new();
    for envelope in app.published().await {
        for row in app.store.chunk_events(envelope.chunk_id).await.unwrap() {
            rows.push((row.subscriber, row.occurred_at, row.original_occurred_at));
        }
    }
    rows.sort();
    rows
}

#[tokio::test]
async fn a_device_clock_hours_behind_is_corrected_and_the_original_kept() {
    let app = TestApp::spawn().await;
    // Milliseconds, like a device clock (and below the store's microseconds).
    let now = Utc::now().trunc_subsecs(3);
    let behind = TimeDelta::hours(2);
    // The device clock says 2 hours earlier than it is; its events carry that clock too.
    let device_now = now - behind;
    let happened = device_now - TimeDelta::seconds(30);
    let body = json!([event_at("a", happened), event_at("b", happened)]);
    let response = app
        .post_raw(
            "/api/v1/logs",
            body.to_string().into_bytes(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", ACME_KEY),
                ("x-sent-at", &format_timestamp(&device_now)),
            ],
        )
        .await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["clockSkewCorrected"], 2, "{answer}");
    let skew_ms = answer["clockSkewMs"].as_i64().unwrap();
    // Two hours, plus however long the request took (well under the 60 s threshold).
    assert!(
        (7_200_000..7_260_000).contains(&skew_ms),
        "clockSkewMs {skew_ms}"
    );
    let rows = stored(&app).await;
    assert_eq!(rows.len(), 2);
    for (subscriber, occurred_at, original) in rows {
        assert_eq!(
            original,
            Some(happened),
            "{subscriber}: the device's own time kept"
        );
        let moved = occurred_at - happened;
        assert_eq!(
            moved.num_milliseconds(),
            skew_ms,
            "{subscriber}: moved by the skew"
        );
    }
}

#[tokio::test]
async fn a_body_sent_at_within_the_threshold_changes_nothing() {
    let app = TestApp::spawn().await;
    let happened = Utc::now().trunc_subsecs(3) - TimeDelta::seconds(10);
    let body = json!({"sentAt": format_timestamp(&(Utc::now() - TimeDelta::seconds(20))),
                      "batch": [event_at("a", happened)]});
    let response = app.post("/api/v1/logs", &body).await;
    assert_eq!(response.status(), 202);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"status": "success", "message": "Batch received and saved for processing",
               "count": 1, "skipped": 0, "duplicates": 0, "errors": []}),
        "no clockSkew fields when nothing was corrected"
    );
    assert_eq!(stored(&app).await, vec![("a".into(), happened, None)]);
}

#[tokio::test]
async fn bad_sent_at_and_body_shapes_are_400s_that_store_nothing() {
    let app = TestApp::spawn().await;
    let now = format_timestamp(&Utc::now());
    let event = event_at("a", Utc::now());
    // (path, body, X-Sent-At, message)
    let cases: Vec<(&str, Value, Option<&str>, &str)> = vec![
        (
            "/api/v1/logs",
            json!([event]),
            Some("yesterday"),
            "the X-Sent-At header must be an RFC 3339 date-time",
        ),
        (
            "/api/v1/log",
            event.clone(),
            Some("1970-01-01T00:00:00Z"),
            "the X-Sent-At header is not a plausible device time",
        ),
        (
            "/api/v1/logs",
            json!({"sentAt": now, "batch": [event]}),
            Some(&now),
            "sentAt was sent both in the X-Sent-At header and in the body",
        ),
        (
            "/api/v1/logs",
            json!({"sentAt": "soon", "batch": [event]}),
            None,
            "sentAt must be an RFC 3339 date-time",
        ),
        (
            "/api/v1/logs",
            json!({"sentAt": now, "batch": {"events": [event]}}),
            None,
            "\"batch\" must be an array of interaction objects, got an object",
        ),
        (
            "/api/v1/logs",
            json!({"sentAt": now, "batch": [event], "tenant": "x"}),
            None,
            "may have only \"sentAt\" beside it; got \"tenant\"",
        ),
        (
            "/api/v1/log",
            json!({"sentAt": now, "batch": [event]}),
            None,
            "this endpoint takes one event object",
        ),
    ];
    for (path, body, header, message) in cases {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("x-api-key", ACME_KEY),
        ];
        if let Some(value) = header {
            headers.push(("x-sent-at", value));
        }
        let response = app
            .post_raw(path, body.to_string().into_bytes(), &headers)
            .await;
        assert_eq!(response.status(), 400, "{path} {body} {header:?}");
        let answer: Value = response.json().await.unwrap();
        assert!(
            answer["message"].as_str().unwrap().contains(message),
            "{path} {body} {header:?}: {answer}"
        );
    }
    assert_eq!(app.store.pending_event_count().await.unwrap(), 0);
}
