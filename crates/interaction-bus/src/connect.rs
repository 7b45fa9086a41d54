//! Opening a connection: which certificates to trust, how a dead connection is noticed, and
//! keeping passwords out of logs.
//!
//! lapin 4 runs each connection's I/O loop on a thread of its own and drives sockets and
//! timers through the *current* tokio runtime: call these from inside one.
//!
//! # TLS (`amqps://`)
//! The broker's certificate and host name are always verified (rustls with ring); there is no
//! switch to skip either. Trusted are the system roots (the OS store, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR`) **plus**, when `AMQP_CA_FILE` is set, the CAs in that PEM bundle. "Plus" is
//! lapin's own behaviour, checked in its sources (tcp-stream 0.34): with the
//! `rustls-native-certs` feature it builds `RustlsConnectorConfig::new_with_native_certs()`
//! and *adds* `OwnedTLSConfig::cert_chain` to that store (`add_parsable_certificates`), so a
//! private CA never replaces the public ones. One consequence: with no system roots at all
//! (an image without `ca-certificates`) even a connection through `AMQP_CA_FILE` fails.
//! The file is read at every connection attempt, so a rotated bundle (a re-mounted Kubernetes
//! Secret) is picked up on the next reconnect; a file that cannot be read or holds no
//! certificate fails the attempt with an error naming it.
//!
//! # Liveness
//! A dead peer (broker host gone, a NAT or load balancer silently dropping the flow) is found
//! by the AMQP heartbeat, not by TCP keepalive: lapin 4 opens its socket itself and exposes no
//! socket options. lapin sends a heartbeat every half interval and declares the connection dead
//! after two intervals without hearing from the broker; the negotiated interval is the lower of
//! ours and the broker's (RabbitMQ's default is 60 s). Unless the URL sets `?heartbeat=`, we
//! ask for [`DEFAULT_HEARTBEAT_SECS`] (20 s), so a silent broker is given up on after 40 s and
//! noticed within about 50 s (lapin checks every 10 s); [`crate::Publisher`] and the
//! forwarder's consumer then reconnect.
//!
//! # IP-address hosts
//! lapin's URL parser (amq-protocol-uri 10) reads the host with `Url::domain()`, which is empty
//! for an IP address, and then falls back to `localhost`: `amqps://10.0.0.5/` would connect to
//! localhost and check the certificate for `localhost`. We put the address back, so the
//! connection goes where the URL says and the certificate is checked for that IP address.

use crate::error::BusError;
use lapin::{
    Connection, ConnectionProperties,
    tcp::OwnedTLSConfig,
    uri::{AMQPScheme, AMQPUri},
};
use rustls::pki_types::{CertificateDer, pem::PemObject};
use secrecy::{ExposeSecret, SecretString};
use std::{path::Path, time::Duration};

/// How long opening a connection (TCP, TLS, AMQP handshake) may take before we give up. A
/// broker behind a black-holing firewall never refuses; without a bound a reconnect loop would
/// hang there instead of retrying.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The AMQP heartbeat interval we ask for when the URL does not set `?heartbeat=` (see the
/// module docs): a dead connection is given up on after twice this.
pub const DEFAULT_HEARTBEAT_SECS: u16 = 20;

/// Opens an AMQP connection with the tokio runtime it is called from, named `interaction-bus`
/// in the management UI. `ca_file` adds a PEM bundle of CAs to the system roots for
/// `amqps://` (see the module docs). Fails after 10 s at most. lapin's own automatic recovery
/// stays off: callers decide how to reconnect ([`crate::Publisher`] runs its own loop).
pub async fn connect(url: &SecretString, ca_file: Option<&Path>) -> Result<Connection, BusError> {
    connect_named(url, ca_file, "interaction-bus").await
}

