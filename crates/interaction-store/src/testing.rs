//! A throw-away database per test: created with a unique name, migrated, and dropped again
//! when the guard goes out of scope, so tests run in parallel on the machine's shared server.
#![allow(clippy::expect_used)] // test support: a failure to set up is a failed test

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::{Store, StoreConfig};

/// The server tests use: `TEST_DATABASE_URL`, or the local PostgreSQL's `postgres` database.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database that exists for as long as this value does.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its name.
    pub name: String,
    /// A URL to connect to it.
    pub url: String,
}

impl TestDatabase {
    /// Creates an empty database (no migrations applied).
    pub async fn create() -> Self {
        let admin = admin_url();
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = AsyncPgConnection::establish(&admin)
            .await
            .expect("connect to the test PostgreSQL server (is it running? `make services`)");
        diesel::sql_query(format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let (base, _) = admin.rsplit_once('/').expect("a database URL");
        let url = format!("{base}/{name}");
        Self { name, url }
    }

    /// Creates a database with the migrations named before `first_left_out` (a folder name
    /// prefix such as `2026-11-30-000060`) applied: the schema of an earlier release, to fill
    /// with rows and then migrate (tests of a migration on a database holding data).
    pub async fn migrated_before(first_left_out: &str) -> Self {
        use diesel::migration::{MigrationConnection, MigrationSource};
        use diesel_migrations::MigrationHarness;
        let db = Self::create().await;
        let conn = AsyncPgConnection::establish(&db.url)
            .await
            .expect("connect to the test database");
        let first_left_out = first_left_out.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut conn = diesel_async::async_connection_wrapper::AsyncConnectionWrapper::<
                AsyncPgConnection,
            >::from(conn);
            conn.setup().expect("create the migrations table");
            let mut migrations = MigrationSource::<diesel::pg::Pg>::migrations(&crate::MIGRATIONS)
                .expect("the migrations");
            migrations.sort_by_key(|m| m.name().to_string());
            for migration in migrations {
                if migration.name().to_string().as_str() < first_left_out.as_str() {
                    conn.run_migration(&migration)
                        .expect("apply an earlier migration");
                }
            }
        })
        .await
        .expect("the migration task");
        db
    }

    /// Creates a database, applies the migrations, and returns it with a store on it.
    pub async fn migrated() -> (Self, Store) {
        let db = Self::create().await;
        let store = Store::new(&StoreConfig::new(db.url.clone())).expect("build the pool");
        store.migrate().await.expect("apply migrations");
        (db, store)
    }
}

impl TestDatabase {
    /// Runs one SQL statement on this database and returns the rows it affected. For states
    /// the service never produces itself: a row edited by hand, timestamps hours old.
    pub async fn execute(&self, sql: &str) -> usize {
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to the test database");
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Runs a query of one text column named `value` and returns its values in order, e.g.
    /// `SELECT event_id AS value FROM events`: what a black-box test checks was stored.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            value: String,
        }
        let mut conn = AsyncPgConnection::establish(&self.url)
            .await
            .expect("connect to the test database");
        diesel::sql_query(sql)
            .load::<Row>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .into_iter()
            .map(|row| row.value)
            .collect()
    }
}

impl TestDatabase {
    /// Moves a chunk back in time by `days`: its row's `created_at`, its events'
    /// `received_at` (into that day's partition, created first if missing: the rows move
    /// there) and its idempotency keys' — as if it had been received that long ago.
    pub async fn age_chunk(&self, chunk_id: i64, days: i64) {
        let shift = format!("interval '{days} days'");
        self.execute(&format!(
            "SELECT events_create_partition((min(received_at) - {shift})::date)
             FROM events WHERE chunk_id = {chunk_id}"
        ))
        .await;
        for sql in [
            format!(
                "UPDATE events SET received_at = received_at - {shift} WHERE chunk_id = {chunk_id}"
            ),
            format!("UPDATE chunks SET created_at = created_at - {shift} WHERE id = {chunk_id}"),
            format!(
                "UPDATE event_keys SET received_at = received_at - {shift} WHERE chunk_id = {chunk_id}"
            ),
        ] {
            self.execute(&sql).await;
        }
    }
}

/// The trace statements, by name, with the indexes each may use (one of them): for tests that
/// check their plans with `EXPLAIN` (`$1`… are their parameters; see `trace.rs`).
pub fn trace_statements() -> [(&'static str, &'static str, &'static [&'static str]); 2] {
    [
        (
            "by eventId",
            crate::trace::TRACE_BY_EVENT_ID,
            &["event_keys_pkey"],
        ),
        (
            "by subscriber",
            crate::trace::TRACE_BY_SUBSCRIBER,
            // A partition's BRIN (`events_pYYYYMMDD_received`) or its replay index
            // (`…_tenant_received`): on a few rows they cost the same.
            &["_received"],
        ),
    ]
}

/// Sessions connected to a test database, as the server sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sessions {
    /// Client backends connected to the database.
    pub total: i64,
    /// Those whose connection is encrypted (`pg_stat_ssl.ssl`).
    pub encrypted: i64,
}

impl TestDatabase {
    /// How many sessions the services hold on this database, and how many are encrypted.
    pub async fn sessions(&self) -> Sessions {
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            total: i64,
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            encrypted: i64,
        }
        let mut conn = AsyncPgConnection::establish(&admin_url())
            .await
            .expect("connect to the test PostgreSQL server");
        let row: Row = diesel::sql_query(
            "SELECT count(*) AS total, count(*) FILTER (WHERE s.ssl) AS encrypted
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
             WHERE a.datname = $1 AND a.backend_type = 'client backend'",
        )
        .bind::<diesel::sql_types::Text, _>(&self.name)
        .get_result(&mut conn)
        .await
        .expect("read pg_stat_ssl");
        Sessions {
            total: row.total,
            encrypted: row.encrypted,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any async context we could await in; use a thread with its own
        // runtime. FORCE ends the connections pools still hold.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = AsyncPgConnection::establish(&admin_url()).await.ok()?;
                diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            log::warn!("could not drop test database {}", self.name);
        }
    }
}

/// One row of `pg_prepared_statements`.
#[derive(diesel::QueryableByName)]
struct PreparedRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    statement: String,
}

impl Store {
    /// The statements prepared (named, kept) on the pooled connection this call gets — with a
    /// pool of one, the connection every operation of the store uses.
    pub async fn prepared_statements(&self) -> Result<Vec<String>, crate::StoreError> {
        self.with_connection(async |conn| {
            let rows: Vec<PreparedRow> =
                diesel::sql_query("SELECT statement FROM pg_prepared_statements")
                    .load(conn)
                    .await?;
            Ok(rows.into_iter().map(|row| row.statement).collect())
        })
        .await
    }
}
