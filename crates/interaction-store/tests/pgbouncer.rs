//! The store behind PgBouncer in transaction pooling (`DATABASE_POOLER=transaction`): a
//! PgBouncer of the test's own (Debian's package; `make services` installs it) on a free port
//! in front of the test's database, with two server connections for eight client ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A list of position ranges, where one range is as normal as several.
#![allow(clippy::single_range_in_vec_init)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::DateTime;
use interaction_core::{Device, Event, Interaction, InteractionType, Setting};
use interaction_store::testing::TestDatabase;
use interaction_store::{ClaimLimits, PartOutcome, Pooler, RETENTION_LOCK, Store, StoreConfig};

const PGBOUNCER: &str = "/usr/sbin/pgbouncer";

/// A PgBouncer process, stopped and its files removed when dropped.
struct PgBouncer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// Starts PgBouncer in transaction pooling with `pool_size` server connections per
    /// database, in front of the local PostgreSQL, and waits until it accepts connections.
    /// All of them opened at once and taken in turn (`min_pool_size`, `server_round_robin`):
    /// left to itself PgBouncer keeps giving a light load the one server connection it
    /// used last, and a client's consecutive transactions would never change server
    /// connection — what breaks statements prepared on the previous one.
    fn start(pool_size: u32) -> Self {
        assert!(
            std::path::Path::new(PGBOUNCER).exists(),
            "{PGBOUNCER} is missing: `make services` installs it (apt-get install pgbouncer)"
        );
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("pgbouncer-test-{}-{port}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        // PgBouncer refuses to run as root: as root it switches to `postgres`, which must be
        // able to read its files and write its log.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let config = dir.join("pgbouncer.ini");
        std::fs::write(
            &config,
            format!(
                "[databases]\n* = host=127.0.0.1 port=5432\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
                 default_pool_size = {pool_size}\nmin_pool_size = {pool_size}\n\
                 server_round_robin = 1\nmax_client_conn = 100\n\
                 ignore_startup_parameters = extra_float_digits\n\
                 logfile = {log}\npidfile = {pid}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .unwrap();
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").unwrap();
        for file in ["pgbouncer.ini", "users.txt"] {
            std::fs::set_permissions(dir.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.trim_ascii() == b"0")
            .unwrap_or(false);
        let mut command = Command::new(PGBOUNCER);
        if root {
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer");
        let bouncer = Self { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 10 s: {}",
                std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn event(n: usize, event_id: Option<String>) -> Event {
    Event {
        interaction: Interaction {
            timestamp: DateTime::parse_from_rfc3339("2025-07-09T10:15:00Z")
                .unwrap()
                .to_utc(),
            subscriber: format!("user_{n}"),
            asset_id: format!("asset_{}", n % 97),
            interaction: InteractionType::ALL[n % InteractionType::ALL.len()],
            rating_equivalent: 0.5,
            comment: None,
            context_id: None,
            setting: Setting {
                device: Device::ALL[n % 3],
            },
        },
        event_id,
        original_timestamp: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_pgbouncer_in_transaction_pooling_every_operation_works_on_two_server_connections() {
    let (db, direct) = TestDatabase::migrated().await;
    drop(direct);
    let bouncer = PgBouncer::start(2);
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/{}?sslmode=disable",
        bouncer.port, db.name
    );
    let store = Store::new(&StoreConfig {
        max_connections: 8,
        pooler: Pooler::Transaction,
        direct_url: Some(db.url.clone().into()),
        ..StoreConfig::new(url)
    })
    .unwrap();
    // Migrations and the partition upkeep: through the direct URL and the pooler.
    assert!(store.migrate().await.unwrap().is_empty());

    // Eight writers at once over two server connections, every statement prepared again on
    // whichever server connection the transaction got: 8 × 40 chunks of 10 keyed events, each
    // chunk repeating an event of the one before (a client's retry).
    const WRITERS: usize = 8;
    const CHUNKS: usize = 40;
    let writers = (0..WRITERS).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut inserted = 0;
            for c in 0..CHUNKS {
                let base = (w * CHUNKS + c) * 10;
                let mut events: Vec<Event> = (base..base + 10)
                    .map(|n| event(n, Some(format!("e{n}"))))
                    .collect();
                if c > 0 {
                    events.push(event(base - 1, Some(format!("e{}", base - 1))));
                }
                let result = store
                    .insert_chunks(&[("t", events.iter().collect())])
                    .await
                    .unwrap_or_else(|e| panic!("writer {w}, chunk {c}: {e}"));
                inserted += result[0].inserted;
            }
            inserted
        })
    });
    let mut inserted = 0;
    for writer in writers {
        inserted += writer.await.unwrap();
    }
    assert_eq!(
        inserted,
        (WRITERS * CHUNKS * 10) as i64,
        "each retry a duplicate"
    );
    assert_eq!(
        store.pending_event_count().await.unwrap(),
        (WRITERS * CHUNKS * 10) as i64
    );

    // The relay's claim, an outcome, a trace and the retention lock, through the pooler.
    let claimed = store
        .claim_unpublished(
            Duration::ZERO,
            Duration::from_secs(60),
            ClaimLimits {
                chunks: 5,
                bytes: i64::MAX,
            },
        )
        .await
        .unwrap();
    assert_eq!(claimed.chunks.len(), 5);
    let first = &claimed.chunks[0];
    let delivered = u32::try_from(first.events.len()).unwrap();
    store
        .record_outcome(
            first.chunk_id,
            "t",
            &PartOutcome {
                delivered: vec![0..delivered],
                refused: vec![],
            },
        )
        .await
        .unwrap();
    let trace = store.trace_event("t", "e0").await.unwrap().expect("traced");
    assert_eq!(trace.chunk_id, first.chunk_id);
    let lock = store.try_lock(RETENTION_LOCK).await.unwrap().expect("free");
    assert!(store.try_lock(RETENTION_LOCK).await.unwrap().is_none());
    drop(lock);

    // However many client connections the store held, the database saw two (the lock's
    // direct session has closed).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sessions = db.sessions().await;
        if sessions.total <= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{sessions:?}: more server sessions than PgBouncer's pool of two"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
