//! Protocol hygiene: keys, content types, sizes, compression, rate limits, CORS, unknown routes.

use std::io::Write;

use serde_json::{Value, json};

use crate::helpers::{ACME_KEY, TestApp};
use crate::ingest::event;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2_encoder();
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn flate2_encoder() -> flate2::write::GzEncoder<Vec<u8>> {
    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default())
}

async fn error_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "error", "{body}");
    (status, body)
}

#[tokio::test]
async fn requests_without_a_valid_key_get_401_and_store_nothing() {
    let app = TestApp::spawn().await;
    let body = serde_json::to_vec(&event("u")).unwrap();
    for headers in [
        vec![("content-type", "application/json")],
        vec![("content-type", "application/json"), ("x-api-key", "wrong")],
        vec![
            ("content-type", "application/json"),
            ("authorization", "Bearer wrong"),
        ],
        vec![
            ("content-type", "application/json"),
            ("authorization", &format!("Basic {ACME_KEY}")),
        ],
    ] {
        let response = app.post_raw("/api/v1/log", body.clone(), &headers).await;
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let (status, body) = error_of(response).await;
        assert_eq!(status, 401, "{headers:?}");
        assert!(body["message"].as_str().unwrap().contains("X-API-Key"));
    }
    let bearer = format!("Bearer {ACME_KEY}");
    let response = app
        .post_raw(
            "/api/v1/log",
            body,
            &[
                ("content-type", "application/json"),
                ("authorization", &bearer),
            ],
        )
        .await;
    assert_eq!(response.status(), 202, "Bearer works too");
    assert_eq!(app.store.pending_event_count().await.unwrap(), 1);
}

#[tokio::test]
async fn only_json_is_accepted_415_otherwise() {
    let app = TestApp::spawn().await;
    let body = serde_json::to_vec(&event("u")).unwrap();
    for (content_type, ok) in [
        (Some("application/json"), true),
        (Some("application/json; charset=utf-8"), true),
        (Some("Application/JSON"), true),
        (Some("application/vnd.events+json"), true),
        (Some("text/plain"), false),
        (Some("application/x-www-form-urlencoded"), false),
        (None, false),
    ] {
        let mut headers = vec![("x-api-key", ACME_KEY)];
        if let Some(ct) = content_type {
            headers.push(("content-type", ct));
        }
        let response = app.post_raw("/api/v1/log", body.clone(), &headers).await;
        if ok {
            assert_eq!(response.status(), 202, "{content_type:?}");
        } else {
            let (status, body) = error_of(response).await;
            assert_eq!(status, 415, "{content_type:?}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("application/json")
            );
        }
    }
}

/// What a browser sends while a page unloads (`sendBeacon`, `fetch` with `keepalive`): a
/// simple request, text/plain and no custom header, so the key is in the body or the query.
#[tokio::test]
async fn the_beacon_form_takes_the_key_from_the_body_or_the_query_on_the_batch_endpoint() {
    let app = TestApp::spawn().await;
    let keyed = |id: &str| {
        let mut e = event("u");
        e["eventId"] = json!(id);
        e
    };
    let beacon = |body: Value, path: &'static str| {
        let app = &app;
        async move {
            app.post_raw(
                path,
                body.to_string().into_bytes(),
                &[("content-type", "text/plain;charset=UTF-8")],
            )
            .await
        }
    };
    // The key beside the batch; sentAt works as in the JSON form.
    let sent_at = ingest_api_now_rfc3339();
    let response = beacon(
        json!({"apiKey": ACME_KEY, "sentAt": sent_at, "batch": [keyed("b1"), keyed("b2")]}),
        "/api/v1/logs",
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["count"], 2, "{body}");
    assert!(
        !body.to_string().contains(ACME_KEY),
        "the key is never echoed: {body}"
    );
    // The key in the query, the body a bare envelope; a repeat is a duplicate as usual.
    let response = beacon(
        json!({"batch": [keyed("b2"), keyed("b3")]}),
        "/api/v1/logs?apiKey=acme-key-0123456789",
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["count"].as_u64(), body["duplicates"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(app.store.pending_event_count().await.unwrap(), 3);
    // No key, a wrong key: 401, nothing stored.
    for (body, path) in [
        (json!({"batch": [keyed("b4")]}), "/api/v1/logs"),
        (
            json!({"apiKey": "nope", "batch": [keyed("b4")]}),
            "/api/v1/logs",
        ),
        (json!({"batch": [keyed("b4")]}), "/api/v1/logs?apiKey=nope"),
        (json!("not even an object"), "/api/v1/logs"),
    ] {
        let (status, error) = error_of(beacon(body.clone(), path).await).await;
        assert_eq!(status, 401, "{body} {path}: {error}");
    }
    // Only the batch endpoint takes the form; in a JSON body the key is an unknown field.
    let (status, _) = error_of(
        beacon(
            json!({"apiKey": ACME_KEY, "batch": [keyed("b5")]}),
            "/api/v1/log",
        )
        .await,
    )
    .await;
    assert_eq!(status, 415);
    let response = app
        .post_raw(
            "/api/v1/logs",
            json!({"apiKey": ACME_KEY, "batch": [keyed("b6")]})
                .to_string()
                .into_bytes(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", ACME_KEY),
            ],
        )
        .await;
    let (status, error) = error_of(response).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("apiKey"),
        "{error}"
    );
    assert_eq!(app.store.pending_event_count().await.unwrap(), 3);
}

