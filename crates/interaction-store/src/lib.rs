//! PostgreSQL storage: immutable event rows plus a `chunks` outbox, the source of truth of the
//! pipeline. Everything about SQL lives here; the binaries see typed operations only.
//!
//! **Why diesel-async with a deadpool pool** (rather than sync diesel on a blocking pool): the
//! ingest path is many small concurrent writers sharing few connections, and the relay and
//! health checks run beside them. Async connections cost no blocked threads while a commit
//! waits for the WAL flush, and tokio-postgres needs no libpq in the images. Migrations, which
//! diesel runs synchronously, go through `AsyncMigrationHarness` on a blocking thread.
//!
//! Cost lever: one statement writes a whole chunk — the events through `UNNEST` of one array
//! per column (a fixed SQL text, so PostgreSQL plans it once per connection, and no 65,535
//! bind-parameter limit) and the chunk row in the same statement.

mod chunks;
mod delivery;
mod error;
pub mod schema;
#[cfg(feature = "test-support")]
pub mod testing;

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

pub use chunks::{ChunkToPublish, InsertedChunk, StoredEvent};
pub use delivery::{Failure, FailureRow, Purged};
pub use error::StoreError;

/// Key of the PostgreSQL advisory lock held while migrating ("ILOG" in ASCII).
const MIGRATION_LOCK: i64 = 0x494C_4F47;

/// The schema migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Pool settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Most connections this process opens.
    pub max_connections: usize,
    /// How long a caller waits for a free connection, and for a new one to be established,
    /// before the operation fails as unavailable (and the API answers 503).
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    /// Settings for `url` with the defaults: 8 connections, 3 s acquire timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
        }
    }
}

/// A pooled connection.
pub type Connection = Object<AsyncPgConnection>;

/// Handle to the database: a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<AsyncPgConnection>,
    /// Kept for migrations, which need a connection of their own. Never logged.
    url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URL: it may hold a password.
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish()
    }
}

impl Store {
    /// Builds the pool. Connects lazily: a database that is down now fails the first
    /// operations, not start-up, so the service comes up and reports itself degraded.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let mut manager_config = ManagerConfig::default();
        // The default (Verified) runs a test query on every checkout: a round trip per write
        // batch. Broken connections surface as errors on use instead and are dropped.
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            config.url.clone(),
            manager_config,
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections)
            .wait_timeout(Some(config.acquire_timeout))
            .create_timeout(Some(config.acquire_timeout))
            .recycle_timeout(Some(config.acquire_timeout))
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            url: config.url.clone(),
        })
    }

    /// A connection from the pool.
    pub async fn connection(&self) -> Result<Connection, StoreError> {
        self.pool.get().await.map_err(StoreError::from_pool)
    }

    /// Applies every pending migration; returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let url = self.url.clone();
        // Diesel's migration code is synchronous: run it on a blocking thread with a connection
        // of its own (the async harness would panic on a current-thread runtime).
        tokio::task::spawn_blocking(move || {
            let mut conn =
                <AsyncConnectionWrapper<AsyncPgConnection> as diesel::Connection>::establish(&url)
                    .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            // ingest-api and forwarder both migrate at start-up, many replicas at once: the
            // lock makes them take turns (the later ones find nothing left to do). It is held
            // by this connection and released with it, even if a migration fails.
            diesel::RunQueryDsl::execute(
                diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})")),
                &mut conn,
            )?;
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(|e| StoreError::Migration(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Migration(format!("migration task failed: {e}")))?
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        diesel::sql_query("SELECT 1")
            .execute(&mut conn)
            .await
            .map(drop)
            .map_err(StoreError::from)
    }

    /// Accepted events not yet forwarded: the sum over pending and published chunks.
    pub async fn pending_event_count(&self) -> Result<i64, StoreError> {
        use schema::chunks::dsl::*;
        let mut conn = self.connection().await?;
        let total: Option<i64> = chunks
            .filter(state.eq_any(["pending", "published"]))
            .select(diesel::dsl::sum(event_count))
            .first(&mut conn)
            .await?;
        Ok(total.unwrap_or(0))
    }

    /// Chunks committed but not yet confirmed by the broker.
    pub async fn unpublished_chunk_count(&self) -> Result<i64, StoreError> {
        use schema::chunks::dsl::*;
        let mut conn = self.connection().await?;
        Ok(chunks
            .filter(state.eq("pending"))
            .count()
            .get_result(&mut conn)
            .await?)
    }
}
