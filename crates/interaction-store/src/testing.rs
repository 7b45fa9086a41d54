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
}

/// The trace statements, by name, with the indexes each may use (one of them): for tests that
/// check their plans with `EXPLAIN` (`$1`… are their parameters; see `trace.rs`).
pub fn trace_statements() -> [(&'static str, &'static str, &'static [&'static str]); 2] {
    [
        (
            "by eventId",
            crate::trace::TRACE_BY_EVENT_ID,
            // On a table of a few rows the tenant's range of the replay index costs the same
            // as the unique index; on a large one the unique index wins (trace.rs).
            &["events_tenant_event_id", "events_tenant_received"],
        ),
        (
            "by subscriber",
            crate::trace::TRACE_BY_SUBSCRIBER,
            &["events_received_brin", "events_tenant_received"],
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
