//! Opening PostgreSQL connections the way libpq does: the `sslmode`, `sslrootcert`, `sslcert`
//! and `sslkey` parameters of `DATABASE_URL` mean what they mean to `psql`, so an SRE can take
//! the URL a managed PostgreSQL hands out and use it unchanged.
//!
//! tokio-postgres understands only `sslmode=disable|prefer|require` and no certificate
//! parameters, so this module takes those parameters out of the URL, gives the rest to
//! tokio-postgres, and brings its own TLS (rustls with ring: no OpenSSL in the images):
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `prefer` (libpq's default) | if the server offers TLS | no |
//! | `require` | yes | no; with `sslrootcert`, as `verify-ca` (libpq does the same) |
//! | `verify-ca` | yes | chain to `sslrootcert`, any host name |
//! | `verify-full` | yes | chain to `sslrootcert`, and the host name |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the operating system's
//! roots; left out under `verify-*` it is `~/.postgresql/root.crt`, as in libpq.
//! `sslcert` + `sslkey` present a client certificate.
//!
//! Every connection also gets TCP keepalives (a peer that vanished is noticed) and a
//! server-side `statement_timeout` (see [`ConnectOptions::statement_timeout`]).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ClientConfig, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as WireSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// How much TLS a connection demands, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS or nothing; the certificate is not checked unless a root certificate is given.
    Require,
    /// TLS, and the certificate must chain to a trusted root (host name not checked).
    VerifyCa,
    /// TLS, the certificate must chain to a trusted root and name the host.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = StoreError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(match value {
            "disable" => SslMode::Disable,
            // libpq's `allow` tries plain first; we never prefer plain when TLS is possible.
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(StoreError::Config(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                )));
            }
        })
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RootCert {
    /// None given.
    Unset,
    /// `sslrootcert=system`: the operating system's store.
    System,
    /// A PEM file of CA certificates.
    File(PathBuf),
}

/// A `DATABASE_URL` taken apart: what tokio-postgres is given, and the TLS settings this
/// module applies itself. Holds no password in any field it prints.
#[derive(Clone)]
pub struct ConnectOptions {
    wire: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: RootCert,
    client_cert: Option<(PathBuf, PathBuf)>,
    statement_timeout: Option<Duration>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio_postgres::Config's Debug redacts the password, but say only what helps.
        f.debug_struct("ConnectOptions")
            .field("hosts", &self.wire.get_hosts())
            .field("dbname", &self.wire.get_dbname())
            .field("user", &self.wire.get_user())
            .field("ssl_mode", &self.ssl_mode)
            .field("root_cert", &self.root_cert)
            .finish_non_exhaustive()
    }
}

/// Query parameters of the URL that this module handles instead of tokio-postgres.
const TLS_PARAMETERS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

