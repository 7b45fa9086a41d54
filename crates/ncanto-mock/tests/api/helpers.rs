//! Starting a mock per test, canonical events, and small HTTP helpers.

use ncanto_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

/// A running mock and a client for it.
pub(crate) struct TestMock {
    pub(crate) mock: MockServer,
    pub(crate) client: reqwest::Client,
}

impl TestMock {
    /// A mock with the default test configuration.
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A mock on a free loopback port, after `adjust` changes its configuration.
    pub(crate) async fn spawn_with(adjust: impl FnOnce(&mut MockConfig)) -> Self {
        let mut config = MockConfig {
            workers: 1,
            ..MockConfig::default()
        };
        adjust(&mut config);
        let mock = MockServer::start(config).await.unwrap();
        Self {
            mock,
            client: client(),
        }
    }

    /// `path` on the main address.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.mock.url())
    }

    /// POSTs `body` as JSON to /interactions.
    pub(crate) async fn post(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url("/interactions"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs /stats over HTTP.
    pub(crate) async fn http_stats(&self) -> Value {
        let response = self.client.get(self.url("/stats")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// A client that keeps no idle connections: outages close listeners under it.
pub(crate) fn client() -> reqwest::Client {
    // reqwest's TLS needs a process-wide crypto provider (see interaction-runtime).
    interaction_runtime::install_tls_provider();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// A canonical event, distinct per `n`.
pub(crate) fn event(n: usize) -> Value {
    json!({
        "timestamp": "2025-07-09T10:15:00Z",
        "subscriber": format!("user_{n}"),
        "assetId": format!("asset_{n}"),
        "interaction": "play_complete",
        "ratingEquivalent": 0.5,
        "comment": "User watched 90% of the episode.",
        "contextId": "player_context",
        "setting": {"device": "android_app"}
    })
}

/// `event(n)` with `field` set to `value` (`setting.device` reaches into the setting).
pub(crate) fn event_with(n: usize, field: &str, value: Value) -> Value {
    let mut event = event(n);
    match field.split_once('.') {
        Some((outer, inner)) => event[outer][inner] = value,
        None => event[field] = value,
    }
    event
}

/// The indexes listed in a 400's `invalid`.
pub(crate) fn invalid_indexes(body: &Value) -> Vec<u64> {
    body["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|invalid| invalid["index"].as_u64().unwrap())
        .collect()
}
