//! Health, readiness, metrics and docs; and behaviour with the database away.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{GLOBEX_KEY, Proxy, TestApp, database_through, test_config};
use crate::ingest::event;

#[tokio::test]
async fn health_reports_ok_with_the_spec_fields_when_everything_is_up() {
    let app = TestApp::spawn().await;
    app.wait_for_broker().await;
    assert_eq!(app.post("/api/v1/log", &event("u")).await.status(), 202);
    // /health answers from the background check (every 100 ms here): wait for one that
    // has seen the event.
    let health = app
        .health_when(200, |h| h["pending_interactions"] == 1)
        .await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["rabbitmq"], true);
    assert_eq!(health["database"], true);
    assert_eq!(
        health["pending_interactions"], 1,
        "stored, not yet forwarded"
    );
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["documentation"], "/docs");
    assert!(health["uptime"].is_u64());
    for probe in ["/livez", "/readyz"] {
        assert_eq!(
            app.client
                .get(app.url(probe))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{probe}"
        );
    }
}

#[tokio::test]
async fn with_the_database_away_ingest_answers_503_and_health_says_so() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let app = TestApp::spawn_with(|c| {
        database_through(c, &proxy);
        c.connections.database_timeout = Duration::from_millis(500);
    })
    .await;
    assert_eq!(
        app.post("/api/v1/log", &event("before")).await.status(),
        202
    );

    proxy.cut();
    // The first write may go out on the pooled connection the cut just broke: the statement
    // is prepared, so the write is its first message, and a write lost on a broken connection
    // may have been stored — the answer says so. The next finds no database at all.
    let response = app
        .post("/api/v1/logs", &serde_json::json!([event("during")]))
        .await;
    assert_eq!(response.status(), 503, "never 2xx without a commit");
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("database is unavailable") || message.contains("may or may not be"),
        "{body}"
    );
    let response = app
        .post("/api/v1/logs", &serde_json::json!([event("during")]))
        .await;
    assert_eq!(response.status(), 503, "never 2xx without a commit");
    assert_eq!(response.headers()["retry-after"], "5");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("database is unavailable"),
        "{body}"
    );

    let health = app.health_when(500, |h| h["database"] == false).await;
    assert_eq!(
        (
            health["database"].as_bool(),
            health["pending_interactions"].is_null()
        ),
        (Some(false), true)
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        app.client
            .get(app.url("/livez"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    proxy.restore();
    app.wait_until("ingest to recover", async || {
        (app.post("/api/v1/log", &event("after")).await.status() == 202).then_some(())
    })
    .await;
    // `app.store` talks to the database directly: exactly the acknowledged events are there.
    let stored = app.store.pending_event_count().await.unwrap();
    assert!(stored >= 2, "{stored}");
}

#[tokio::test]
async fn a_database_that_stops_answering_gets_503_with_retry_after_within_the_documented_bound() {
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let app = TestApp::spawn_with(|c| {
        database_through(c, &proxy);
        c.connections.database_timeout = Duration::from_millis(500);
        c.connections.database_statement_timeout = Duration::from_secs(1);
    })
    .await;
    assert_eq!(
        app.post("/api/v1/log", &event("before")).await.status(),
        202
    );

    // Connections accepted, bytes swallowed, nothing ever answered: no error to react to,
    // only the deadlines. The bound: DATABASE_TIMEOUT + DATABASE_STATEMENT_TIMEOUT + 3 s.
    proxy.hold();
    let bound = Duration::from_millis(500) + Duration::from_secs(1) + Duration::from_secs(3);
    for name in ["held-1", "held-2"] {
        let started = std::time::Instant::now();
        let response = app.post("/api/v1/log", &event(name)).await;
        let took = started.elapsed();
        assert_eq!(response.status(), 503, "{name}");
        assert!(response.headers().contains_key("retry-after"), "{name}");
        assert!(
            took <= bound + Duration::from_secs(1),
            "{name} took {took:?}"
        );
    }

    proxy.release();
    app.wait_until("ingest to recover", async || {
        (app.post("/api/v1/log", &event("after")).await.status() == 202).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_app_whose_database_is_unreachable_from_the_start_still_serves_503s() {
    let db_url = "postgres://postgres@127.0.0.1:1/nowhere";
    let mut config = test_config(db_url);
    config.connections.migrate_on_start = false;
    config.connections.database_timeout = Duration::from_millis(300);
    let store = config.connections.store().unwrap();
    let app = TestApp::start(config, store, None).await;
    let response = app.post("/api/v1/log", &event("u")).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 500);
}

#[tokio::test]
async fn metrics_count_requests_and_events() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post("/api/v1/logs", &serde_json::json!([event("a"), 5]))
            .await
            .status(),
        202
    );
    // The relay refreshes the backlog gauge by itself (every 200 ms in tests); nobody calls
    // /health here.
    let text = app
        .wait_until("the backlog gauge", async || {
            let text = app
                .client
                .get(format!("{}/metrics", app.admin))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("ingest_pending_interactions 1")
                .then_some(text)
        })
        .await;
    for name in [
        "http_requests_total",
        "ingest_events_stored_total",
        "ingest_events_invalid_total",
        "ingest_db_write_seconds",
        "ingest_write_batch_events",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(text.contains(r#"route="/api/v1/logs""#), "{text}");
}

#[tokio::test]
async fn accepted_events_are_counted_per_tenant_and_duplicates_are_not() {
    let app = TestApp::spawn().await;
    let mut once = event("u1");
    once["eventId"] = serde_json::json!("only-once");
    let batch = serde_json::json!([once, event("u2")]);
    assert_eq!(app.post("/api/v1/logs", &batch).await.status(), 202);
    // The same eventId again: a duplicate, stored (and counted) once.
    assert_eq!(app.post("/api/v1/log", &once).await.status(), 202);
    let response = app
        .post_raw(
            "/api/v1/log",
            serde_json::to_vec(&event("u3")).unwrap(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", GLOBEX_KEY),
            ],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        app.metric(r#"ingest_events_accepted_total{tenant="acme"}"#)
            .await,
        2.0
    );
    assert_eq!(
        app.metric(r#"ingest_events_accepted_total{tenant="globex"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn the_api_documents_itself_offline() {
    let app = TestApp::spawn().await;
    let openapi: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/v1/logs",
        "/api/v1/log",
        "/health",
        "/livez",
        "/readyz",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} undocumented");
        // Swagger UI lists operations by summary: it must say what the endpoint does, not
        // repeat its path (utoipa's default is the doc comment's first line).
        let operation = openapi["paths"][path]
            .as_object()
            .and_then(|methods| methods.values().next())
            .unwrap();
        let summary = operation["summary"].as_str().unwrap_or_default();
        assert!(
            summary.len() > 8 && !summary.contains('/') && !summary.contains('`'),
            "{path}: summary {summary:?}"
        );
    }
    assert_eq!(
        openapi["paths"]["/api/v1/log"]["post"]["summary"],
        "Send one event"
    );
    let batch = &openapi["components"]["schemas"]["BatchEnvelope"];
    assert_eq!(batch["additionalProperties"], false);
    assert_eq!(batch["required"], serde_json::json!(["batch"]));
    let input = &openapi["components"]["schemas"]["InteractionInput"];
    assert!(input.is_object());
    // What the normalizer refuses, the document says (schemathesis generated schema-valid
    // events with unknown fields, empty ids and non-date timestamps).
    assert_eq!(input["additionalProperties"], false);
    assert_eq!(
        openapi["components"]["schemas"]["SettingInput"]["additionalProperties"],
        false
    );
    assert_eq!(input["properties"]["timestamp"]["format"], "date-time");
    assert_eq!(input["properties"]["subscriber"]["minLength"], 1);
    assert_eq!(input["properties"]["assetId"]["minLength"], 1);
    // The documented enums are the code's own lists.
    let types = openapi["components"]["schemas"]["InteractionTypeDoc"]["enum"].clone();
    let expected: Vec<&str> = interaction_core::InteractionType::ALL
        .iter()
        .map(|t| t.as_str())
        .collect();
    assert_eq!(types, serde_json::json!(expected));
    assert_eq!(
        openapi["components"]["schemas"]["DeviceDoc"]["enum"],
        serde_json::json!(["web", "android_app", "ios_app"])
    );
    assert!(openapi["components"]["securitySchemes"]["api_key"].is_object());
    let page = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(page.status(), 200, "redirected to /docs/");
    let html = page.text().await.unwrap();
    assert!(html.to_lowercase().contains("swagger"), "{html}");
}

#[tokio::test]
async fn metrics_are_on_the_admin_listener_only_beside_the_probes() {
    let app = TestApp::spawn().await;
    let status = |url: String| {
        let request = app.client.get(url);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(
        status(app.url("/metrics")).await,
        404,
        "not on the public port"
    );
    for path in ["/metrics", "/livez", "/readyz"] {
        let admin = format!("{}{path}", app.admin);
        app.wait_until(&format!("admin {path}"), async || {
            (status(admin.clone()).await == 200).then_some(())
        })
        .await;
    }
    assert_eq!(status(format!("{}/health", app.admin)).await, 404);
    assert_eq!(status(format!("{}/api/v1/logs", app.admin)).await, 404);
}

#[tokio::test]
async fn a_flood_of_health_checks_never_reaches_the_database_nor_slows_ingest() {
    // The database behind a proxy that counts what is sent to it; nothing else polls it
    // during the test (relay, reconciler and health check every hour). One pooled connection.
    let proxy = Proxy::start("127.0.0.1:5432").await;
    let app = TestApp::spawn_with(|c| {
        database_through(c, &proxy);
        c.connections.database_max_connections = 1;
        c.health_interval = Duration::from_secs(3600);
        c.relay_interval = Duration::from_secs(3600);
        c.reconcile_interval = Duration::from_secs(3600);
    })
    .await;
    app.wait_for_broker().await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let floods: Vec<_> = (0..64)
        .map(|_| {
            let request = app.client.get(app.url("/health"));
            let (flooding, answered) = (flooding.clone(), answered.clone());
            tokio::spawn(async move {
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = request.try_clone().unwrap().send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Hundreds of answers; the database hears (almost) nothing. Per call, each would have
    // sent a query of ~100 bytes: 50,000 bytes and more.
    let before = proxy.bytes_to_service();
    let counted = answered.load(std::sync::atomic::Ordering::Relaxed);
    app.wait_until("the flood to be under way", async || {
        (answered.load(std::sync::atomic::Ordering::Relaxed) >= counted + 500).then_some(())
    })
    .await;
    let sent = proxy.bytes_to_service() - before;
    assert!(
        sent < 2_000,
        "{sent} bytes sent to the database during 500 health checks"
    );
    // Ingest while the flood goes on: every write gets the one connection and is stored.
    for i in 0..50 {
        let status = app
            .post("/api/v1/log", &event(&format!("u{i}")))
            .await
            .status();
        assert_eq!(status, 202, "write {i} during the flood");
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    for flood in floods {
        flood.await.unwrap();
    }
    assert_eq!(app.store.pending_event_count().await.unwrap(), 50);
}
