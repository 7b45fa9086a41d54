//! The Ncanto API client: `POST {NCANTO_API_URL}/interactions` with one canonical event or an
//! array of them, and the classification of every outcome into success, transient or permanent.
//!
//! Ncanto is reached over https in production. TLS is rustls with the ring provider (no C
//! build), trusting the system's CA store plus an optional PEM bundle (`NCANTO_CA_FILE`) for a
//! private PKI. Certificates and host names are always verified: there is deliberately no
//! switch to skip that. A certificate Ncanto presents that we cannot verify is a transient
//! failure (retried through the retry queues, never parked as refused): it is a problem of
//! configuration or of Ncanto's certificate rotation, not of the events.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use interaction_core::Interaction;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use secrecy::{ExposeSecret as _, SecretString};

use crate::retry::{SendError, is_retryable_status, parse_retry_after};

/// Most bytes of an error answer's body read from Ncanto: enough for a useful excerpt in the
/// failure record, and a bound on what a misbehaving server can make us buffer.
pub const ERROR_BODY_LIMIT: usize = 4 * 1024;

/// Most characters of Ncanto's error body quoted in a failure reason.
const ERROR_EXCERPT_CHARS: usize = 300;

/// The header naming the tenant whose events a call carries.
pub const TENANT_HEADER: &str = "x-tenant";

/// Client settings. `Debug` shows the API key redacted.
#[derive(Debug, Clone)]
pub struct NcantoConfig {
    /// Base URL, e.g. `https://api.ncanto.example`; `/interactions` is appended.
    pub url: String,
    /// The API key (empty: none sent); sent in `auth_header`.
    pub api_key: SecretString,
    /// Header carrying the key: with `authorization` the value is `Bearer <key>`, with any
    /// other header the bare key.
    pub auth_header: String,
    /// Per-call timeout (connect + response).
    pub timeout: Duration,
    /// Events per call; 1 sends a single object instead of an array.
    pub batch_size: usize,
    /// A PEM bundle of CA certificates trusted besides the system's store.
    pub ca_file: Option<PathBuf>,
}

/// A Ncanto client. Cheap to clone (connection pool shared).
#[derive(Clone)]
pub struct NcantoClient {
    http: reqwest::Client,
    endpoint: String,
    auth: Option<(HeaderName, HeaderValue)>,
    batch_size: usize,
}

impl NcantoClient {
    /// Builds the client; fails on a malformed header name or key, or on a CA file that
    /// cannot be read or holds no usable certificate (the message names the file).
    pub fn new(config: &NcantoConfig) -> anyhow::Result<Self> {
        let tls = client_tls(config.ca_file.as_deref())?;
        if tls.trusted == 0 && config.url.starts_with("https:") {
            log::warn!(
                "no CA certificate is trusted (empty system store, no NCANTO_CA_FILE): \
                 every https call to Ncanto will fail"
            );
        }
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.config)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .build()?;
        // The key leaves its secret wrapper only here, into a header value marked sensitive
        // (hidden from `Debug` of the request too).
        let key = config.api_key.expose_secret();
        let auth = if key.is_empty() {
            None
        } else {
            let name = HeaderName::from_bytes(config.auth_header.trim().as_bytes())?;
            let mut value = if name == reqwest::header::AUTHORIZATION {
                HeaderValue::from_str(&format!("Bearer {key}"))
            } else {
                HeaderValue::from_str(key)
            }
            .context("NCANTO_API_KEY is not a valid header value")?;
            value.set_sensitive(true);
            Some((name, value))
        };
        Ok(Self {
            http,
            endpoint: format!("{}/interactions", config.url.trim_end_matches('/')),
            auth,
            batch_size: config.batch_size.max(1),
        })
    }

    /// Events per call.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Sends one call with `events` (at most [`Self::batch_size`]).
    pub async fn send(&self, tenant: &str, events: &[&Interaction]) -> Result<(), SendError> {
        let body = if self.batch_size == 1 && events.len() == 1 {
            serde_json::to_vec(events[0])
        } else {
            serde_json::to_vec(events)
        }
        .map_err(|e| SendError::Permanent {
            reason: format!("cannot encode events: {e}"),
            status: 0,
        })?;
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(TENANT_HEADER, tenant)
            .body(body);
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        let started = Instant::now();
        let result = request.send().await;
        metrics::histogram!("forwarder_ncanto_seconds").record(started.elapsed().as_secs_f64());
        let response = match result {
            Ok(response) => response,
            Err(error) => {
                metrics::counter!("forwarder_ncanto_calls_total", "outcome" => "error")
                    .increment(1);
                return Err(SendError::Transient {
                    reason: describe(&error),
                    retry_after: None,
                });
            }
        };
        let status = response.status().as_u16();
        metrics::counter!("forwarder_ncanto_calls_total", "outcome" => status.to_string())
            .increment(1);
        if response.status().is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        // A short excerpt of Ncanto's answer makes failure records actionable.
        let body = read_capped(response, ERROR_BODY_LIMIT).await;
        let reason = format!("Ncanto answered {status}: {}", excerpt(&body));
        if is_retryable_status(status) {
            Err(SendError::Transient {
                reason,
                retry_after,
            })
        } else {
            Err(SendError::Permanent { reason, status })
        }
    }
}

