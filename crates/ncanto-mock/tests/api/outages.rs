//! Full outages: error (503), hang (no answer), refuse (listener closed, then re-opened on the
//! same port). The admin routes keep answering through each.

use std::time::{Duration, Instant};

use ncanto_mock::{Faults, Outage};
use serde_json::Value;

use crate::helpers::{TestMock, client, event};

fn outage(outage: Outage) -> Faults {
    Faults {
        outage: Some(outage),
        ..Faults::default()
    }
}

/// Whether a fresh connection to `url` is refused. A connection the closing listener still
/// accepted and then dropped (reset, incomplete answer) is not a refusal yet: callers poll.
async fn refused(url: &str) -> bool {
    match client().get(format!("{url}/health")).send().await {
        Ok(_) => false,
        Err(e) => e.is_connect(),
    }
}

#[tokio::test]
async fn an_error_outage_answers_503_while_the_admin_routes_still_answer() {
    let app = TestMock::spawn().await;
    app.mock.set_faults(outage(Outage::Error)).await;
    assert_eq!(app.post(&event(1)).await.status(), 503);
    assert_eq!(app.http_stats().await["failed_requests"], 1);
    let health = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    app.mock.set_faults(Faults::default()).await;
    assert_eq!(app.post(&event(1)).await.status(), 200);
}

#[tokio::test]
async fn a_hang_outage_never_answers_until_cleared() {
    let app = TestMock::spawn_with(|c| c.faults.outage = Some(Outage::Hang)).await;
    interaction_runtime::install_tls_provider();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let error = impatient
        .post(app.url("/interactions"))
        .json(&event(1))
        .send()
        .await
        .unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    // Admin routes answer during the hang.
    assert_eq!(app.http_stats().await["requests"], 1);

    // A request hanging when the outage clears is let go with a 503, never recorded.
    let patient = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/interactions");
        async move {
            client
                .post(url)
                .json(&event(2))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!patient.is_finished());
    app.mock.set_faults(Faults::default()).await;
    assert_eq!(patient.await.unwrap(), 503);
    let stats = app.mock.stats();
    assert_eq!(stats.received, 0);
    // The timed-out request counts too, unless its disconnect cancelled it first.
    assert!((1..=2).contains(&stats.failed_requests), "{stats:?}");
    assert_eq!(app.post(&event(3)).await.status(), 200);
}

#[tokio::test]
async fn stopping_releases_hanging_requests() {
    let app = TestMock::spawn_with(|c| c.faults.outage = Some(Outage::Hang)).await;
    let hanging = tokio::spawn({
        let client = app.client.clone();
        let url = app.url("/interactions");
        async move {
            client
                .post(url)
                .json(&event(1))
                .send()
                .await
                .map(|r| r.status())
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    app.mock.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    // Answered 503 or cut off by the shutdown; either way, not hanging.
    if let Ok(status) = hanging.await.unwrap() {
        assert_eq!(status, 503);
    }
}

#[tokio::test]
async fn a_refuse_outage_closes_the_port_and_clearing_it_reopens_the_same_port() {
    let app = TestMock::spawn().await;
    let port = app.mock.port();
    assert_eq!(app.post(&event(1)).await.status(), 200);

    app.mock.set_faults(outage(Outage::Refuse)).await;
    assert!(refused(&app.mock.url()).await);
    assert_eq!(app.mock.faults().outage, Some(Outage::Refuse));

    app.mock.set_faults(Faults::default()).await;
    assert_eq!(app.mock.port(), port);
    assert!(!refused(&app.mock.url()).await);
    let response = client()
        .post(app.url("/interactions"))
        .json(&event(2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.mock.stats().received, 2, "stats survive the outage");
}

#[tokio::test]
async fn a_mock_can_start_refusing_and_be_revived_through_its_admin_address() {
    let app = TestMock::spawn_with(|c| {
        c.faults.outage = Some(Outage::Refuse);
        c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    assert!(refused(&app.mock.url()).await);
    let admin = app.mock.admin_url().unwrap();
    assert_ne!(app.mock.admin_port(), Some(app.mock.port()));

    let faults: Value = app
        .client
        .get(format!("{admin}/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["outage"], "refuse");
    // The admin address serves no fake Ncanto.
    let not_here = app
        .client
        .post(format!("{admin}/interactions"))
        .json(&event(1))
        .send()
        .await
        .unwrap();
    assert_eq!(not_here.status(), 404);

    // Clearing over HTTP answers once the main port is open again.
    let cleared = app
        .client
        .delete(format!("{admin}/faults"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);
    assert_eq!(app.post(&event(1)).await.status(), 200);
}

#[tokio::test]
async fn refuse_set_over_http_on_the_main_port_is_answered_then_closes_it() {
    let app = TestMock::spawn_with(|c| c.admin_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let response = app
        .client
        .post(app.url("/faults"))
        .json(&outage(Outage::Refuse))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The listener closes just after the answer went out.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !refused(&app.mock.url()).await {
        assert!(Instant::now() < deadline, "the main port never closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let admin = app.mock.admin_url().unwrap();
    let stats = app
        .client
        .get(format!("{admin}/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);

    app.mock.set_faults(Faults::default()).await;
    assert_eq!(app.post(&event(1)).await.status(), 200);
}
