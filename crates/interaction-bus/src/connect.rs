//! Opening a connection, and keeping passwords out of logs.
//!
//! lapin 4 runs each connection's I/O loop on a thread of its own and drives sockets and
//! timers through the *current* tokio runtime: call these from inside one.

use crate::error::BusError;
use lapin::{Connection, ConnectionProperties};
use std::time::Duration;

/// How long opening a connection (TCP, TLS, AMQP handshake) may take before we give up. A
/// broker behind a black-holing firewall never refuses; without a bound a reconnect loop would
/// hang there instead of retrying.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens an AMQP connection with the tokio runtime it is called from, named `interaction-bus`
/// in the management UI. Fails after 10 s at most. lapin's own automatic recovery stays off:
/// callers decide how to reconnect ([`crate::Publisher`] runs its own loop).
pub async fn connect(url: &str) -> Result<Connection, BusError> {
    connect_named(url, "interaction-bus").await
}

/// [`connect`] with the connection name shown in the management UI (e.g. `forwarder`), which
/// tells operators which process holds which connection.
pub async fn connect_named(url: &str, connection_name: &str) -> Result<Connection, BusError> {
    let address = redact_url(url);
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(source)) => Err(BusError::Connect { address, source }),
        Err(_) => Err(BusError::ConnectTimeout {
            address,
            after: CONNECT_TIMEOUT,
        }),
    }
}

/// The URL with any password replaced by `***`, for logs and errors:
/// `amqp://guest:***@127.0.0.1:5672/%2f`. Query strings are kept (they carry no secrets in
/// AMQP URIs); anything that does not look like a URL is replaced whole.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid AMQP URL>".to_owned();
    };
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
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("secret"));
        }
    }
}
