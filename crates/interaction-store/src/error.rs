//! The store's error type.

use thiserror::Error;

/// Why a store operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No connection could be had in time: the database is down, unreachable or saturated.
    /// Callers should answer "try again later" (503), never report success.
    #[error("database unavailable: {0}")]
    Unavailable(String),
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
            StoreError::Unavailable(_) => true,
            StoreError::Query(E::DatabaseError(kind, _)) => matches!(
                kind,
                diesel::result::DatabaseErrorKind::ClosedConnection
                    | diesel::result::DatabaseErrorKind::SerializationFailure
            ),
            StoreError::Query(E::BrokenTransactionManager) => true,
            _ => false,
        }
    }
}
