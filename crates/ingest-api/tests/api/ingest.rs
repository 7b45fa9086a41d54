//! Storing events: shapes, per-item errors, duplicates, normalization, shared writes.

use interaction_core::format_timestamp;
use serde_json::{Value, json};

use crate::helpers::{Proxy, TestApp, database_through};

/// A valid event happening now.
pub(crate) fn event(subscriber: &str) -> Value {
    json!({
        "timestamp": format_timestamp(&(chrono::Utc::now() - chrono::TimeDelta::seconds(30))),
        "subscriber": subscriber,
        "assetId": "asset_1",
        "interaction": "play",
        "ratingEquivalent": 0.25,
        "setting": {"device": "web"}
    })
}

#[tokio::test]
async fn a_valid_batch_is_stored_and_answered_202_with_the_spec_body() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/api/v1/logs", &json!([event("u1"), event("u2")]))
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"status": "success", "message": "Batch received and saved for processing",
               "count": 2, "skipped": 0, "duplicates": 0, "errors": []})
    );
    // 202 means committed: the events are there now, not eventually.
    assert_eq!(app.store.pending_event_count().await.unwrap(), 2);
}

#[tokio::test]
async fn every_endpoint_and_alias_stores_events() {
    let app = TestApp::spawn().await;
    for (path, body, message) in [
        (
            "/api/v1/logs",
            json!([event("a")]),
            "Batch received and saved for processing",
        ),
        (
            "/api/v1/logs",
            event("b"),
            "Batch received and saved for processing",
        ),
        (
            "/interact/batch",
            json!([event("c")]),
            "Batch received and saved for processing",
        ),
        (
            "/api/v1/log",
            event("d"),
            "Event received and saved for processing",
        ),
        (
            "/interact",
            event("e"),
            "Event received and saved for processing",
        ),
    ] {
        let response = app.post(path, &body).await;
        assert_eq!(response.status(), 202, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["message"].as_str(), body["count"].as_u64()),
            (Some(message), Some(1)),
            "{path}"
        );
    }
    assert_eq!(app.store.pending_event_count().await.unwrap(), 5);
}

#[tokio::test]
async fn a_mixed_batch_stores_the_valid_items_and_reports_the_invalid_by_index() {
    let app = TestApp::spawn().await;
    let mut bad_rating = event("u2");
    bad_rating["ratingEquivalent"] = json!(3);
    let mut bad_device = event("u4");
    bad_device["setting"]["device"] = json!("tv");
    let body = json!([event("u1"), bad_rating, event("u3"), bad_device, "junk"]);
    let response = app.post("/api/v1/logs", &body).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["count"].as_u64(), body["skipped"].as_u64()),
        (Some(2), Some(3))
    );
    let errors: Vec<(u64, &str)> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        errors,
        [(1, "ratingEquivalent"), (3, "setting.device"), (4, "$")]
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("-1.0 to 1.0")
    );
    assert_eq!(app.store.pending_event_count().await.unwrap(), 2);
}

#[tokio::test]
async fn a_body_whose_items_are_all_invalid_is_a_400_that_stores_nothing() {
    let app = TestApp::spawn().await;
    let mut bad = event("u1");
    bad["interaction"] = json!("wink");
    let response = app.post("/api/v1/logs", &json!([bad.clone(), 7])).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error");
    assert_eq!(body["message"], "all 2 events are invalid; see errors");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2);

    let response = app.post("/api/v1/log", &bad).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["message"], "the event is invalid; see errors");
    assert_eq!(body["errors"][0]["field"], "interaction");
    assert_eq!(app.store.pending_event_count().await.unwrap(), 0);
}

#[tokio::test]
async fn bodies_that_are_not_events_are_400s_with_a_reason() {
    let app = TestApp::spawn().await;
    let json_headers = [
        ("content-type", "application/json"),
        ("x-api-key", crate::helpers::ACME_KEY),
    ];
    for (path, body, message) in [
        (
            "/api/v1/logs",
            &b"{not json"[..],
            "the body is not valid JSON",
        ),
        ("/api/v1/logs", b"", "the body is not valid JSON"),
        (
            "/api/v1/logs",
            b"42",
            "must be an interaction object or an array of them, got a number",
        ),
        ("/api/v1/logs", b"[]", "the batch is empty"),
        ("/api/v1/log", b"[]", "the batch is empty"),
        (
            "/api/v1/log",
            br#"[{"a":1}]"#,
            "this endpoint takes one event object",
        ),
    ] {
        let response = app.post_raw(path, body.to_vec(), &json_headers).await;
        assert_eq!(
            response.status(),
            400,
            "{path} {:?}",
            String::from_utf8_lossy(body)
        );
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["status"], "error");
        assert!(
            json["message"].as_str().unwrap().contains(message),
            "{json}"
        );
    }
}

