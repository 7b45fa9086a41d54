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
//!
//! Delivery state lives per part of a chunk ([`ChunkParts`], [`Store::record_outcome`]): the
//! positions of its events delivered and refused, so a partial failure, a retry and a re-drive
//! of one chunk can interleave in any order; the chunk's [`ChunkState`] follows from them.
//!
//! At volume (issue 15), `events` is partitioned by day of arrival, idempotency keys live in
//! `event_keys` for DEDUP_WINDOW, and retention drops whole days (see the `partitions`
//! module); behind a transaction pooler, [`Pooler::Transaction`] keeps every operation on one
//! server connection.
//!
//! Operators' questions — where an event is ([`Store::trace_event`], [`EventTrace`]) and how
//! many events each tenant has in each stage ([`Store::tenant_counts`]) — are answered from
//! the same records, with no cost on the write path.

mod chunks;
mod connect;
mod delivery;
mod error;
mod partitions;
mod parts;
pub mod schema;
mod state;
#[cfg(feature = "test-support")]
pub mod testing;
mod trace;

use std::time::Duration;

use diesel::{ExpressionMethods, QueryDsl};
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use futures_util::FutureExt;
use secrecy::{ExposeSecret, SecretString};

pub use chunks::{
    ChunkToPublish, ClaimLimits, Claimed, EVENT_FIXED_BYTES, InsertedChunk, StoredEvent,
    UnreadableChunk, estimated_bytes, estimated_chunk_bytes,
};
pub use connect::{ConnectOptions, Connector, SslMode};
// `Pooler` is defined below, beside `StoreConfig`.
pub use delivery::{FailureRow, QueryPlan};
pub use error::StoreError;
pub use partitions::{
    ArrivalRange, PARTITION_DAYS_AHEAD, Partition, PartitionRetention, PartitionUpkeep, uncovered,
};
pub use parts::{ChunkParts, Failure, PartOutcome};
pub use state::{ChunkState, UnknownChunkState};
pub use trace::{EventStatus, EventTrace, RecordedFailure, TenantCounts};

/// Key of the PostgreSQL advisory lock held while migrating ("ILOG" in ASCII).
const MIGRATION_LOCK: i64 = 0x494C_4F47;

/// Key of the PostgreSQL advisory lock held while applying retention ("ILPG" in ASCII): one
/// replica purges at a time; the others skip their round instead of deleting beside it.
pub const RETENTION_LOCK: i64 = 0x494C_5047;

/// A session-level advisory lock, held by a connection of its own for as long as this value
/// lives. Dropping it closes that connection (it never was in the pool), which releases the
/// lock in PostgreSQL even if the process dies mid-way: nothing to forget to unlock. The
/// connection goes to the direct URL: behind a transaction pooler a session lock would stay
/// with whichever server connection took it.
pub struct HeldLock {
    _conn: AsyncPgConnection,
}

/// Logs the days [`Store::ensure_partitions`] could not create a partition for.
pub fn warn_blocked(upkeep: &PartitionUpkeep) {
    for day in &upkeep.blocked {
        log::warn!(
            "no partition for {day}: events_default holds rows of that day (a clock ahead?); \
             its events land there until an operator moves them (README, Operations)"
        );
    }
}

/// How much longer than `statement_timeout` the client waits before it gives a statement
/// up: the server's own cancellation comes first and leaves the connection usable; the
/// client's deadline is for a server (or network) that does not answer at all.
const CLIENT_DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// The schema migrations, compiled into the binary.
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// What sits between this process and PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pooler {
    /// PostgreSQL itself, or a pooler in session mode: a connection is a session.
    #[default]
    None,
    /// A pooler in transaction mode (PgBouncer `pool_mode = transaction`): consecutive
    /// transactions of one client connection may run on different server connections. Every
    /// operation then runs in one transaction (so its statements stay on one server
    /// connection), nothing is kept prepared across operations (a statement prepared on one
    /// server connection does not exist on the next), `statement_timeout` is set per
    /// transaction (`SET LOCAL`: poolers refuse start-up options), and what needs a session
    /// (migrations, the retention lock) goes to [`StoreConfig::direct_url`].
    Transaction,
}

