//! The store's error type.

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No connection could be had in time: the database is down, unreachable or saturated.
    /// Callers should answer "try again later" (503), never report success.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database did not answer a statement within the client-side deadline (a server
    /// or network that accepts bytes and never replies). Whether the statement took effect
    /// is unknown.
    #[error("the database did not answer within {0:?}")]
    NoAnswer(std::time::Duration),
    /// A statement failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migration(String),
    /// A stored row holds something no normalized event could have.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The pool could not be built from the configuration.
    #[error("invalid database configuration: {0}")]
    Config(String),
}

impl StoreError {
    pub(crate) fn from_pool(error: diesel_async::pooled_connection::deadpool::PoolError) -> Self {
        // The pool's error includes the connection error text, never the URL.
        StoreError::Unavailable(error.to_string())
    }

    /// Whether the failure is the database being away (as opposed to a bug or bad data):
    /// such operations are worth retrying later.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::Error as E;
        match self {
            StoreError::Unavailable(_) | StoreError::NoAnswer(_) => true,
            StoreError::Query(E::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    diesel::result::DatabaseErrorKind::ClosedConnection
                        | diesel::result::DatabaseErrorKind::UnableToSendCommand
                        | diesel::result::DatabaseErrorKind::SerializationFailure
                ) || is_server_going_away(info.message())
            }
            StoreError::Query(E::BrokenTransactionManager) => true,
            _ => false,
        }
    }

    /// Whether a write may have been committed although it reported failure: the connection
    /// was lost, or the server stopped answering, after the statement was sent (for
    /// example during COMMIT). Callers must not say "nothing was stored"; retrying with the
    /// same event ids is safe because the store deduplicates them.
    pub fn outcome_unknown(&self) -> bool {
        use diesel::result::Error as E;
        match self {
            StoreError::NoAnswer(_) => true,
            StoreError::Query(E::DatabaseError(kind, info)) => {
                matches!(
                    kind,
                    diesel::result::DatabaseErrorKind::ClosedConnection
                        | diesel::result::DatabaseErrorKind::UnableToSendCommand
                ) || (is_server_going_away(info.message()) && !is_statement_timeout(info.message()))
            }
            StoreError::Query(E::BrokenTransactionManager) => true,
            _ => false,
        }
    }
}

/// The server cancelled the statement itself (`statement_timeout`): it was rolled back.
fn is_statement_timeout(message: &str) -> bool {
    message.contains("canceling statement due to statement timeout")
}

/// Messages of errors PostgreSQL sends while it shuts down, restarts or fails over (SQLSTATE
/// class 57P, e.g. `terminating connection due to administrator command`), and of a
/// statement cancelled by `statement_timeout` (57014): the database is away or overloaded,
/// not the request wrong. diesel reports them as `Unknown` kinds, so the text decides.
fn is_server_going_away(message: &str) -> bool {
    const MARKERS: [&str; 5] = [
        "terminating connection",
        "the database system is shutting down",
        "the database system is starting up",
        "the database system is in recovery mode",
        "canceling statement due to statement timeout",
    ];
    MARKERS.iter().any(|marker| message.contains(marker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind as K, Error as E};

    fn query(kind: K, message: &str) -> StoreError {
        StoreError::Query(E::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn failures_are_classified_as_away_and_as_ambiguous() {
        // (error, database away → 503, outcome unknown)
        let cases = [
            (
                StoreError::Unavailable("pool timed out".into()),
                true,
                false,
            ),
            (
                StoreError::NoAnswer(std::time::Duration::from_secs(7)),
                true,
                true,
            ),
            (query(K::ClosedConnection, "connection closed"), true, true),
            (
                query(K::UnableToSendCommand, "connection closed"),
                true,
                true,
            ),
            (
                query(K::SerializationFailure, "could not serialize"),
                true,
                false,
            ),
            (
                query(
                    K::Unknown,
                    "terminating connection due to administrator command",
                ),
                true,
                true,
            ),
            (
                query(K::Unknown, "canceling statement due to statement timeout"),
                true,
                false,
            ),
            (query(K::UniqueViolation, "duplicate key"), false, false),
            (query(K::Unknown, "syntax error at or near"), false, false),
            (StoreError::Corrupt("bad row".into()), false, false),
        ];
        for (error, away, unknown) in cases {
            assert_eq!(error.is_unavailable(), away, "{error}");
            assert_eq!(error.outcome_unknown(), unknown, "{error}");
        }
    }
}