/// Reads at most `limit` bytes of a body, then stops: the rest is never read (the connection
/// is dropped rather than drained). A body cut short by an error keeps what arrived.
async fn read_capped(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// The first characters of a body, as text, trimmed; `…` when there was more.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let mut excerpt: String = text.chars().take(ERROR_EXCERPT_CHARS).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    excerpt
}

/// The rustls configuration of the Ncanto client, and how many CA certificates it trusts.
pub struct ClientTls {
    /// Handed to reqwest as is.
    pub config: rustls::ClientConfig,
    /// CA certificates trusted: the system's plus the CA file's.
    pub trusted: usize,
}

/// TLS for calls to Ncanto: the ring provider, the system's CA store plus `ca_file` (a PEM
/// bundle), full verification of certificates and host names.
pub fn client_tls(ca_file: Option<&Path>) -> anyhow::Result<ClientTls> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        // One unreadable file in /etc/ssl/certs should not stop the service: the rest of
        // the store (and NCANTO_CA_FILE) may be all it needs.
        log::warn!("system CA store: {error}");
    }
    let (system, unusable) = roots.add_parsable_certificates(native.certs);
    log::debug!("system CA store: {system} certificates trusted, {unusable} unusable");
    if let Some(path) = ca_file {
        let added = add_ca_file(&mut roots, path)?;
        log::info!(
            "NCANTO_CA_FILE {}: {added} CA certificates trusted for Ncanto",
            path.display()
        );
    }
    let trusted = roots.len();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions for Ncanto")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The client speaks HTTP/1.1 only (reqwest is built without http2).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ClientTls { config, trusted })
}

/// Adds every certificate of a PEM bundle; fails, naming the file, when it cannot be read,
/// is not PEM, holds no certificate, or holds one that cannot be a trust anchor.
fn add_ca_file(roots: &mut rustls::RootCertStore, path: &Path) -> anyhow::Result<usize> {
    let name = path.display();
    let pem = std::fs::read(path).with_context(|| format!("reading NCANTO_CA_FILE {name}"))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("NCANTO_CA_FILE {name} is not a PEM bundle: {e}"))?;
    if certs.is_empty() {
        anyhow::bail!(
            "NCANTO_CA_FILE {name} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        );
    }
    let count = certs.len();
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            anyhow::anyhow!(
                "NCANTO_CA_FILE {name}: certificate {} of {count} is not a usable CA: {e}",
                index + 1
            )
        })?;
    }
    Ok(count)
}

/// The TLS failure somewhere in an error's chain, if any. rustls errors reach us wrapped in
/// `std::io::Error`s (nested: hyper wraps the TLS stream's), whose `source()` skips the
/// wrapped error, so each cause is also unwrapped through its `io::Error` layers.
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        let mut layer: &(dyn std::error::Error + 'static) = error;
        loop {
            if let Some(tls) = layer.downcast_ref::<rustls::Error>() {
                return Some(tls);
            }
            match layer
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
            {
                Some(inner) => layer = inner,
                None => break,
            }
        }
        cause = error.source();
    }
    None
}

/// The failure reason of a call that got no answer: what went wrong, for failure records
/// and logs (a TLS certificate problem says so in those words).
fn describe(error: &reqwest::Error) -> String {
    match tls_error(error) {
        Some(tls @ rustls::Error::InvalidCertificate(_)) => {
            // Unknown issuer, wrong host name, expired…: Ncanto's certificate or our trust
            // configuration must change; the events are fine and wait in the retry queues.
            format!("Ncanto TLS certificate not trusted: {tls}")
        }
        Some(tls) => format!("Ncanto TLS handshake failed: {tls}"),
        None => describe_chain(error),
    }
}