impl std::str::FromStr for Pooler {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "" | "none" | "session" => Ok(Self::None),
            "transaction" => Ok(Self::Transaction),
            other => Err(format!(
                "{other:?} is not a pooler mode: none (PostgreSQL itself or session pooling) or \
                 transaction (PgBouncer pool_mode = transaction)"
            )),
        }
    }
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database?sslmode=…` (libpq's URL conventions,
    /// see [`ConnectOptions`]). A secret: it usually holds a password.
    pub url: SecretString,
    /// Most connections this process opens.
    pub max_connections: usize,
    /// How long a caller waits for a free connection, and for a new one to be established,
    /// before the operation fails as unavailable (and the API answers 503).
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` for every statement but migrations. The client
    /// gives a statement up [`CLIENT_DEADLINE_MARGIN`] later if the server never answers.
    pub statement_timeout: Duration,
    /// What [`Self::url`] leads to.
    pub pooler: Pooler,
    /// PostgreSQL itself, for what needs a session of its own (migrations, advisory locks):
    /// required with [`Pooler::Transaction`]; `None`: [`Self::url`].
    pub direct_url: Option<SecretString>,
}

impl StoreConfig {
    /// Settings for `url` with the defaults: 8 connections, 3 s acquire timeout, 5 s
    /// statement timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(5),
            pooler: Pooler::None,
            direct_url: None,
        }
    }
}

/// A pooled connection.
pub type Connection = Object<AsyncPgConnection>;

