//! One error type per boundary: setting up the broker ([`BusError`]), publishing a chunk
//! ([`PublishError`]) and reading a message body ([`EnvelopeError`]).
//!
//! Broker addresses in these errors are always redacted (no password): errors end up in logs.

/// Connecting to RabbitMQ or declaring/deleting the topology failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// No AMQP connection could be opened (refused, DNS, TLS, bad credentials, bad URL…).
    #[error("cannot connect to RabbitMQ at {address}: {source}")]
    Connect {
        /// The broker address with the password removed.
        address: String,
        /// What lapin reported.
        #[source]
        source: lapin::Error,
    },
    /// The broker's TLS certificate was rejected: not signed by a trusted CA, not issued for
    /// the host name in the URL, expired… Never retried into success by waiting: the CA bundle
    /// (`AMQP_CA_FILE`), the URL's host or the broker's certificate must change.
    #[error("TLS certificate of RabbitMQ at {address} rejected: {reason}; trusted: {trusted}")]
    Certificate {
        /// The broker address with the password removed.
        address: String,
        /// What is wrong with the certificate, with rustls's verdict.
        reason: String,
        /// Which CAs were trusted (system roots, and the CA file if one was given).
        trusted: String,
    },
    /// `AMQP_CA_FILE` cannot be read or holds no PEM certificate.
    #[error("cannot use AMQP_CA_FILE {}: {reason}", path.display())]
    CaFile {
        /// The file as configured.
        path: std::path::PathBuf,
        /// Why (I/O error, or what is wrong with its content).
        reason: String,
    },
    /// `AMQP_URL` is not a valid AMQP URL.
    #[error("invalid AMQP URL {address}: {reason}")]
    InvalidUrl {
        /// The URL with the password removed.
        address: String,
        /// What is wrong with it (never containing the password).
        reason: String,
    },
    /// Opening the connection took longer than allowed (a broker or network that does not
    /// answer at all).
    #[error("connecting to RabbitMQ at {address} timed out after {after:?}")]
    ConnectTimeout {
        /// The broker address with the password removed.
        address: String,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// An AMQP operation on an open connection failed (`what` says which one).
    #[error("{what} failed: {source}")]
    Amqp {
        /// The operation, e.g. `declare queue "interactions.forward"`.
        what: String,
        /// What lapin reported (often the broker's reply, e.g. `PRECONDITION_FAILED`).
        #[source]
        source: lapin::Error,
    },
}

impl BusError {
    pub(crate) fn amqp(what: impl Into<String>) -> impl FnOnce(lapin::Error) -> Self {
        let what = what.into();
        move |source| Self::Amqp { what, source }
    }
}

/// Why a chunk was NOT published. Every variant means the same thing to the caller: leave the
/// chunk unpublished (the relay retries it); the variants only tell operators why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No usable confirmed channel right now (broker down, reconnecting, blocked by a resource
    /// alarm, or the publisher is closing). Returned at once, without waiting.
    #[error("not connected to RabbitMQ")]
    NotConnected,
    /// The broker refused responsibility for the message (`basic.nack`).
    #[error("RabbitMQ nacked the message")]
    Nacked,
    /// The message was returned as unroutable (mandatory): no queue is bound for it.
    #[error("RabbitMQ returned the message as unroutable (is the forward queue missing?)")]
    Returned,
    /// No confirm arrived within the configured `confirm_timeout`; the message may or may not
    /// have been stored, so the relay will publish it again (duplicates are suppressed
    /// downstream).
    #[error("no publisher confirm from RabbitMQ within the timeout")]
    ConfirmTimeout,
    /// The channel or connection failed during the publish (the text is lapin's error).
    #[error("RabbitMQ error: {0}")]
    Broker(String),
}

/// A message body could not be read as an [`crate::Envelope`].
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or JSON without the envelope's fields and types.
    #[error("message body is not a valid envelope: {0}")]
    Malformed(#[source] serde_json::Error),
    /// A well-formed envelope of a version this build does not understand (written by a newer
    /// or older ingest-api). Park it rather than guess.
    #[error(
        "envelope version {found} is not supported (this build reads versions 1 to {supported})"
    )]
    UnsupportedVersion {
        /// The version in the message.
        found: u32,
        /// The newest version this build reads ([`crate::ENVELOPE_VERSION`]); it reads every
        /// older one too.
        supported: u32,
    },
}