/// [`connect`] with the connection name shown in the management UI (e.g. `forwarder`), which
/// tells operators which process holds which connection.
pub async fn connect_named(
    url: &SecretString,
    ca_file: Option<&Path>,
    connection_name: &str,
) -> Result<Connection, BusError> {
    let address = redact_url(url.expose_secret());
    let uri = parse_url(url, &address)?;
    let tls = match (&uri.scheme, ca_file) {
        (AMQPScheme::AMQPS, Some(path)) => OwnedTLSConfig {
            identity: None,
            cert_chain: Some(read_ca_file(path)?),
        },
        // Plain amqp:// has nothing to verify; the file is still checked at start-up
        // (`BusConfig::check`) so a wrong path is found before anyone switches to amqps.
        _ => OwnedTLSConfig::default(),
    };
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let runtime = lapin::runtime::default_runtime().map_err(|source| BusError::Connect {
        address: address.clone(),
        source,
    })?;
    let opening = Connection::connect_uri_with_config(uri, properties, tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, opening).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(match certificate_problem(&source) {
            Some(reason) => BusError::Certificate {
                address,
                reason,
                trusted: describe_trust(ca_file),
            },
            None => BusError::Connect { address, source },
        }),
        Err(_) => Err(BusError::ConnectTimeout {
            address,
            after: CONNECT_TIMEOUT,
        }),
    }
}

/// Checks what can be checked without a broker: the URL parses as an AMQP URL and, when given,
/// the CA file can be read and holds at least one PEM certificate. For start-up, so that a
/// configuration mistake stops the process instead of looping in reconnect attempts.
pub fn check_connection_settings(
    url: &SecretString,
    ca_file: Option<&Path>,
) -> Result<(), BusError> {
    parse_url(url, &redact_url(url.expose_secret()))?;
    if let Some(path) = ca_file {
        read_ca_file(path)?;
    }
    Ok(())
}