impl ConnectOptions {
    /// Parses a `postgres://` or `postgresql://` URL. Errors never quote the URL (it may
    /// hold a password), only the parameter at fault.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        if !(base.starts_with("postgres://") || base.starts_with("postgresql://")) {
            return Err(StoreError::Config(
                "DATABASE_URL must be a postgres:// or postgresql:// URL".to_owned(),
            ));
        }
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = RootCert::Unset;
        let (mut cert, mut key) = (None, None);
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            if !TLS_PARAMETERS.contains(&name) {
                rest.push(pair);
                continue;
            }
            let value = percent_decode(value)?;
            match name {
                "sslmode" => ssl_mode = value.parse()?,
                "sslrootcert" if value == "system" => root_cert = RootCert::System,
                "sslrootcert" => root_cert = RootCert::File(PathBuf::from(value)),
                "sslcert" => cert = Some(PathBuf::from(value)),
                _ => key = Some(PathBuf::from(value)),
            }
        }
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(StoreError::Config(
                    "sslcert and sslkey go together: give both or neither".to_owned(),
                ));
            }
        };
        let wire_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut wire = tokio_postgres::Config::from_str(&wire_url).map_err(|e| {
            // tokio-postgres says only "invalid connection string": find the parameter at
            // fault by trying each alone, and name it (never the URL, which may hold a
            // password).
            let culprit = rest
                .iter()
                .find(|pair| tokio_postgres::Config::from_str(&format!("{base}?{pair}")).is_err());
            match culprit {
                Some(pair) => {
                    let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
                    StoreError::Config(format!("DATABASE_URL: parameter {name} is not valid: {e}"))
                }
                None => StoreError::Config(format!("DATABASE_URL: {e}")),
            }
        })?;
        wire.ssl_mode(match ssl_mode {
            SslMode::Disable => WireSslMode::Disable,
            SslMode::Prefer => WireSslMode::Prefer,
            _ => WireSslMode::Require,
        });
        // A peer that vanished (a failover, a dropped NAT entry) is noticed within about a
        // minute instead of the kernel's two hours; TCP_USER_TIMEOUT bounds unacknowledged
        // writes the same way.
        wire.keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(60));
        Ok(Self {
            wire,
            ssl_mode,
            root_cert,
            client_cert,
            statement_timeout: None,
        })
    }

    /// The TLS mode in force.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Asks the server to cancel any statement of these connections that runs longer than
    /// `timeout` (PostgreSQL's `statement_timeout`, sent at connection start-up so it costs no
    /// round trip). `None` leaves the server's setting (migrations use that).
    pub fn statement_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.statement_timeout = timeout;
        self
    }

    /// How long establishing one connection (TCP, TLS, start-up) may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.wire.connect_timeout(timeout);
        self
    }

    /// Reads the certificate files and builds what opens connections. Done once, at
    /// start-up, so a missing or unreadable file stops the service with a clear message
    /// instead of failing every connection later.
    pub fn connector(&self) -> Result<Connector, StoreError> {
        let mut wire = self.wire.clone();
        if let Some(timeout) = self.statement_timeout {
            let setting = format!("-c statement_timeout={}", timeout.as_millis().max(1));
            let options = match wire.get_options() {
                Some(existing) if !existing.is_empty() => format!("{existing} {setting}"),
                _ => setting,
            };
            wire.options(options);
        }
        let tls = match self.ssl_mode {
            SslMode::Disable => None,
            _ => Some(MakeRustlsConnect::new(self.tls_config()?)),
        };
        Ok(Connector { wire, tls })
    }

    fn tls_config(&self) -> Result<ClientConfig, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (self.ssl_mode, &self.root_cert) {
            (SslMode::Prefer, _) | (SslMode::Require, RootCert::Unset) => {
                Arc::new(EncryptOnly(provider.signature_verification_algorithms))
            }
            (SslMode::Require | SslMode::VerifyCa, roots) => {
                Arc::new(ChainOnly(self.webpki_verifier(roots, provider.clone())?))
            }
            (_, roots) => self.webpki_verifier(roots, provider.clone())?,
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Config(format!("TLS set-up: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = read_certificates(cert, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| StoreError::Config(format!("sslkey {}: {e}", key.display())))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| StoreError::Config(format!("sslcert/sslkey: {e}")))
            }
        }
    }

    fn webpki_verifier(
        &self,
        roots: &RootCert,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
        let mut store = RootCertStore::empty();
        match roots {
            RootCert::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
            }
            RootCert::File(path) => {
                store.add_parsable_certificates(read_certificates(path, "sslrootcert")?);
            }
            RootCert::Unset => {
                // libpq's default location; without it verification cannot work, and libpq
                // refuses to connect rather than silently trusting nothing or everything.
                let default = std::env::var_os("HOME")
                    .map(|home| Path::new(&home).join(".postgresql/root.crt"));
                match default.filter(|p| p.exists()) {
                    Some(path) => {
                        store.add_parsable_certificates(read_certificates(&path, "sslrootcert")?);
                    }
                    None => {
                        return Err(StoreError::Config(
                            "sslmode=verify-ca/verify-full needs sslrootcert=PATH (a PEM file of \
                             the CA certificates) or sslrootcert=system"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        if store.is_empty() {
            return Err(StoreError::Config(
                "sslrootcert holds no usable CA certificate".to_owned(),
            ));
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| StoreError::Config(format!("sslrootcert: {e}")))
    }
}

/// Opens connections with the settings of a [`ConnectOptions`]. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    wire: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl Connector {
    /// One new connection, ready for diesel.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        // Each TLS type gives the connection a different stream type: two arms, one result.
        match &self.tls {
            None => {
                let (client, connection) = self
                    .wire
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(bad_connection)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
            Some(tls) => {
                let (client, connection) = self
                    .wire
                    .connect(tls.clone())
                    .await
                    .map_err(bad_connection)?;
                AsyncPgConnection::try_from_client_and_connection(client, connection).await
            }
        }
    }
}

fn bad_connection(error: tokio_postgres::Error) -> ConnectionError {
    // The whole source chain: "error performing TLS handshake: invalid peer certificate:
    // NotValidForName" says what to fix; the top line alone does not.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    ConnectionError::BadConnection(text)
}

fn read_certificates(
    path: &Path,
    parameter: &str,
) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StoreError::Config(format!("{parameter} {}: {e}", path.display())))?;
    if certificates.is_empty() {
        return Err(StoreError::Config(format!(
            "{parameter} {}: no PEM certificate in the file",
            path.display()
        )));
    }
    Ok(certificates)
}

fn percent_decode(value: &str) -> Result<String, StoreError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    StoreError::Config("DATABASE_URL: bad %-escape in a parameter".to_owned())
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| StoreError::Config("DATABASE_URL: a parameter is not UTF-8".to_owned()))
}

