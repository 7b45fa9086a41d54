//! The mock over https: a client trusting the test CA gets through; one that does not, or a
//! plain-http client, does not; a `Refuse` outage re-opens the port with https again.

use std::path::Path;
use std::sync::Arc;

use interaction_testing::tls::TestCa;
use ncanto_mock::{Faults, MockConfig, MockServer, Outage, TlsFiles};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;

use crate::helpers::{TestMock, client, event};

/// A client trusting only `ca_file` (nothing when `None`), as the forwarder is configured.
fn https_client(ca_file: Option<&Path>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca_file) = ca_file {
        for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

async fn https_mock(ca: &TestCa) -> TestMock {
    let cert = ca.server_cert("ncanto", &["localhost", "127.0.0.1"]);
    TestMock::spawn_with(|c| {
        c.tls = Some(TlsFiles {
            cert_file: cert.cert_file,
            key_file: cert.key_file,
        })
    })
    .await
}

#[tokio::test]
async fn with_a_certificate_and_key_the_mock_serves_https_to_clients_trusting_its_ca() {
    let ca = TestCa::new("ncanto-mock test CA");
    let app = https_mock(&ca).await;
    let url = app.mock.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let trusting = https_client(Some(&ca.ca_file));
    let by_name = format!("https://localhost:{}/interactions", app.mock.port());
    let response = trusting
        .post(&by_name)
        .json(&event(1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = trusting
        .post(format!("{url}/interactions"))
        .json(&event(2))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.mock.stats().unique, 2);

    let untrusting = https_client(None);
    let error = untrusting
        .post(&by_name)
        .json(&event(3))
        .send()
        .await
        .unwrap_err();
    assert!(format!("{error:?}").contains("UnknownIssuer"), "{error:?}");

    let plain = format!("http://127.0.0.1:{}/interactions", app.mock.port());
    assert!(client().post(plain).json(&event(4)).send().await.is_err());
    assert_eq!(app.mock.stats().unique, 2, "only the trusted calls arrived");
}

#[tokio::test]
async fn after_a_refuse_outage_the_port_serves_https_again() {
    let ca = TestCa::new("ncanto-mock test CA");
    let app = https_mock(&ca).await;
    let trusting = https_client(Some(&ca.ca_file));
    let url = format!("{}/interactions", app.mock.url());
    app.mock
        .set_faults(Faults {
            outage: Some(Outage::Refuse),
            ..Faults::default()
        })
        .await;
    assert!(trusting.post(&url).json(&event(1)).send().await.is_err());
    app.mock.set_faults(Faults::default()).await;
    let response = trusting.post(&url).json(&event(1)).send().await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn unusable_tls_files_fail_start_up_naming_the_file() {
    let ca = TestCa::new("ncanto-mock test CA");
    let cert = ca.server_cert("ncanto", &["localhost"]);
    let missing = ca.dir().join("missing.pem");
    let table = [
        (
            missing.clone(),
            cert.key_file.clone(),
            "NCANTO_MOCK_TLS_CERT",
        ),
        (
            cert.cert_file.clone(),
            missing.clone(),
            "NCANTO_MOCK_TLS_KEY",
        ),
        // A key where the certificate should be: no certificate in it.
        (
            cert.key_file.clone(),
            cert.key_file.clone(),
            "holds no PEM certificate",
        ),
    ];
    for (cert_file, key_file, expected) in table {
        let config = MockConfig {
            tls: Some(TlsFiles {
                cert_file,
                key_file,
            }),
            ..MockConfig::default()
        };
        let error = match MockServer::start(config).await {
            Ok(_) => panic!("started with {expected}"),
            Err(error) => format!("{error:#}"),
        };
        assert!(error.contains(expected), "{error}");
    }
}