/// The URL as lapin's [`AMQPUri`], with its IP-address host restored and our default
/// heartbeat (see the module docs). Errors never contain the URL itself.
fn parse_url(url: &SecretString, address: &str) -> Result<AMQPUri, BusError> {
    let text = url.expose_secret();
    let invalid = |reason: String| BusError::InvalidUrl {
        address: address.to_owned(),
        // amq-protocol-uri quotes the whole URL in some errors ("Invalid URL: '…'"): the
        // password must not reach a log through them.
        reason: if reason.contains(text) {
            "not an AMQP URL".to_owned()
        } else {
            reason
        },
    };
    let mut uri: AMQPUri = text.parse().map_err(invalid)?;
    let parsed = url::Url::parse(text).map_err(|e| invalid(e.to_string()))?;
    match parsed.host() {
        Some(url::Host::Ipv4(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Ipv6(ip)) => uri.authority.host = ip.to_string(),
        Some(url::Host::Domain(_)) | None => {}
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    Ok(uri)
}

/// The PEM text of `path`, once it is known to hold at least one certificate (lapin would
/// silently skip what it cannot parse and then fail with a bare "unknown issuer").
fn read_ca_file(path: &Path) -> Result<String, BusError> {
    let ca_file_error = |reason: String| BusError::CaFile {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read_to_string(path).map_err(|e| ca_file_error(e.to_string()))?;
    let mut certificates = 0usize;
    for certificate in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        certificate.map_err(|e| ca_file_error(format!("not a valid PEM file: {e}")))?;
        certificates += 1;
    }
    if certificates == 0 {
        return Err(ca_file_error(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned(),
        ));
    }
    Ok(pem)
}

/// rustls's verdict when the broker's certificate was rejected (unknown CA, wrong host name,
/// expired…), so that it can be reported as what it is rather than as an "IO error".
fn certificate_problem(error: &lapin::Error) -> Option<String> {
    let lapin::ErrorKind::IOError(io) = error.kind() else {
        return None;
    };
    // rustls's error is the io::Error's payload (`get_ref`), not its `source()`.
    match io.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::InvalidCertificate(problem) => Some(describe_certificate_error(problem)),
        _ => None,
    }
}

fn describe_certificate_error(problem: &rustls::CertificateError) -> String {
    use rustls::CertificateError as E;
    let what = match problem {
        E::UnknownIssuer => "it is not signed by a trusted CA",
        E::NotValidForName | E::NotValidForNameContext { .. } => {
            "it is not valid for the host name in the URL"
        }
        E::Expired | E::ExpiredContext { .. } => "it has expired",
        E::NotValidYet | E::NotValidYetContext { .. } => "it is not valid yet",
        E::Revoked => "it has been revoked",
        _ => "it is not acceptable",
    };
    format!("{what} ({problem})")
}

fn describe_trust(ca_file: Option<&Path>) -> String {
    match ca_file {
        Some(path) => format!("the system roots and AMQP_CA_FILE {}", path.display()),
        None => "the system roots only (no AMQP_CA_FILE)".to_owned(),
    }
}

/// The URL with any password replaced by `***`, for logs and errors:
/// `amqp://guest:***@127.0.0.1:5672/%2f`. Query strings are kept (they carry no secrets in
/// AMQP URIs); anything that does not parse as a URL is replaced whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid AMQP URL>".to_owned();
    };
    // A password with an unescaped '/', '?' or '#' breaks the URL's structure, and the
    // split below would show part of it: such a URL is hidden whole.
    if url::Url::parse(url).is_err() {
        return "<invalid AMQP URL>".to_owned();
    }
    // The authority ends at the first '/', '?' or '#'; userinfo ends at its LAST '@'
    // (an unescaped '@' in a password must not leak the rest of it).
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        // `user:1234/rest@host` parses as host `user`, port 1234: the '@' later on may end a
        // password that lost its escaping. Hide all but the scheme rather than guess.
        None if authority.contains(':') && tail.contains('@') => format!("{scheme}://<hidden>"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(url: &str) -> SecretString {
        SecretString::from(url)
    }

    #[test]
    fn redact_url_hides_passwords_and_keeps_the_rest() {
        let cases = [
            (
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "amqp://guest:***@127.0.0.1:5672/%2f",
            ),
            (
                "amqps://user:p%40ss@rabbit.example:5671/vh?heartbeat=10",
                "amqps://user:***@rabbit.example:5671/vh?heartbeat=10",
            ),
            ("amqp://user:pa@ss@host/", "amqp://user:***@host/"),
            ("amqp://user:@host", "amqp://user:***@host"),
            ("amqp://user@host:5672", "amqp://user@host:5672"),
            ("amqp://127.0.0.1:5672/%2f", "amqp://127.0.0.1:5672/%2f"),
            ("amqp://h/vhost@x", "amqp://h/vhost@x"),
            ("guest:secret@host", "<invalid AMQP URL>"),
            // Unescaped '/', '?', '#' in a password.
            ("amqp://user:se/cret@host/", "<invalid AMQP URL>"),
            ("amqp://user:se?cret@host/", "<invalid AMQP URL>"),
            ("amqp://user:se#cret@host/", "<invalid AMQP URL>"),
            ("amqp://user:1234/secret@host/", "amqp://<hidden>"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("secret"));
        }
    }

    #[test]
    fn ip_address_hosts_are_kept_and_domain_names_untouched() {
        let cases = [
            ("amqps://u:p@127.0.0.1:5671/%2f", "127.0.0.1"),
            ("amqps://u:p@[::1]:5671/%2f", "::1"),
            ("amqps://u:p@rabbit.example:5671/%2f", "rabbit.example"),
            ("amqp://u:p@localhost/%2f", "localhost"),
        ];
        for (url, host) in cases {
            let uri = parse_url(&secret(url), "x").unwrap();
            assert_eq!(uri.authority.host, host, "{url}");
        }
    }

    #[test]
    fn the_heartbeat_defaults_to_20_seconds_unless_the_url_sets_one() {
        let default = parse_url(&secret("amqp://u:p@h/%2f"), "x").unwrap();
        assert_eq!(default.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        let set = parse_url(&secret("amqp://u:p@h/%2f?heartbeat=5"), "x").unwrap();
        assert_eq!(set.query.heartbeat, Some(5));
    }

    #[test]
    fn invalid_urls_are_reported_without_their_password() {
        for url in [
            "guest:hunter2@host",
            "http://u:hunter2@h/",
            "amqp://u:hunter2@h:notaport/",
        ] {
            let error = check_connection_settings(&secret(url), None).unwrap_err();
            let text = error.to_string();
            assert!(matches!(error, BusError::InvalidUrl { .. }), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[test]
    fn an_unusable_ca_file_is_reported_with_its_path() {
        let dir = std::env::temp_dir().join(format!("bus-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let missing = dir.join("missing.pem");
        let url = secret("amqps://u:p@localhost/%2f");
        for path in [&missing, &empty] {
            let error = check_connection_settings(&url, Some(path)).unwrap_err();
            let text = error.to_string();
            assert!(matches!(error, BusError::CaFile { .. }), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("AMQP_CA_FILE"), "{text}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn connecting_with_an_unreadable_ca_file_fails_before_any_network_io() {
        let url = secret("amqps://u:p@localhost:1/%2f");
        let missing = Path::new("/nonexistent/interaction-logger/ca.pem");
        let error = connect(&url, Some(missing)).await.unwrap_err();
        assert!(matches!(error, BusError::CaFile { .. }), "{error}");
    }
}