/// `sslmode=prefer`/`require` without a root certificate: the traffic is encrypted, the
/// server is not authenticated (libpq's documented behaviour). The handshake signatures are
/// still verified, so the session key really belongs to whoever holds the presented key.
#[derive(Debug)]
struct EncryptOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full WebPKI check, except that the certificate need not name
/// the host (libpq's meaning; useful behind load balancers and for IP-addressed servers).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            // webpki checks the chain before the name: a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_follows_libpq() {
        let cases = [
            ("postgres://u@h/db", SslMode::Prefer),
            ("postgres://u@h/db?sslmode=disable", SslMode::Disable),
            ("postgres://u@h/db?sslmode=allow", SslMode::Prefer),
            ("postgres://u@h/db?sslmode=prefer", SslMode::Prefer),
            ("postgresql://u@h/db?sslmode=require", SslMode::Require),
            (
                "postgres://u@h/db?application_name=x&sslmode=verify-ca",
                SslMode::VerifyCa,
            ),
            ("postgres://u@h/db?sslmode=verify-full", SslMode::VerifyFull),
        ];
        for (url, want) in cases {
            assert_eq!(
                ConnectOptions::parse(url).unwrap().ssl_mode(),
                want,
                "{url}"
            );
        }
    }

    #[test]
    fn tls_parameters_are_taken_out_and_the_rest_reaches_tokio_postgres() {
        let options = ConnectOptions::parse(
            "postgres://u:pw@db.example:6432/app?sslmode=require&application_name=ilog\
             &sslrootcert=%2Fetc%2Fca.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(options.root_cert, RootCert::File("/etc/ca.pem".into()));
        assert_eq!(options.wire.get_application_name(), Some("ilog"));
        assert_eq!(options.wire.get_dbname(), Some("app"));
        assert_eq!(options.wire.get_ssl_mode(), WireSslMode::Require);
        assert!(options.wire.get_keepalives());
        let system = ConnectOptions::parse("postgres://h/db?sslrootcert=system").unwrap();
        assert_eq!(system.root_cert, RootCert::System);
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_the_password() {
        let cases = [
            ("postgres://u:s3cret@h/db?sslmode=maybe", "sslmode=maybe"),
            (
                "postgres://u:s3cret@h/db?sslcert=/a.pem",
                "sslcert and sslkey",
            ),
            (
                "postgres://u:s3cret@h/db?sslkey=/a.key",
                "sslcert and sslkey",
            ),
            ("mysql://u:s3cret@h/db", "postgres://"),
            ("postgres://u:s3cret@h/db?nonsense=1", "nonsense"),
            ("postgres://u:s3cret@h/db?sslrootcert=%zz", "%-escape"),
        ];
        for (url, want) in cases {
            let error = ConnectOptions::parse(url).unwrap_err().to_string();
            assert!(error.contains(want), "{url}: {error}");
            assert!(!error.contains("s3cret"), "{url}: {error}");
        }
        let debug = format!(
            "{:?}",
            ConnectOptions::parse("postgres://u:s3cret@h/db").unwrap()
        );
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn verification_needs_readable_root_certificates() {
        let missing = ConnectOptions::parse(
            "postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
        )
        .unwrap();
        let error = missing.connector().err().unwrap().to_string();
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        // No certificate at all is not "trust everything".
        let empty = tempfile_with("not a certificate");
        let url = format!(
            "postgres://h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        );
        let error = ConnectOptions::parse(&url)
            .unwrap()
            .connector()
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
        // Modes that do not verify need no file.
        for mode in ["disable", "prefer", "require"] {
            let url = format!("postgres://h/db?sslmode={mode}");
            assert!(
                ConnectOptions::parse(&url).unwrap().connector().is_ok(),
                "{mode}"
            );
        }
    }

    fn tempfile_with(text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "ilog-connect-test-{}-{}.pem",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }
}