#[tokio::test]
async fn duplicate_event_ids_are_stored_once_and_reported_across_and_within_requests() {
    let app = TestApp::spawn().await;
    let with_id = |id: &str| {
        let mut e = event("u");
        e["eventId"] = json!(id);
        e
    };
    let response = app
        .post(
            "/api/v1/logs",
            &json!([with_id("e1"), with_id("e2"), with_id("e1")]),
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["count"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(1)),
        "{body}"
    );
    assert_eq!(body["duplicateIndexes"], json!([2]));

    let response = app
        .post(
            "/api/v1/logs",
            &json!([with_id("e2"), with_id("e3"), event("no-id")]),
        )
        .await;
    assert_eq!(
        response.status(),
        202,
        "a duplicate does not fail the request"
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["count"].as_u64(), body["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(body["duplicateIndexes"], json!([0]));

    // Only duplicates: still a success, nothing new stored.
    let response = app.post("/api/v1/log", &with_id("e3")).await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["count"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(1))
    );

    // Another tenant has its own key space.
    let response = app
        .post_raw(
            "/api/v1/log",
            serde_json::to_vec(&with_id("e1")).unwrap(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", crate::helpers::GLOBEX_KEY),
            ],
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["count"].as_u64(), Some(1));
    assert_eq!(app.store.pending_event_count().await.unwrap(), 5);
}

#[tokio::test]
async fn the_spec_examples_are_stored_exactly_normalized() {
    // The spec's events are from 2025: the default configuration accepts any age.
    let app = TestApp::spawn().await;
    let body = json!([
        {"timestamp": "2025-07-09T13:15:00+03:00", "subscriber": " viusasa_user_12345 ",
         "assetId": "viusasa_episode_67890", "interaction": "play_complete", "ratingEquivalent": 0.5,
         "comment": "User watched 90% of the episode.", "contextId": "viusasa_player_context",
         "setting": {"device": "Android_App"}},
        {"timestamp": "2025-07-09T11:05:20Z", "subscriber": "duka_user_54321",
         "assetId": "duka_product_abcde", "interaction": "add_to_cart", "ratingEquivalent": 0.5,
         "comment": "User added product to cart from product detail page.",
         "contextId": "duka_pdp_context", "setting": {"device": "web"}},
        {"timestamp": "2025-07-09T09:30:00Z", "subscriber": "citizen_user_12345",
         "assetId": "citizen_article_67890", "interaction": "select", "ratingEquivalent": 0.25,
         "setting": {"device": "web"}},
    ]);
    let response = app.post("/api/v1/logs", &body).await;
    assert_eq!(response.status(), 202);
    let published = app.published().await;
    let stored: Vec<String> = published[0]
        .events
        .iter()
        .map(|e| serde_json::to_string(&e.interaction).unwrap())
        .collect();
    assert_eq!(
        stored,
        [
            r#"{"timestamp":"2025-07-09T10:15:00Z","subscriber":"viusasa_user_12345","assetId":"viusasa_episode_67890","interaction":"play_complete","ratingEquivalent":0.5,"comment":"User watched 90% of the episode.","contextId":"viusasa_player_context","setting":{"device":"android_app"}}"#,
            r#"{"timestamp":"2025-07-09T11:05:20Z","subscriber":"duka_user_54321","assetId":"duka_product_abcde","interaction":"add_to_cart","ratingEquivalent":0.5,"comment":"User added product to cart from product detail page.","contextId":"duka_pdp_context","setting":{"device":"web"}}"#,
            r#"{"timestamp":"2025-07-09T09:30:00Z","subscriber":"citizen_user_12345","assetId":"citizen_article_67890","interaction":"select","ratingEquivalent":0.25,"setting":{"device":"web"}}"#,
        ]
    );
}

#[tokio::test]
async fn actions_and_omitted_ratings_use_the_tenants_rating_profile() {
    let dir = std::env::temp_dir().join(format!("rating-map-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("map.toml");
    std::fs::write(&file, "[tenants]\nglobex = \"ecommerce\"\n").unwrap();
    let app = TestApp::spawn_with(|c| c.rating_map_file = file.display().to_string()).await;

    let mut watch = event("u");
    watch.as_object_mut().unwrap().remove("interaction");
    watch.as_object_mut().unwrap().remove("ratingEquivalent");
    watch["action"] = json!("watch");
    watch["progress"] = json!(0.95);
    let mut share = event("u");
    share["interaction"] = json!("share");
    share.as_object_mut().unwrap().remove("ratingEquivalent");
    let response = app.post("/api/v1/logs", &json!([watch, share])).await;
    assert_eq!(response.status(), 202);

    // globex rates with ecommerce: `review` exists there, not in video.
    let mut review = event("u");
    review.as_object_mut().unwrap().remove("interaction");
    review.as_object_mut().unwrap().remove("ratingEquivalent");
    review["action"] = json!("review");
    review["stars"] = json!(2);
    let globex = [
        ("content-type", "application/json"),
        ("x-api-key", crate::helpers::GLOBEX_KEY),
    ];
    let response = app
        .post_raw("/api/v1/log", serde_json::to_vec(&review).unwrap(), &globex)
        .await;
    assert_eq!(response.status(), 202);
    let response = app.post("/api/v1/log", &review).await;
    assert_eq!(
        response.status(),
        400,
        "acme uses video, which has no review action"
    );

    let chunks = app.published().await;
    let got: Vec<(String, &str, f64)> = chunks
        .iter()
        .flat_map(|c| {
            c.events.iter().map(move |e| {
                (
                    c.tenant.clone(),
                    e.interaction.interaction.as_str(),
                    e.interaction.rating_equivalent,
                )
            })
        })
        .collect();
    assert_eq!(
        got,
        [
            ("acme".to_owned(), "play_complete", 0.5),
            ("acme".to_owned(), "share", 0.75),
            ("globex".to_owned(), "rate", -1.0),
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Sends `body` to `path` from a task of its own; the task answers the status.
fn send_later(app: &TestApp, path: &str, body: Value) -> tokio::task::JoinHandle<u16> {
    let request = app
        .client
        .post(app.url(path))
        .header("content-type", "application/json")
        .header("x-api-key", crate::helpers::ACME_KEY)
        .json(&body);
    tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
}

/// The number of events of each published chunk, in chunk order. A chunk may be published
/// more than once (at least once: the relay re-publishes a chunk whose confirmation was not
/// marked in time — here, while the test holds the database connection), so each counts once.
async fn chunk_sizes(app: &TestApp) -> Vec<usize> {
    let mut chunks = app.published().await;
    chunks.dedup_by_key(|c| c.chunk_id);
    chunks.iter().map(|c| c.events.len()).collect()
}

#[tokio::test]
async fn requests_that_arrive_while_a_write_is_in_flight_share_the_next_write() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let app = TestApp::spawn_with(|c| database_through(c, &proxy)).await;
    app.wait_for_broker().await;
    assert_eq!(app.post("/api/v1/log", &event("warm")).await.status(), 202);

    // With the database idle a request is written at once: no linger.
    proxy.pause();
    let first = send_later(&app, "/api/v1/log", event("first"));
    app.wait_for_writes(1.0, 0.0).await;
    // While it is in flight, 200 single events gather; a group smaller than
    // WRITE_BATCH_EVENTS does not start a second write.
    let sends: Vec<_> = (0..200)
        .map(|i| send_later(&app, "/api/v1/log", event(&format!("u{i}"))))
        .collect();
    app.wait_for_writes(1.0, 200.0).await;
    proxy.resume();

    assert_eq!(first.await.unwrap(), 202);
    for send in sends {
        assert_eq!(send.await.unwrap(), 202);
    }
    assert_eq!(app.store.pending_event_count().await.unwrap(), 202);
    assert_eq!(
        chunk_sizes(&app).await,
        [1, 1, 200],
        "one write each, then one for all"
    );
}

#[tokio::test]
async fn a_full_group_starts_another_write_beside_the_one_in_flight_up_to_writers() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let app = TestApp::spawn_with(|c| {
        database_through(c, &proxy);
        c.write_batch_events = 10;
        c.writers = 2;
    })
    .await;
    app.wait_for_broker().await;
    assert_eq!(app.post("/api/v1/log", &event("warm")).await.status(), 202);
    let batch = |n: usize| Value::Array((0..n).map(|i| event(&format!("b{i}"))).collect());

    proxy.pause();
    let sends = vec![send_later(&app, "/api/v1/log", event("first"))];
    app.wait_for_writes(1.0, 0.0).await;
    let mut sends = sends;
    sends.push(send_later(&app, "/api/v1/logs", batch(10)));
    app.wait_for_writes(2.0, 0.0).await;
    // Full again, but WRITERS are all busy: it waits.
    sends.push(send_later(&app, "/api/v1/logs", batch(10)));
    sends.push(send_later(&app, "/api/v1/logs", batch(3)));
    app.wait_for_writes(2.0, 13.0).await;
    proxy.resume();

    for send in sends {
        assert_eq!(send.await.unwrap(), 202);
    }
    // Writes in flight together commit in either order: compare the groups, not their order.
    let mut sizes = chunk_sizes(&app).await;
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 1, 3, 10, 10], "each batch of 10 its own write");
}