fn ingest_api_now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test]
async fn gzip_bodies_are_accepted_within_a_decompressed_cap() {
    let app = TestApp::spawn_with(|c| c.decompressed_limit_bytes = 64 * 1024).await;
    let batch = serde_json::to_vec(&json!([event("a"), event("b")])).unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("x-api-key", ACME_KEY),
        ("content-encoding", "gzip"),
    ];
    let response = app.post_raw("/api/v1/logs", gzip(&batch), &headers).await;
    assert_eq!(response.status(), 202);
    assert_eq!(response.json::<Value>().await.unwrap()["count"], 2);

    // A gzip bomb: 1 KiB on the wire, far over the cap once inflated.
    let bomb = gzip(&vec![b' '; 8 * 1024 * 1024]);
    assert!(bomb.len() < 16 * 1024);
    let (status, body) = error_of(app.post_raw("/api/v1/logs", bomb, &headers).await).await;
    assert_eq!(status, 413);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("once decompressed")
    );

    let (status, body) = error_of(
        app.post_raw("/api/v1/logs", b"not gzip".to_vec(), &headers)
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("not valid gzip"));

    let brotli = [
        ("content-type", "application/json"),
        ("x-api-key", ACME_KEY),
        ("content-encoding", "br"),
    ];
    let (status, _) = error_of(app.post_raw("/api/v1/logs", batch, &brotli).await).await;
    assert_eq!(status, 415);
}

#[tokio::test]
async fn oversized_bodies_and_batches_get_413() {
    let app = TestApp::spawn_with(|c| {
        c.body_limit_bytes = 4096;
        c.max_batch_events = 5;
    })
    .await;
    let big = serde_json::to_vec(&json!([{"comment": "x".repeat(5000)}])).unwrap();
    let (status, body) = error_of(
        app.post_raw(
            "/api/v1/logs",
            big,
            &[
                ("content-type", "application/json"),
                ("x-api-key", ACME_KEY),
            ],
        )
        .await,
    )
    .await;
    assert_eq!(status, 413);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("larger than 4096 bytes")
    );

    let six: Vec<Value> = (0..6).map(|i| event(&format!("u{i}"))).collect();
    let (status, body) = error_of(app.post("/api/v1/logs", &json!(six)).await).await;
    assert_eq!(status, 413);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("more than 5 events")
    );
    assert_eq!(app.store.pending_event_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_key_is_limited_by_events_not_requests_and_a_batch_over_it_stores_nothing() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit_events_per_sec = 1;
        c.rate_limit_events_burst = 10;
    })
    .await;
    // 7 events in one request: 7 of the 10.
    let seven: Vec<_> = (0..7).map(|i| event(&format!("a{i}"))).collect();
    assert_eq!(app.post("/api/v1/logs", &json!(seven)).await.status(), 202);
    // 5 more in one request: over the limit mid-batch, refused whole.
    let five: Vec<_> = (0..5).map(|i| event(&format!("b{i}"))).collect();
    let limited = app.post("/api/v1/logs", &json!(five)).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry_after), "{retry_after}");
    let (status, body) = error_of(limited).await;
    assert_eq!(status, 429);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("nothing of these 5 events was stored"),
        "{message}"
    );
    assert_eq!(
        app.store.pending_event_count().await.unwrap(),
        7,
        "nothing half-stored"
    );
    // 3 still fit; a single request above the whole burst can never pass: 413, not 429.
    let three: Vec<_> = (0..3).map(|i| event(&format!("c{i}"))).collect();
    assert_eq!(app.post("/api/v1/logs", &json!(three)).await.status(), 202);
    let eleven: Vec<_> = (0..11).map(|i| event(&format!("d{i}"))).collect();
    let (status, body) = error_of(app.post("/api/v1/logs", &json!(eleven)).await).await;
    assert_eq!(status, 413, "{body}");
    // Another key has its own budget.
    let other = app
        .post_raw(
            "/api/v1/log",
            serde_json::to_vec(&event("u")).unwrap(),
            &[
                ("content-type", "application/json"),
                ("x-api-key", crate::helpers::GLOBEX_KEY),
            ],
        )
        .await;
    assert_eq!(other.status(), 202);
    assert_eq!(app.store.pending_event_count().await.unwrap(), 11);
}

