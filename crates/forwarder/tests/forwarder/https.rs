//! Ncanto over https: the forwarder against ncanto-mock serving a certificate of a private CA,
//! trusted through NCANTO_CA_FILE — or not, when certificate failures must be retried (never
//! parked) and named as such.

use std::time::Duration;

use interaction_store::ChunkState;
use interaction_testing::tls::TestCa;
use ncanto_mock::{MockConfig, TlsFiles};

use crate::harness::{Harness, event};

/// A harness whose mock serves https with a certificate of `ca` for `names`, the forwarder
/// calling it as `https://localhost:PORT`, trusting `ca` when `trust` is set.
async fn https_harness(ca: &TestCa, names: &[&str], trust: bool) -> Harness {
    let cert = ca.server_cert("ncanto", names);
    let mock = MockConfig {
        tls: Some(TlsFiles {
            cert_file: cert.cert_file,
            key_file: cert.key_file,
        }),
        ..MockConfig::default()
    };
    let mut harness = Harness::with_mock(mock, |c| {
        // Straight to the retry queue: the tests look for the message there.
        c.inline_retries = 0;
        c.ncanto_ca_file = trust.then(|| ca.ca_file.clone());
    })
    .await;
    // By name, as production does: the host name is verified against the certificate.
    harness.config.ncanto_api_url = format!("https://localhost:{}", harness.mock.port());
    harness
}

/// Waits for the chunk's message in the first retry queue and returns its last error.
async fn retried_because(harness: &Harness) -> String {
    let retry_queue = harness.topology.retry_queues()[0].0.clone();
    harness
        .wait_for(
            "the chunk to wait in the 5 s retry queue",
            Duration::from_secs(15),
            async || (harness.queue_length(&retry_queue).await == 1).then_some(()),
        )
        .await;
    harness
        .peek_last_error(&retry_queue)
        .await
        .expect("the message is still there")
}

/// Nothing was refused for good: no failure records, nothing parked, the chunk not failed.
async fn assert_nothing_parked(harness: &Harness, chunk: i64) {
    assert!(harness.store.failures(chunk).await.unwrap().is_empty());
    assert_eq!(
        harness.queue_length(&harness.topology.parked_queue()).await,
        0
    );
    assert_ne!(
        harness.store.chunk_state(chunk).await.unwrap(),
        Some(ChunkState::Failed)
    );
}

async fn wait_forwarded(harness: &Harness, chunk: i64) {
    harness
        .wait_for("forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
}

#[tokio::test]
async fn with_the_private_ca_in_ncanto_ca_file_every_event_arrives_over_https() {
    let ca = TestCa::new("Ncanto private CA");
    let harness = https_harness(&ca, &["localhost", "127.0.0.1"], true).await;
    let forwarder = harness.start().await;
    let mut chunks = Vec::new();
    for c in 0..3 {
        let events = (0..10).map(|n| event(c * 100 + n, "tls")).collect();
        chunks.push(harness.submit("acme", events).await);
    }
    harness.wait_for_unique(30, Duration::from_secs(20)).await;
    for chunk in chunks {
        wait_forwarded(&harness, chunk).await;
    }
    assert_eq!(harness.mock.stats().duplicates, 0);
    forwarder.stop().await;
}

#[tokio::test]
async fn an_untrusted_certificate_is_retried_as_a_certificate_problem_and_arrives_once_trusted() {
    let ca = TestCa::new("Ncanto private CA");
    let mut harness = https_harness(&ca, &["localhost", "127.0.0.1"], false).await;
    let forwarder = harness.start().await;
    let chunk = harness
        .submit("acme", (0..5).map(|n| event(n, "tls")).collect())
        .await;
    let reason = retried_because(&harness).await;
    assert!(
        reason.contains("TLS certificate not trusted") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    assert_eq!(harness.mock.stats().requests, 0, "no request got through");
    assert_nothing_parked(&harness, chunk).await;
    forwarder.stop().await;

    // The operator adds the CA: the waiting events arrive.
    harness.config.ncanto_ca_file = Some(ca.ca_file.clone());
    let forwarder = harness.start().await;
    // Within the 5 s queue's TTL, or the 30 s one's if the first forwarder took it again.
    harness.wait_for_unique(5, Duration::from_secs(60)).await;
    wait_forwarded(&harness, chunk).await;
    assert_nothing_parked(&harness, chunk).await;
    forwarder.stop().await;
}

#[tokio::test]
async fn a_certificate_for_another_host_name_is_refused_as_a_certificate_problem() {
    let ca = TestCa::new("Ncanto private CA");
    let harness = https_harness(&ca, &["other.example"], true).await;
    let forwarder = harness.start().await;
    let chunk = harness
        .submit("acme", (0..3).map(|n| event(n, "tls")).collect())
        .await;
    let reason = retried_because(&harness).await;
    assert!(
        reason.contains("TLS certificate not trusted")
            && reason.contains("not valid for name \"localhost\"")
            && reason.contains("other.example"),
        "{reason}"
    );
    assert_eq!(harness.mock.stats().requests, 0, "nothing was delivered");
    assert_nothing_parked(&harness, chunk).await;
    forwarder.stop().await;
}