fn describe_chain(error: &reqwest::Error) -> String {
    // Without the URL: it is configuration, and the same for every call.
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut text = format!("Ncanto {kind}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    fn config(url: String) -> NcantoConfig {
        NcantoConfig {
            url,
            api_key: SecretString::from("k"),
            auth_header: "Authorization".into(),
            timeout: Duration::from_secs(30),
            batch_size: 1,
            ca_file: None,
        }
    }

    fn interaction() -> Interaction {
        serde_json::from_value(serde_json::json!({
            "timestamp": "2025-07-09T10:15:00Z",
            "subscriber": "user_1",
            "assetId": "asset_1",
            "interaction": "play",
            "ratingEquivalent": 0.5,
            "setting": {"device": "web"}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_huge_error_body_is_read_only_up_to_the_cap_and_the_call_returns_promptly() {
        // A server announcing 64 MiB of error body, sending 2 MiB of it, then going quiet:
        // a client reading the whole body would wait for the 30 s timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 64 * 1024];
            let _ = socket.read(&mut request).await.unwrap();
            let head = format!(
                "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                64 * 1024 * 1024
            );
            socket.write_all(head.as_bytes()).await.unwrap();
            let block = vec![b'x'; 64 * 1024];
            for _ in 0..32 {
                if socket.write_all(&block).await.is_err() {
                    return;
                }
            }
            // Hold the connection open until the client drops it.
            let _ = socket.read(&mut request).await;
        });
        let client = NcantoClient::new(&config(url)).unwrap();
        let started = Instant::now();
        let result = client.send("acme", &[&interaction()]).await;
        let elapsed = started.elapsed();
        let Err(SendError::Permanent { reason, status }) = result else {
            panic!("{result:?}");
        };
        assert_eq!(status, 400);
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        assert!(reason.starts_with("Ncanto answered 400: xxx"), "{reason}");
        assert!(
            reason.chars().count() < 400,
            "{} chars",
            reason.chars().count()
        );
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the client dropped the connection")
            .unwrap();
    }

    #[test]
    fn excerpts_are_short_trimmed_text() {
        assert_eq!(excerpt(b"  {\"error\":\"bad\"}\n"), "{\"error\":\"bad\"}");
        let long = excerpt(&[b'a'; ERROR_BODY_LIMIT]);
        assert_eq!(long.chars().count(), ERROR_EXCERPT_CHARS + 1);
        assert!(long.ends_with('…'));
        assert_eq!(excerpt(&[0xff, b'o', b'k']), "\u{fffd}ok");
    }

    #[test]
    fn a_ca_file_adds_its_certificates_to_the_system_store() {
        let ca = interaction_testing::tls::TestCa::new("ncanto test CA");
        let system = client_tls(None).unwrap().trusted;
        let with_ca = client_tls(Some(&ca.ca_file)).unwrap().trusted;
        assert_eq!(with_ca, system + 1);
    }

    #[test]
    fn an_unusable_ca_file_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let key_only = dir.path().join("key-only.pem");
        let ca = interaction_testing::tls::TestCa::new("ncanto test CA");
        let server = ca.server_cert("ncanto", &["localhost"]);
        std::fs::copy(&server.key_file, &key_only).unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let table = [
            (&missing, "reading NCANTO_CA_FILE"),
            (&empty, "holds no PEM certificate"),
            (&key_only, "holds no PEM certificate"),
            (&garbage, "NCANTO_CA_FILE"),
        ];
        for (path, expected) in table {
            let error = match client_tls(Some(path)) {
                Ok(_) => panic!("{} was accepted", path.display()),
                Err(error) => format!("{error:#}"),
            };
            assert!(error.contains(expected), "{error}");
            assert!(error.contains(&path.display().to_string()), "{error}");
        }
    }

    #[test]
    fn tls_errors_are_found_inside_io_errors() {
        let certificate =
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, certificate.clone());
        assert_eq!(tls_error(&io), Some(&certificate));
        // As hyper hands it over: the TLS stream's io::Error inside the connector's.
        let nested = std::io::Error::other(io);
        assert_eq!(tls_error(&nested), Some(&certificate));
        assert_eq!(tls_error(&certificate), Some(&certificate));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_error(&plain), None);
    }
}