#[tokio::test]
async fn one_address_is_limited_by_requests_before_its_key_is_even_checked() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limit_address_rps = 1;
        c.rate_limit_address_burst = 2;
        c.trusted_proxy_hops = 1;
    })
    .await;
    let from = |address: &'static str, key: &'static str| {
        let request = app
            .client
            .post(app.url("/api/v1/log"))
            .header("content-type", "application/json")
            .header("x-api-key", key)
            .header("x-forwarded-for", format!("6.6.6.6, {address}"))
            .json(&event("u"));
        async move { request.send().await.unwrap() }
    };
    let acme = crate::helpers::ACME_KEY;
    assert_eq!(from("1.1.1.1", acme).await.status(), 202);
    assert_eq!(from("1.1.1.1", "wrong-key").await.status(), 401);
    let limited = from("1.1.1.1", acme).await;
    assert!(limited.headers().contains_key("retry-after"));
    let (status, body) = error_of(limited).await;
    assert_eq!(status, 429);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many requests from this address"),
        "{body}"
    );
    // Unknown keys count too, and another address (the same key) is not affected.
    assert_eq!(from("2.2.2.2", acme).await.status(), 202);
    assert_eq!(app.store.pending_event_count().await.unwrap(), 2);
}

#[tokio::test]
async fn browsers_from_allowed_origins_pass_cors_preflight() {
    let app = TestApp::spawn().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/logs"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-api-key")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert!(allowed.status().is_success());
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    // Cached by the browser for two hours (Chromium's most): not one OPTIONS per batch.
    assert_eq!(allowed.headers()["access-control-max-age"], "7200");
    let refused = preflight("https://evil.example.net").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    // The answer to the request itself may be read by the page, Retry-After included (the
    // SDK waits as told on 429 and 503).
    let answer = app
        .client
        .post(app.url("/api/v1/logs"))
        .header("origin", "https://app.example.com")
        .header("content-type", "application/json")
        .header("x-api-key", ACME_KEY)
        .body(json!([event("u")]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(
        answer.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_refused_in_json() {
    let app = TestApp::spawn().await;
    let response = app.client.get(app.url("/nope")).send().await.unwrap();
    let (status, body) = error_of(response).await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().contains("/docs"));
}

/// Found by schemathesis: another method on a known path was a 404, as if the path did not
/// exist; it is a 405 with `Allow`, in the one error shape.
#[tokio::test]
async fn other_methods_on_known_paths_get_405_with_allow() {
    let app = TestApp::spawn().await;
    for (method, path, allowed) in [
        (reqwest::Method::GET, "/api/v1/logs", "POST"),
        (reqwest::Method::PUT, "/api/v1/log", "POST"),
        (reqwest::Method::DELETE, "/interact", "POST"),
        (reqwest::Method::GET, "/interact/batch", "POST"),
        (reqwest::Method::TRACE, "/health", "GET"),
        (reqwest::Method::POST, "/livez", "GET"),
        (reqwest::Method::PATCH, "/readyz", "GET"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .header("x-api-key", ACME_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allowed, "{method} {path}");
        let (status, body) = error_of(response).await;
        assert_eq!(status, 405, "{method} {path}");
        assert!(body["message"].as_str().unwrap().contains(allowed));
    }
}