/// Handle to the database: a connection pool. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool<AsyncPgConnection>,
    /// Opens the migration connection (same TLS settings, no statement timeout).
    migrator: Connector,
    /// How long one operation may wait for the database once it has a connection.
    deadline: Duration,
    /// Set for [`Pooler::Transaction`]: `BEGIN` with the statement timeout, which every
    /// operation then runs in.
    begin: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URL: it may hold a password.
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl Store {
    /// Builds the pool. Connects lazily: a database that is down now fails the first
    /// operations, not start-up, so the service comes up and reports itself degraded. A
    /// malformed URL or an unreadable certificate file fails here.
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        let options = ConnectOptions::parse(config.url.expose_secret())?
            .connect_timeout(config.acquire_timeout);
        let pooled = config.pooler == Pooler::Transaction;
        let connector = options
            .clone()
            .statement_timeout((!pooled).then_some(config.statement_timeout))
            .connector()?;
        let direct = match (&config.direct_url, config.pooler) {
            (Some(url), _) => ConnectOptions::parse(url.expose_secret())
                .map_err(|e| StoreError::Config(format!("direct database URL: {e}")))?
                .connect_timeout(config.acquire_timeout),
            (None, Pooler::None) => options,
            (None, Pooler::Transaction) => {
                return Err(StoreError::Config(
                    "a transaction pooler needs a direct database URL too \
                     (DATABASE_DIRECT_URL): migrations and the retention lock need a session \
                     of their own, which a transaction pooler does not keep"
                        .to_owned(),
                ));
            }
        };
        let migrator = direct.statement_timeout(None).connector()?;
        let mut manager_config = ManagerConfig::default();
        // The default (Verified) runs a test query on every checkout: a round trip per write
        // batch. Broken connections surface as errors on use instead and are dropped.
        manager_config.recycling_method = RecyclingMethod::Fast;
        manager_config.custom_setup = Box::new(move |_url| {
            let connector = connector.clone();
            async move {
                let mut conn = connector.connect().await?;
                if pooled {
                    diesel_async::AsyncConnection::set_prepared_statement_cache_size(
                        &mut conn,
                        diesel::connection::CacheSize::Disabled,
                    );
                }
                Ok(conn)
            }
            .boxed()
        });
        // The URL is unused: `custom_setup` connects with the options parsed above.
        let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
            "postgres://",
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
            migrator,
            deadline: config.statement_timeout + CLIENT_DEADLINE_MARGIN,
            begin: pooled.then(|| {
                format!(
                    "BEGIN; SET LOCAL statement_timeout = {}",
                    config.statement_timeout.as_millis().max(1)
                )
                .into()
            }),
        })
    }

    /// Runs `op` on a pooled connection, giving up after the client-side deadline. A
    /// connection whose statement was given up is closed, never returned to the pool: a
    /// statement may still be running on it, or a transaction still open.
    pub(crate) async fn with_connection<T>(
        &self,
        op: impl AsyncFnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get().await.map_err(StoreError::from_pool)?;
        let run = async {
            let Some(begin) = &self.begin else {
                return op(&mut conn).await;
            };
            // Behind a transaction pooler: the whole operation in one transaction (nested
            // ones become savepoints), committed if it succeeded.
            type Manager = diesel_async::AnsiTransactionManager;
            Manager::begin_transaction_sql(&mut *conn, begin).await?;
            let result = op(&mut conn).await;
            let end = if result.is_ok() {
                <Manager as diesel_async::TransactionManager<AsyncPgConnection>>::commit_transaction(&mut *conn).await
            } else {
                <Manager as diesel_async::TransactionManager<AsyncPgConnection>>::rollback_transaction(&mut *conn).await
            };
            match (result, end) {
                (Ok(value), Ok(())) => Ok(value),
                (Ok(_), Err(error)) => Err(error.into()),
                (Err(error), _) => Err(error),
            }
        };
        match tokio::time::timeout(self.deadline, run).await {
            Ok(result) => result,
            Err(_) => {
                drop(Object::take(conn));
                Err(StoreError::NoAnswer(self.deadline))
            }
        }
    }

    /// Applies every pending migration, then creates the partitions of `events` for today
    /// and the days ahead ([`Self::ensure_partitions`]); returns the versions applied.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let applied = self.migrate_schema().await?;
        let upkeep = self
            .ensure_partitions(chrono::Utc::now().date_naive())
            .await?;
        if !upkeep.created.is_empty() {
            log::info!("partitions created: {}", upkeep.created.join(", "));
        }
        warn_blocked(&upkeep);
        Ok(applied)
    }

    /// Applies every pending migration; returns the versions applied.
    async fn migrate_schema(&self) -> Result<Vec<String>, StoreError> {
        let conn = self
            .migrator
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // Diesel's migration code is synchronous: run it on a blocking thread (the async
        // harness would panic on a current-thread runtime); the wrapper drives the async
        // connection from there through the runtime's handle.
        tokio::task::spawn_blocking(move || {
            let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
            // ingest-api and forwarder both migrate at start-up, many replicas at once: the
            // lock makes them take turns (the later ones find nothing left to do). It is held
            // by this connection and released with it, even if a migration fails.
            // Polled with short statements, never waited for inside one: a migration that
            // builds an index CONCURRENTLY waits for every open transaction to end, so one
            // replica blocked in `pg_advisory_lock` would deadlock with the one migrating.
            #[derive(diesel::QueryableByName)]
            struct Locked {
                #[diesel(sql_type = diesel::sql_types::Bool)]
                locked: bool,
            }
            while !diesel::RunQueryDsl::get_result::<Locked>(
                diesel::sql_query(format!(
                    "SELECT pg_try_advisory_lock({MIGRATION_LOCK}) AS locked"
                )),
                &mut conn,
            )?
            .locked
            {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            conn.run_pending_migrations(MIGRATIONS)
                .map(|versions| versions.iter().map(ToString::to_string).collect())
                .map_err(|e| StoreError::Migration(e.to_string()))
        })
        .await
        .map_err(|e| StoreError::Migration(format!("migration task failed: {e}")))?
    }

    /// Takes the advisory lock `key` if no other session holds it: `None` when one does.
    pub async fn try_lock(&self, key: i64) -> Result<Option<HeldLock>, StoreError> {
        #[derive(diesel::QueryableByName)]
        struct Locked {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            locked: bool,
        }
        let mut conn = self
            .migrator
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let query = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS locked")
            .bind::<diesel::sql_types::BigInt, _>(key)
            .get_result::<Locked>(&mut conn);
        match tokio::time::timeout(self.deadline, query).await {
            Ok(Ok(Locked { locked: true })) => Ok(Some(HeldLock { _conn: conn })),
            Ok(Ok(Locked { locked: false })) => Ok(None),
            Ok(Err(error)) => Err(error.into()),
            Err(_) => Err(StoreError::NoAnswer(self.deadline)),
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(async |conn| {
            diesel::sql_query("SELECT 1")
                .execute(conn)
                .await
                .map(drop)
                .map_err(StoreError::from)
        })
        .await
    }

    /// Whether this process's connections to the database are encrypted, as the server
    /// sees them (`pg_stat_ssl` of the connection running the query).
    pub async fn connection_is_encrypted(&self) -> Result<bool, StoreError> {
        #[derive(diesel::QueryableByName)]
        struct Ssl {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ssl: bool,
        }
        self.with_connection(async |conn| {
            let row: Ssl =
                diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                    .get_result(conn)
                    .await?;
            Ok(row.ssl)
        })
        .await
    }

    /// Accepted events not yet forwarded: the sum over pending and published chunks.
    pub async fn pending_event_count(&self) -> Result<i64, StoreError> {
        use schema::chunks::dsl::*;
        self.with_connection(async |conn| {
            let total: Option<i64> = chunks
                .filter(
                    state.eq_any([ChunkState::Pending.as_str(), ChunkState::Published.as_str()]),
                )
                .select(diesel::dsl::sum(event_count))
                .first(conn)
                .await?;
            Ok(total.unwrap_or(0))
        })
        .await
    }

    /// Chunks committed but not yet confirmed by the broker.
    pub async fn unpublished_chunk_count(&self) -> Result<i64, StoreError> {
        use schema::chunks::dsl::*;
        self.with_connection(async |conn| {
            Ok(chunks
                .filter(state.eq(ChunkState::Pending.as_str()))
                .count()
                .get_result(conn)
                .await?)
        })
        .await
    }
}

/// `make bench-storage` (scripts/bench-storage.py) runs some of the service's statements
/// through psql, as text copies; these tests keep the copies in step with the statements, so
/// the benchmark measures what the service runs.
#[cfg(test)]
mod bench_statements {
    /// The Python string constant `name` of the bench script, its literal pieces joined.
    fn python_constant(script: &str, name: &str) -> String {
        let start = script
            .find(&format!("\n{name} = "))
            .unwrap_or_else(|| panic!("{name} is not in scripts/bench-storage.py"));
        let rest = &script[start + name.len() + 4..];
        // `NAME = "…"` or `NAME = (` followed by one quoted piece per line and `)`.
        let body = if rest.starts_with('(') {
            &rest[..rest.find("\n)").unwrap_or(rest.len())]
        } else {
            &rest[..rest.find('\n').unwrap_or(rest.len())]
        };
        body.split('"').skip(1).step_by(2).collect()
    }

    /// Whitespace does not matter to PostgreSQL: runs of it become one space, none next to
    /// a parenthesis.
    fn normalized(sql: &str) -> String {
        sql.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace("( ", "(")
            .replace(" )", ")")
    }

    #[test]
    fn the_bench_script_runs_the_services_statements() {
        let script = include_str!("../../../scripts/bench-storage.py");
        for (name, statement) in [
            ("REPLAY_PAGE", crate::delivery::REPLAY_PAGE),
            ("PENDING_BY_TENANT", crate::trace::PENDING_BY_TENANT),
            ("UNFINISHED_CHUNKS", crate::partitions::UNFINISHED_CHUNKS),
            ("PURGE_CHUNKS", crate::partitions::PURGE_CHUNKS),
            ("EXPIRE_KEYS", crate::partitions::EXPIRE_KEYS),
        ] {
            assert_eq!(
                normalized(&python_constant(script, name)),
                normalized(statement),
                "scripts/bench-storage.py's {name} differs from the service's statement"
            );
        }
    }

    #[test]
    fn python_constants_are_read_whole() {
        let script = "x\nA = \"one\"\nB = (\n    \"two \"\n    \"three\"\n)\n";
        assert_eq!(python_constant(script, "A"), "one");
        assert_eq!(python_constant(script, "B"), "two three");
        assert_eq!(normalized("a (\n  b )\tc"), "a (b) c");
    }
}
