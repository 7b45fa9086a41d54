//! interaction-store against the real PostgreSQL: each test in its own database.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Lists of position ranges, where one range is as normal as several.
#![allow(clippy::single_range_in_vec_init)]

use std::time::{Duration, Instant};

use chrono::DateTime;
use interaction_core::{Device, Event, Interaction, InteractionType, Setting};
use interaction_store::testing::TestDatabase;
use interaction_store::{
    ChunkState, ClaimLimits, EventStatus, Failure, PartOutcome, Store, StoreConfig,
    estimated_chunk_bytes,
};

/// At most `n` chunks, any size.
fn chunks(n: i64) -> ClaimLimits {
    ClaimLimits {
        chunks: n,
        bytes: i64::MAX,
    }
}

/// Writes `events` as one chunk of tenant `t` and returns its id.
async fn insert(store: &Store, events: &[Event]) -> i64 {
    store
        .insert_chunks(&[("t", events.iter().collect())])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap()
}

/// Positions of events in a chunk.
type Positions = std::ops::Range<u32>;

fn event(n: usize, event_id: Option<&str>) -> Event {
    Event {
        interaction: Interaction {
            timestamp: DateTime::parse_from_rfc3339("2025-07-09T10:15:00.123456Z")
                .unwrap()
                .to_utc()
                + chrono::TimeDelta::seconds(n as i64),
            subscriber: format!("user_{n}"),
            asset_id: format!("asset_{n}"),
            interaction: InteractionType::ALL[n % InteractionType::ALL.len()],
            rating_equivalent: -1.0 + (n % 9) as f64 * 0.25,
            comment: n.is_multiple_of(2).then(|| format!("comment\nline {n} ✓")),
            context_id: n.is_multiple_of(3).then(|| "ctx".to_owned()),
            setting: Setting {
                device: Device::ALL[n % 3],
            },
        },
        event_id: event_id.map(str::to_owned),
        original_timestamp: None,
    }
}

/// How many migrations the crate ships (one folder each).
fn migration_count() -> usize {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|entry| entry.as_ref().unwrap().path().join("up.sql").exists())
        .count()
}

#[tokio::test]
async fn migrations_apply_once_and_then_have_nothing_to_do() {
    let db = TestDatabase::create().await;
    let store = Store::new(&StoreConfig::new(db.url.clone())).unwrap();
    let applied = store.migrate().await.unwrap();
    assert_eq!(applied.len(), migration_count(), "{applied:?}");
    assert!(store.migrate().await.unwrap().is_empty());
    assert_eq!(store.pending_event_count().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_take_turns_and_apply_once() {
    let db = TestDatabase::create().await;
    let stores: Vec<Store> = (0..4)
        .map(|_| Store::new(&StoreConfig::new(db.url.clone())).unwrap())
        .collect();
    let runs = stores.iter().map(|s| s.migrate());
    let results = futures_util::future::join_all(runs).await;
    let applied: usize = results.into_iter().map(|r| r.unwrap().len()).sum();
    assert_eq!(
        applied,
        migration_count(),
        "each migration applied exactly once"
    );
}

#[tokio::test]
async fn a_chunk_is_stored_exactly_and_counts_as_pending() {
    let (_db, store) = TestDatabase::migrated().await;
    let events: Vec<Event> = (0..10).map(|n| event(n, None)).collect();
    let refs: Vec<&Event> = events.iter().collect();
    let result = store.insert_chunks(&[("acme", refs)]).await.unwrap();
    assert_eq!(result.len(), 1);
    assert_eq!(result[0].inserted, 10);
    let chunk_id = result[0].chunk_id.expect("a chunk");
    assert!(result[0].inserted_ids.is_empty());

    let rows = store.chunk_events(chunk_id).await.unwrap();
    let back: Vec<Event> = rows.iter().map(|r| r.to_event().unwrap()).collect();
    assert_eq!(
        back, events,
        "every field, including sub-second timestamps and unicode"
    );
    assert!(
        rows.iter()
            .all(|r| r.tenant == "acme" && r.chunk_id == chunk_id)
    );
    assert_eq!(
        store.chunk_state(chunk_id).await.unwrap(),
        Some(ChunkState::Pending)
    );
    assert_eq!(store.pending_event_count().await.unwrap(), 10);
    assert_eq!(store.unpublished_chunk_count().await.unwrap(), 1);
}

#[tokio::test]
async fn the_chunk_insert_is_prepared_once_per_connection_and_reused() {
    let (db, _) = TestDatabase::migrated().await;
    let mut config = StoreConfig::new(db.url.clone());
    config.max_connections = 1;
    let store = Store::new(&config).unwrap();
    for n in 0..3 {
        insert(&store, &[event(n, None)]).await;
    }
    let inserts: Vec<String> = store
        .prepared_statements()
        .await
        .unwrap()
        .into_iter()
        .filter(|statement| statement.contains("INSERT INTO events"))
        .collect();
    // Parsed and planned once, then only bound and executed: one round trip per write.
    assert_eq!(inserts.len(), 1, "{inserts:?}");
}

#[tokio::test]
async fn event_ids_are_unique_per_tenant_across_and_within_chunks() {
    let (_db, store) = TestDatabase::migrated().await;
    let first = [event(1, Some("a")), event(2, Some("b")), event(3, None)];
    let r = store
        .insert_chunks(&[("acme", first.iter().collect())])
        .await
        .unwrap();
    assert_eq!(r[0].inserted, 3);
    let mut ids = r[0].inserted_ids.clone();
    ids.sort();
    assert_eq!(ids, ["a", "b"]);

    // "a" again (stored), "c" twice (within the chunk), no id twice (never a duplicate),
    // and "a" for another tenant (a different key space).
    let second = [
        event(4, Some("a")),
        event(5, Some("c")),
        event(6, Some("c")),
        event(7, None),
        event(8, None),
    ];
    let other = [event(9, Some("a"))];
    let r = store
        .insert_chunks(&[
            ("acme", second.iter().collect()),
            ("globex", other.iter().collect()),
        ])
        .await
        .unwrap();
    assert_eq!(
        (r[0].inserted, r[0].inserted_ids.clone()),
        (3, vec!["c".to_owned()])
    );
    assert_eq!(
        (r[1].inserted, r[1].inserted_ids.clone()),
        (1, vec!["a".to_owned()])
    );
    let rows = store.chunk_events(r[0].chunk_id.unwrap()).await.unwrap();
    assert_eq!(
        rows[0].subscriber, "user_5",
        "the first of the repeated ids is kept"
    );
    assert_eq!(store.pending_event_count().await.unwrap(), 3 + 3 + 1);
}

#[tokio::test]
async fn a_chunk_of_only_duplicates_writes_no_chunk() {
    let (_db, store) = TestDatabase::migrated().await;
    let once = [event(1, Some("x"))];
    store
        .insert_chunks(&[("t", once.iter().collect())])
        .await
        .unwrap();
    let r = store
        .insert_chunks(&[("t", once.iter().collect())])
        .await
        .unwrap();
    assert_eq!((r[0].chunk_id, r[0].inserted), (None, 0));
    assert_eq!(store.unpublished_chunk_count().await.unwrap(), 1);
}

#[tokio::test]
async fn a_thousand_events_with_long_fields_fit_one_statement() {
    let (_db, store) = TestDatabase::migrated().await;
    let events: Vec<Event> = (0..1000)
        .map(|n| {
            let mut e = event(n, Some(&format!("id-{n:0>120}")));
            e.interaction.comment = Some("c".repeat(1024));
            e.interaction.subscriber = "s".repeat(256);
            e
        })
        .collect();
    let r = store
        .insert_chunks(&[("big", events.iter().collect())])
        .await
        .unwrap();
    assert_eq!(r[0].inserted, 1000);
    assert_eq!(
        store
            .chunk_events(r[0].chunk_id.unwrap())
            .await
            .unwrap()
            .len(),
        1000
    );
}

#[tokio::test]
async fn a_failed_group_rolls_back_the_whole_transaction() {
    let (_db, store) = TestDatabase::migrated().await;
    let good = [event(1, None)];
    let empty: Vec<&Event> = Vec::new();
    // An empty group writes no chunk but is no error; a NUL byte in text is refused by
    // PostgreSQL and must undo the first group too.
    let mut bad = event(2, None);
    bad.interaction.subscriber = "nul\0byte".to_owned();
    let result = store
        .insert_chunks(&[
            ("t", good.iter().collect()),
            ("t", empty),
            ("t", vec![&bad]),
        ])
        .await;
    assert!(result.is_err());
    assert_eq!(store.pending_event_count().await.unwrap(), 0);
}

#[tokio::test]
async fn the_relay_claims_old_unpublished_chunks_once_per_lease() {
    let (_db, store) = TestDatabase::migrated().await;
    let events = [event(1, None), event(2, Some("k"))];
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = store
            .insert_chunks(&[("t", events.iter().collect())])
            .await
            .unwrap();
        ids.push(r[0].chunk_id.unwrap());
    }
    // Too young to claim.
    let young = store
        .claim_unpublished(Duration::from_secs(60), Duration::from_secs(30), chunks(10))
        .await
        .unwrap()
        .chunks;
    assert!(young.is_empty());

    store.mark_published(&ids[1..2]).await.unwrap();
    let claimed = store
        .claim_unpublished(Duration::ZERO, Duration::from_secs(30), chunks(10))
        .await
        .unwrap()
        .chunks;
    let claimed_ids: Vec<i64> = claimed.iter().map(|c| c.chunk_id).collect();
    assert_eq!(claimed_ids, [ids[0], ids[2]]);
    assert_eq!(claimed[0].tenant, "t");
    assert_eq!(claimed[0].events, events.to_vec());

    // Leased: nobody else gets them until the lease passes.
    let again = store
        .claim_unpublished(Duration::ZERO, Duration::from_secs(30), chunks(10))
        .await
        .unwrap()
        .chunks;
    assert!(again.is_empty());

    // A short lease expires and the chunk can be claimed again (the relay crashed).
    store.mark_published(&ids[..1]).await.unwrap();
    let r = store
        .insert_chunks(&[("t", vec![&events[0]])])
        .await
        .unwrap();
    let short = store
        .claim_unpublished(Duration::ZERO, Duration::from_millis(1), chunks(10))
        .await
        .unwrap()
        .chunks;
    assert_eq!(short.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reclaimed = store
        .claim_unpublished(Duration::ZERO, Duration::from_secs(30), chunks(10))
        .await
        .unwrap()
        .chunks;
    let reclaimed_ids: Vec<i64> = reclaimed.iter().map(|c| c.chunk_id).collect();
    assert_eq!(reclaimed_ids, [r[0].chunk_id.unwrap()]);

    // Published chunks are still pending forwarding. Event "k" was stored once only.
    assert_eq!(store.pending_event_count().await.unwrap(), 2 + 1 + 1 + 1);
}

#[tokio::test]
async fn concurrent_relays_never_claim_the_same_chunk() {
    let (_db, store) = TestDatabase::migrated().await;
    let events = [event(1, None)];
    for _ in 0..40 {
        store
            .insert_chunks(&[("t", events.iter().collect())])
            .await
            .unwrap();
    }
    let claim = || {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_unpublished(Duration::ZERO, Duration::from_secs(60), chunks(3))
                    .await
                    .unwrap()
                    .chunks;
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|c| c.chunk_id));
            }
        })
    };
    let (a, b) = (claim(), claim());
    let (mut a, b) = (a.await.unwrap(), b.await.unwrap());
    a.extend(b);
    let total = a.len();
    a.sort();
    a.dedup();
    assert_eq!((total, a.len()), (40, 40));
}

#[tokio::test]
async fn a_claim_takes_the_oldest_chunks_whose_estimated_bytes_fit_and_always_one() {
    let (db, store) = TestDatabase::migrated().await;
    let sizes = [3, 1, 2, 5];
    let mut written = Vec::new();
    for (n, size) in sizes.into_iter().enumerate() {
        let events: Vec<Event> = (0..size).map(|i| event(n * 10 + i, None)).collect();
        written.push((insert(&store, &events).await, events));
    }
    // Creation order decides, not ids: make chunk 0 the youngest.
    db.execute(&format!(
        "UPDATE chunks SET created_at = created_at - interval '1 hour' WHERE id <> {}",
        written[0].0
    ))
    .await;
    let (ids, bytes): (Vec<i64>, Vec<i64>) = written
        .iter()
        .map(|(id, events)| (*id, estimated_chunk_bytes(events) as i64))
        .unzip();

    // (byte budget, chunk cap, what is claimed): the SQL estimate must equal the Rust one to
    // the byte, or the exact budgets below take one chunk more or less.
    let cases = [
        (bytes[1] + bytes[2], 10, vec![ids[1], ids[2]]),
        (bytes[1] + bytes[2] - 1, 10, vec![ids[1]]),
        (1, 10, vec![ids[1]]),
        (i64::MAX, 2, vec![ids[1], ids[2]]),
        (i64::MAX, 10, vec![ids[1], ids[2], ids[3], ids[0]]),
    ];
    for (budget, cap, want) in cases {
        let claimed = store
            .claim_unpublished(
                Duration::ZERO,
                Duration::from_secs(60),
                ClaimLimits {
                    chunks: cap,
                    bytes: budget,
                },
            )
            .await
            .unwrap();
        let got: Vec<i64> = claimed.chunks.iter().map(|c| c.chunk_id).collect();
        let mut want = want;
        want.sort();
        assert_eq!(got, want, "budget {budget}, cap {cap}");
        // Give them back for the next case.
        db.execute("UPDATE chunks SET leased_until = NULL").await;
    }
}

#[tokio::test]
async fn a_chunk_with_an_unreadable_row_is_reported_apart_and_the_others_are_claimed() {
    let (db, store) = TestDatabase::migrated().await;
    let good_before = insert(&store, &[event(1, None)]).await;
    let bad = insert(&store, &[event(2, None), event(3, None)]).await;
    let good_after = insert(&store, &[event(4, None)]).await;
    db.execute(&format!(
        "UPDATE events SET device = 'toaster' WHERE chunk_id = {bad} AND subscriber = 'user_3'"
    ))
    .await;

    let claimed = store
        .claim_unpublished(Duration::ZERO, Duration::from_secs(60), chunks(10))
        .await
        .unwrap();
    let ids: Vec<i64> = claimed.chunks.iter().map(|c| c.chunk_id).collect();
    assert_eq!(ids, [good_before, good_after]);
    assert_eq!(claimed.unreadable.len(), 1);
    let unreadable = &claimed.unreadable[0];
    assert_eq!(
        (unreadable.chunk_id, unreadable.tenant.as_str()),
        (bad, "t")
    );
    assert!(
        unreadable.reason.contains("unknown device \"toaster\""),
        "{}",
        unreadable.reason
    );

    // Leased far ahead, it stays pending (counted) and out of every claim until then.
    store
        .extend_lease(&[bad], Duration::from_secs(3600))
        .await
        .unwrap();
    db.execute(&format!(
        "UPDATE chunks SET leased_until = NULL WHERE id <> {bad}"
    ))
    .await;
    let again = store
        .claim_unpublished(Duration::ZERO, Duration::from_secs(60), chunks(10))
        .await
        .unwrap();
    let ids: Vec<i64> = again.chunks.iter().map(|c| c.chunk_id).collect();
    assert_eq!(ids, [good_before, good_after]);
    assert!(again.unreadable.is_empty());
    assert_eq!(store.unpublished_chunk_count().await.unwrap(), 3);
    assert_eq!(store.pending_event_count().await.unwrap(), 4);
}

#[tokio::test]
async fn the_reconciler_claims_chunks_published_long_ago_and_never_finished() {
    let (db, store) = TestDatabase::migrated().await;
    let events = [event(1, None), event(2, None)];
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(insert(&store, &events).await);
    }
    store.mark_published(&ids[..4]).await.unwrap();
    // (chunk, written, last published): hours ago, by the database's clock.
    let ages = [(0, 3, 2), (1, 5, 2), (2, 3, 2), (3, 1, 0)];
    for (n, created, published) in ages {
        db.execute(&format!(
            "UPDATE chunks SET created_at = now() - interval '{created} hours',
                               published_at = now() - interval '{published} hours'
             WHERE id = {}",
            ids[n]
        ))
        .await;
    }
    // Both events of chunk 2 delivered: it is forwarded, and finished.
    let whole = PartOutcome {
        delivered: vec![0..2],
        refused: Vec::new(),
    };
    assert_eq!(
        store.record_outcome(ids[2], "t", &whole).await.unwrap(),
        Some(ChunkState::Forwarded)
    );

    let claimed = store
        .claim_unfinished(
            Duration::from_secs(30 * 60),
            Duration::from_secs(60),
            chunks(10),
        )
        .await
        .unwrap();
    // 0: published 2 h ago, 1 h after it was written: due. 1: published 2 h ago but 3 h
    // after it was written — its wait doubled: not yet. 2: forwarded. 3: published just now.
    // 4: never published (the relay's).
    let claimed_ids: Vec<i64> = claimed.chunks.iter().map(|c| c.chunk_id).collect();
    assert_eq!(claimed_ids, [ids[0]]);
    let chunk = &claimed.chunks[0];
    assert_eq!(chunk.events, events.to_vec());
    let age = chunk.age.as_secs_f64() / 3600.0;
    assert!((1.99..2.01).contains(&age), "age {age} h since the publish");

    // Leased: not claimed twice.
    let again = store
        .claim_unfinished(
            Duration::from_secs(30 * 60),
            Duration::from_secs(60),
            chunks(10),
        )
        .await
        .unwrap();
    assert!(again.chunks.is_empty());

    // Re-published: its wait starts again.
    assert_eq!(store.mark_republished(&[ids[0], ids[2]]).await.unwrap(), 1);
    db.execute("UPDATE chunks SET leased_until = NULL").await;
    let after = store
        .claim_unfinished(
            Duration::from_secs(30 * 60),
            Duration::from_secs(60),
            chunks(10),
        )
        .await
        .unwrap();
    assert!(after.chunks.is_empty(), "{after:?}");
    assert_eq!(
        store.chunk_state(ids[2]).await.unwrap(),
        Some(ChunkState::Forwarded)
    );
}

#[tokio::test]
async fn an_unreachable_database_is_reported_as_unavailable_quickly() {
    let mut config = StoreConfig::new("postgres://postgres@127.0.0.1:1/nowhere");
    config.acquire_timeout = Duration::from_millis(500);
    let store = Store::new(&config).unwrap();
    let started = Instant::now();
    let error = store
        .insert_chunks(&[("t", vec![&event(1, None)])])
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(store.ping().await.unwrap_err().is_unavailable());
    assert!(
        !format!("{store:?}").contains("127.0.0.1"),
        "no URL in Debug output"
    );
}

/// Everything delivered: what a message that reached Ncanto whole records.
fn all_delivered(n: u32) -> PartOutcome<'static> {
    PartOutcome {
        delivered: vec![0..n],
        refused: Vec::new(),
    }
}

#[tokio::test]
async fn forwarded_chunks_leave_the_pending_count_and_recording_twice_changes_nothing() {
    let (_db, store) = TestDatabase::migrated().await;
    let events = [event(1, None), event(2, None)];
    let id = store
        .insert_chunks(&[("t", events.iter().collect())])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    store.mark_published(&[id]).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            store
                .record_outcome(id, "t", &all_delivered(2))
                .await
                .unwrap(),
            Some(ChunkState::Forwarded)
        );
    }
    assert_eq!(
        store.chunk_state(id).await.unwrap(),
        Some(ChunkState::Forwarded)
    );
    assert_eq!(store.pending_event_count().await.unwrap(), 0);
    // Confirmed late: a forwarded chunk stays forwarded.
    store.mark_published(&[id]).await.unwrap();
    assert_eq!(
        store.chunk_state(id).await.unwrap(),
        Some(ChunkState::Forwarded)
    );
}

#[tokio::test]
async fn failures_are_recorded_with_their_position_and_reason() {
    let (_db, store) = TestDatabase::migrated().await;
    let events = [event(1, Some("a")), event(2, None)];
    let id = store
        .insert_chunks(&[("t", events.iter().collect())])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    let refused = PartOutcome {
        delivered: vec![1..2],
        refused: vec![Failure {
            position: 0,
            event: &events[0],
            reason: "400: bad asset \0 in the body".into(),
            status: Some(400),
            attempts: Some(1),
        }],
    };
    assert_eq!(
        store.record_outcome(id, "t", &refused).await.unwrap(),
        Some(ChunkState::Failed)
    );
    let rows = store.failures(id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].position, rows[0].status, rows[0].tenant.as_str()),
        (Some(0), Some(400), "t")
    );
    assert_eq!(
        rows[0].reason, "400: bad asset \u{fffd} in the body",
        "NUL cannot be stored"
    );
    let back: Event = serde_json::from_str(&rows[0].event).unwrap();
    assert_eq!(back, events[0]);
    // Failed chunks are not pending: they wait for an operator, not for the forwarder.
    assert_eq!(store.pending_event_count().await.unwrap(), 0);
}

#[tokio::test]
async fn a_chunk_that_does_not_exist_has_nothing_done_and_its_failures_are_kept() {
    let (_db, store) = TestDatabase::migrated().await;
    let event = event(1, None);
    assert_eq!(
        store.undone_positions(404, &[0..3], false).await.unwrap(),
        None
    );
    let outcome = PartOutcome {
        delivered: vec![0..1],
        refused: vec![Failure {
            position: 1,
            event: &event,
            reason: "refused".into(),
            status: Some(422),
            attempts: Some(1),
        }],
    };
    assert_eq!(
        store.record_outcome(404, "t", &outcome).await.unwrap(),
        None
    );
    assert_eq!(store.failures(404).await.unwrap().len(), 1);
    assert_eq!(store.chunk_parts(404).await.unwrap(), None);
}

/// One message's outcome in a bookkeeping scenario.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A message delivered these positions.
    Delivered(&'static [Positions]),
    /// These positions were refused.
    Refused(&'static [u32]),
}

/// Outcomes of a chunk in some order, and what must follow from them.
struct Scenario {
    name: &'static str,
    steps: &'static [Step],
    /// The chunk's state after.
    state: ChunkState,
    /// Positions left for an ordinary message carrying the whole chunk.
    left: &'static [Positions],
    /// Positions left for a re-drive of the whole chunk.
    left_redriven: &'static [Positions],
    /// Failure rows.
    failures: usize,
}

#[tokio::test]
async fn part_outcomes_in_any_order_give_the_chunk_the_state_of_its_events() {
    use Step::{Delivered, Refused};
    // Each scenario: a chunk of 10 events, published, then its outcomes in order.
    let table = &[
        Scenario {
            name: "nothing yet",
            steps: &[],
            state: ChunkState::Published,
            left: &[0..10],
            left_redriven: &[0..10],
            failures: 0,
        },
        Scenario {
            name: "all delivered at once",
            steps: &[Delivered(&[0..10])],
            state: ChunkState::Forwarded,
            left: &[],
            left_redriven: &[],
            failures: 0,
        },
        Scenario {
            name: "part delivered, the rest waits",
            steps: &[Delivered(&[0..4])],
            state: ChunkState::Published,
            left: &[4..10],
            left_redriven: &[4..10],
            failures: 0,
        },
        Scenario {
            name: "some refused, the rest delivered",
            steps: &[Delivered(&[0..3, 4..10]), Refused(&[3])],
            state: ChunkState::Failed,
            left: &[],
            left_redriven: &[3..4],
            failures: 1,
        },
        Scenario {
            // The lost-event bug: the re-drive of the parked part succeeds while the retried
            // part still waits in a retry queue. The chunk must NOT be done.
            name: "re-drive delivered while the retried part waits",
            steps: &[Delivered(&[0..3]), Refused(&[3]), Delivered(&[3..4])],
            state: ChunkState::Published,
            left: &[4..10],
            left_redriven: &[4..10],
            failures: 1,
        },
        Scenario {
            name: "re-drive first, then the retried part",
            steps: &[
                Delivered(&[0..3]),
                Refused(&[3]),
                Delivered(&[3..4]),
                Delivered(&[4..10]),
            ],
            state: ChunkState::Forwarded,
            left: &[],
            left_redriven: &[],
            failures: 1,
        },
        Scenario {
            name: "retried part first, then the re-drive",
            steps: &[
                Delivered(&[0..3]),
                Refused(&[3]),
                Delivered(&[4..10]),
                Delivered(&[3..4]),
            ],
            state: ChunkState::Forwarded,
            left: &[],
            left_redriven: &[],
            failures: 1,
        },
        Scenario {
            name: "duplicate messages change nothing",
            steps: &[
                Delivered(&[0..5]),
                Delivered(&[0..5]),
                Refused(&[7]),
                Refused(&[7]),
            ],
            state: ChunkState::Published,
            left: &[5..7, 8..10],
            left_redriven: &[5..10],
            failures: 1,
        },
        Scenario {
            name: "refused again by a re-drive: one failure row",
            steps: &[Delivered(&[0..9]), Refused(&[9]), Refused(&[9])],
            state: ChunkState::Failed,
            left: &[],
            left_redriven: &[9..10],
            failures: 1,
        },
        Scenario {
            name: "a delivery after a refusal wins",
            steps: &[Refused(&[2]), Delivered(&[0..10])],
            state: ChunkState::Forwarded,
            left: &[],
            left_redriven: &[],
            failures: 1,
        },
        Scenario {
            name: "a refusal after a delivery changes nothing",
            steps: &[Delivered(&[0..10]), Refused(&[2])],
            state: ChunkState::Forwarded,
            left: &[],
            left_redriven: &[],
            failures: 1,
        },
        Scenario {
            name: "every event refused",
            steps: &[Refused(&[0, 1, 2, 3, 4]), Refused(&[5, 6, 7, 8, 9])],
            state: ChunkState::Failed,
            left: &[],
            left_redriven: &[0..10],
            failures: 10,
        },
        Scenario {
            name: "overlapping deliveries",
            steps: &[Delivered(&[0..6]), Delivered(&[4..10])],
            state: ChunkState::Forwarded,
            left: &[],
            left_redriven: &[],
            failures: 0,
        },
    ];
    let (_db, store) = TestDatabase::migrated().await;
    let events: Vec<Event> = (0..10).map(|n| event(n, None)).collect();
    for Scenario {
        name,
        steps,
        state,
        left: undone,
        left_redriven: undone_redriven,
        failures,
    } in table
    {
        let id = store
            .insert_chunks(&[("t", events.iter().collect())])
            .await
            .unwrap()[0]
            .chunk_id
            .unwrap();
        store.mark_published(&[id]).await.unwrap();
        for step in steps.iter() {
            let outcome = match step {
                Delivered(ranges) => PartOutcome {
                    delivered: ranges.to_vec(),
                    refused: Vec::new(),
                },
                Refused(positions) => PartOutcome {
                    delivered: Vec::new(),
                    refused: positions
                        .iter()
                        .map(|&position| Failure {
                            position,
                            event: &events[position as usize],
                            reason: format!("{name}: refused"),
                            status: Some(400),
                            attempts: None,
                        })
                        .collect(),
                },
            };
            store.record_outcome(id, "t", &outcome).await.unwrap();
        }
        assert_eq!(store.chunk_state(id).await.unwrap(), Some(*state), "{name}");
        assert_eq!(
            store
                .undone_positions(id, &[0..10], false)
                .await
                .unwrap()
                .as_deref(),
            Some(*undone),
            "{name}: left for a message"
        );
        assert_eq!(
            store
                .undone_positions(id, &[0..10], true)
                .await
                .unwrap()
                .as_deref(),
            Some(*undone_redriven),
            "{name}: left for a re-drive"
        );
        assert_eq!(store.failures(id).await.unwrap().len(), *failures, "{name}");
        let parts = store.chunk_parts(id).await.unwrap().unwrap();
        assert_eq!(parts.event_count, 10, "{name}");
        let refused_left: u32 = parts.refused.iter().map(|r| r.len() as u32).sum();
        let delivered: u32 = parts.delivered.iter().map(|r| r.len() as u32).sum();
        assert!(delivered + refused_left <= 10, "{name}: {parts:?}");
        if *state == ChunkState::Forwarded {
            assert_eq!(parts.delivered, [0..10], "{name}");
            assert!(parts.refused.is_empty(), "{name}");
        }
    }
}

#[tokio::test]
async fn a_message_is_skipped_only_when_its_own_part_is_done() {
    let (_db, store) = TestDatabase::migrated().await;
    let events: Vec<Event> = (0..10).map(|n| event(n, None)).collect();
    let id = store
        .insert_chunks(&[("t", events.iter().collect())])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    let refused = PartOutcome {
        delivered: vec![0..3],
        refused: vec![Failure {
            position: 3,
            event: &events[3],
            reason: "no".into(),
            status: Some(400),
            attempts: Some(1),
        }],
    };
    store.record_outcome(id, "t", &refused).await.unwrap();
    // (part, re-driven) → what is left of it.
    let table: [(&[Positions], bool, &[Positions]); 6] = [
        (&[0..3], false, &[]),
        (&[3..4], false, &[]),
        (&[3..4], true, &[3..4]),
        (&[2..5], false, &[4..5]),
        (&[2..5], true, &[3..5]),
        (&[4..6, 8..10], false, &[4..6, 8..10]),
    ];
    for (part, redriven, left) in table {
        assert_eq!(
            store
                .undone_positions(id, part, redriven)
                .await
                .unwrap()
                .as_deref(),
            Some(left),
            "{part:?} redriven={redriven}"
        );
    }
    // Never published (the confirm was lost): progress is kept and the chunk stays pending
    // for the relay, whose re-publish then delivers only the rest.
    assert_eq!(
        store.chunk_state(id).await.unwrap(),
        Some(ChunkState::Pending)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_outcomes_of_one_chunk_all_count() {
    let (_db, store) = TestDatabase::migrated().await;
    let events: Vec<Event> = (0..40).map(|n| event(n, None)).collect();
    let id = store
        .insert_chunks(&[("t", events.iter().collect())])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    let tasks: Vec<_> = (0..40u32)
        .map(|position| {
            let store = store.clone();
            tokio::spawn(async move {
                let outcome = PartOutcome {
                    delivered: vec![position..position + 1],
                    refused: Vec::new(),
                };
                store.record_outcome(id, "t", &outcome).await.unwrap()
            })
        })
        .collect();
    let mut forwarded = 0;
    for task in tasks {
        if task.await.unwrap() == Some(ChunkState::Forwarded) {
            forwarded += 1;
        }
    }
    assert!(forwarded >= 1, "the last outcome finished the chunk");
    let parts = store.chunk_parts(id).await.unwrap().unwrap();
    assert_eq!(
        (parts.state, parts.delivered),
        (ChunkState::Forwarded, vec![0..40])
    );
}

#[tokio::test]
async fn every_chunk_state_is_one_the_database_accepts() {
    let (db, _store) = TestDatabase::migrated().await;
    use diesel_async::{AsyncConnection, RunQueryDsl};
    let mut conn = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    for state in ChunkState::ALL {
        diesel::sql_query("INSERT INTO chunks (tenant, event_count, state) VALUES ('t', 1, $1)")
            .bind::<diesel::sql_types::Text, _>(state.as_str())
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{state}: {e}"));
    }
}

#[tokio::test]
async fn received_events_page_by_tenant_and_time() {
    let (_db, store) = TestDatabase::migrated().await;
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let mine: Vec<Event> = (0..5).map(|n| event(n, None)).collect();
    let theirs = [event(9, None)];
    store
        .insert_chunks(&[
            ("mine", mine.iter().collect()),
            ("theirs", theirs.iter().collect()),
        ])
        .await
        .unwrap();
    let after = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    assert_eq!(
        store
            .count_received("mine", before, after, 0)
            .await
            .unwrap(),
        5
    );
    assert_eq!(
        store.count_received("mine", after, after, 0).await.unwrap(),
        0
    );
    let first = store
        .received_page("mine", before, after, 0, 3)
        .await
        .unwrap();
    let last = first.last().unwrap();
    let rest = store
        .received_page("mine", last.received_at, after, last.id, 3)
        .await
        .unwrap();
    let got: Vec<Event> = first
        .iter()
        .chain(&rest)
        .map(|r| r.to_event().unwrap())
        .collect();
    assert_eq!(got, mine);
}

#[tokio::test]
async fn a_replay_page_is_one_range_of_its_index_and_resumes_after_any_row() {
    let (db, store) = TestDatabase::migrated().await;
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    // 20 tenants of 1,000 events, written in turns: a tenant's rows are spread over the table.
    for round in 0..4 {
        for tenant in 0..20 {
            let events: Vec<Event> = (0..250).map(|n| event(round * 250 + n, None)).collect();
            store
                .insert_chunks(&[(&format!("t{tenant}"), events.iter().collect())])
                .await
                .unwrap();
        }
    }
    // An older day partition: a page of today's window must not read it.
    let old = store
        .insert_chunks(&[("t3", vec![&event(9_999, None)])])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    db.age_chunk(old, 3).await;
    db.execute("ANALYZE events").await;
    let until = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    // Pages much smaller than the tenant's range, as on a large store: read in index order,
    // never gathered and sorted.
    let plan = store.replay_plan("t3", since, until, 50).await.unwrap();
    // The window lies in today's partition: one range of its replay index.
    let index = format!(
        "events_p{}_tenant_received",
        chrono::Utc::now().format("%Y%m%d")
    );
    assert_eq!(plan.index.as_deref(), Some(index.as_str()), "{plan}");
    assert!(
        !plan.nodes.iter().any(|n| n == "Sort" || n == "Seq Scan"),
        "{plan}"
    );
    assert!(
        plan.to_string().contains(&format!("using {index}")),
        "{plan}"
    );
    assert_eq!(
        plan.nodes,
        ["Limit", "Index Scan"],
        "one partition read, no Append over older days: {plan}"
    );
    // Paging by (received_at, id) from any row: every event of the tenant once, in order.
    let mut seen = Vec::new();
    let mut after = (since, 0);
    loop {
        let page = store
            .received_page("t3", after.0, until, after.1, 300)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = (last.received_at, last.id);
        seen.extend(page.iter().map(|r| (r.received_at, r.id)));
    }
    assert_eq!(seen.len(), 1000);
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "strictly in replay order"
    );
    assert_eq!(
        store.count_received("t3", since, until, 0).await.unwrap(),
        1000
    );
    assert_eq!(
        store
            .count_received("t3", seen[399].0, until, seen[399].1)
            .await
            .unwrap(),
        600,
        "a resumed count starts after the row named"
    );
}

/// The day partition holding arrivals `days` before now.
fn partition_of(
    store_partitions: &[interaction_store::Partition],
    days: i64,
) -> interaction_store::Partition {
    let at = chrono::Utc::now() - chrono::TimeDelta::days(days);
    store_partitions
        .iter()
        .find(|p| p.low.is_some_and(|low| low <= at) && p.high.is_some_and(|high| at < high))
        .unwrap_or_else(|| panic!("no partition for {at}: {store_partitions:?}"))
        .clone()
}

#[tokio::test]
async fn retention_drops_whole_days_but_keeps_days_with_undelivered_events() {
    let (db, store) = TestDatabase::migrated().await;
    let chunk = async |n: usize| {
        let events: Vec<Event> = (0..4).map(|i| event(n * 10 + i, None)).collect();
        insert(&store, &events).await
    };
    let (delivered, failed, waiting, recent) = (
        chunk(0).await,
        chunk(1).await,
        chunk(2).await,
        chunk(3).await,
    );
    store
        .record_outcome(delivered, "t", &all_delivered(4))
        .await
        .unwrap();
    store
        .record_outcome(recent, "t", &all_delivered(4))
        .await
        .unwrap();
    let failed_events: Vec<Event> = (0..4).map(|i| event(10 + i, None)).collect();
    let refused = PartOutcome {
        delivered: vec![1..4],
        refused: vec![Failure {
            position: 0,
            event: &failed_events[0],
            reason: "400: no".into(),
            status: Some(400),
            attempts: Some(1),
        }],
    };
    assert_eq!(
        store.record_outcome(failed, "t", &refused).await.unwrap(),
        Some(ChunkState::Failed)
    );
    // Delivered and failed: received 40 days ago; waiting (pending): 41 days ago.
    db.age_chunk(delivered, 40).await;
    db.age_chunk(failed, 40).await;
    db.age_chunk(waiting, 41).await;
    let partitions = store.partitions().await.unwrap();
    let (day40, day41) = (partition_of(&partitions, 40), partition_of(&partitions, 41));
    assert_eq!(
        store.chunk_events(delivered).await.unwrap().len(),
        4,
        "moved, not lost"
    );

    assert_eq!(
        store.drop_partition(&day41).await.unwrap(),
        interaction_store::PartitionRetention::Held {
            unfinished_chunks: 1
        },
        "a day with events still to deliver is kept whole"
    );
    assert_eq!(store.chunk_events(waiting).await.unwrap().len(), 4);
    assert!(matches!(
        store.drop_partition(&day40).await.unwrap(),
        interaction_store::PartitionRetention::Dropped { .. }
    ));
    let left = store.partitions().await.unwrap();
    assert!(!left.contains(&day40) && left.contains(&day41), "{left:?}");
    assert!(store.chunk_events(delivered).await.unwrap().is_empty());
    // The failed chunk's refused event is kept as sent in its failure row (re-drive reads it
    // from there): dropping the day lost nothing of it.
    let failures = store.failures(failed).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Event>(&failures[0].event).unwrap(),
        failed_events[0]
    );

    // The chunk rows of the dropped day go too: forwarded ones only, only there.
    let before = chrono::Utc::now() - chrono::TimeDelta::days(30);
    let mut deleted = 0;
    for (low, high) in interaction_store::uncovered(&left, before) {
        loop {
            let n = store.purge_chunks(low, high, 1).await.unwrap();
            deleted += n;
            if n == 0 {
                break;
            }
        }
    }
    assert_eq!(deleted, 1);
    assert_eq!(store.chunk_state(delivered).await.unwrap(), None);
    assert_eq!(
        store.chunk_state(failed).await.unwrap(),
        Some(ChunkState::Failed)
    );
    assert_eq!(
        store.chunk_state(waiting).await.unwrap(),
        Some(ChunkState::Pending)
    );
    assert_eq!(
        store.chunk_state(recent).await.unwrap(),
        Some(ChunkState::Forwarded)
    );
    assert_eq!(store.chunk_events(recent).await.unwrap().len(), 4);
    // The failure row has a retention of its own; once it is past that, the failed chunk's
    // row goes with the next chunk purge too.
    let now = chrono::Utc::now();
    assert_eq!(
        store
            .purge_failures(now - chrono::TimeDelta::hours(1), 10)
            .await
            .unwrap(),
        0,
        "recorded just now"
    );
    assert_eq!(
        store
            .purge_failures(now + chrono::TimeDelta::minutes(1), 10)
            .await
            .unwrap(),
        1
    );
    let mut again = 0;
    for (low, high) in interaction_store::uncovered(&left, before) {
        again += store.purge_chunks(low, high, 10).await.unwrap();
    }
    assert_eq!(again, 1);
    assert_eq!(store.chunk_state(failed).await.unwrap(), None);
    assert_eq!(store.pending_event_count().await.unwrap(), 4);
    assert_eq!(
        store.partition_status(&day41).await.unwrap().1,
        1,
        "the kept day still waits for its chunk"
    );

    // The default partition must never be dropped (it holds any day without a partition).
    let default = left.iter().find(|p| p.high.is_none()).unwrap();
    assert!(store.drop_partition(default).await.is_err());
}

#[tokio::test]
async fn partitions_are_created_ahead_and_a_day_the_default_partition_holds_is_left_alone() {
    let (db, store) = TestDatabase::migrated().await;
    let today = chrono::Utc::now().date_naive();
    let names: Vec<String> = store
        .partitions()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    for offset in 0..=u64::from(interaction_store::PARTITION_DAYS_AHEAD) {
        let day = today + chrono::Days::new(offset);
        let name = format!("events_p{}", day.format("%Y%m%d"));
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }
    assert!(names.contains(&"events_default".to_owned()));
    assert!(
        !names.contains(&"events_legacy".to_owned()),
        "a new database has no legacy table"
    );
    // Again: nothing to do.
    assert_eq!(
        store.ensure_partitions(today).await.unwrap(),
        interaction_store::PartitionUpkeep::default()
    );

    // A row for a day far ahead (a clock jump) lands in the default partition, not an error…
    let id = insert(&store, &[event(1, Some("far"))]).await;
    let far = today + chrono::Days::new(60);
    db.execute(&format!(
        "INSERT INTO events (chunk_id, tenant, occurred_at, subscriber, asset_id, interaction, \
         rating, device, received_at) VALUES ({id}, 't', now(), 's', 'a', 'play', 1, 'web', \
         '{far}T12:00:00Z')"
    ))
    .await;
    assert_eq!(
        db.execute("SELECT 1 FROM events_default").await,
        1,
        "the row is in the default partition"
    );
    // …and upkeep reaching that day leaves it there (creating it would fail) and says so.
    let upkeep = store
        .ensure_partitions(far - chrono::Days::new(1))
        .await
        .unwrap();
    assert_eq!(upkeep.blocked, vec![far]);
    assert!(upkeep.created.contains(&format!(
        "events_p{}",
        (far - chrono::Days::new(1)).format("%Y%m%d")
    )));
    assert!(upkeep.created.contains(&format!(
        "events_p{}",
        (far + chrono::Days::new(1)).format("%Y%m%d")
    )));
}

#[tokio::test]
async fn rows_in_the_default_partition_are_purged_row_by_row_and_only_when_delivered() {
    let (db, store) = TestDatabase::migrated().await;
    let delivered = insert(&store, &(0..3).map(|n| event(n, None)).collect::<Vec<_>>()).await;
    let waiting = insert(&store, &(3..5).map(|n| event(n, None)).collect::<Vec<_>>()).await;
    store
        .record_outcome(delivered, "t", &all_delivered(3))
        .await
        .unwrap();
    // Received 400 days ago, a day without a partition: the rows land in events_default.
    for chunk in [delivered, waiting] {
        for sql in [
            format!(
                "UPDATE events SET received_at = received_at - interval '400 days' WHERE chunk_id = {chunk}"
            ),
            format!(
                "UPDATE chunks SET created_at = created_at - interval '400 days' WHERE id = {chunk}"
            ),
        ] {
            db.execute(&sql).await;
        }
    }
    assert_eq!(db.execute("SELECT 1 FROM events_default").await, 5);
    let before = chrono::Utc::now() - chrono::TimeDelta::days(30);
    let mut deleted = Vec::new();
    loop {
        let n = store.purge_default(before, 2).await.unwrap();
        if n == 0 {
            break;
        }
        deleted.push(n);
    }
    assert_eq!(
        deleted,
        vec![2, 1],
        "batches of at most 2; the undelivered rows stay"
    );
    assert_eq!(store.chunk_events(waiting).await.unwrap().len(), 2);
    // Now the delivered chunk has no rows left anywhere: its row goes, the waiting one's not.
    let partitions = store.partitions().await.unwrap();
    let mut chunks = 0;
    for (low, high) in interaction_store::uncovered(&partitions, before) {
        chunks += store.purge_chunks(low, high, 10).await.unwrap();
    }
    assert_eq!(chunks, 1);
    assert_eq!(store.chunk_state(delivered).await.unwrap(), None);
    assert_eq!(
        store.chunk_state(waiting).await.unwrap(),
        Some(ChunkState::Pending)
    );
}

#[tokio::test]
async fn idempotency_keys_hold_across_partitions_and_expire_after_the_window() {
    let (db, store) = TestDatabase::migrated().await;
    let first = insert(&store, &[event(1, Some("k1")), event(2, Some("k2"))]).await;
    // Received 3 days ago, in another partition: a duplicate all the same.
    db.age_chunk(first, 3).await;
    let again = store
        .insert_chunks(&[("t", vec![&event(1, Some("k1")), &event(3, Some("k3"))])])
        .await
        .unwrap();
    assert_eq!(again[0].inserted_ids, vec!["k3".to_owned()]);
    // Keys older than the window expire (in batches); then the id is new again.
    let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(2);
    assert_eq!(store.expire_keys(cutoff, 1).await.unwrap(), 1);
    assert_eq!(store.expire_keys(cutoff, 1).await.unwrap(), 1);
    assert_eq!(
        store.expire_keys(cutoff, 1).await.unwrap(),
        0,
        "k3 is recent"
    );
    let later = store
        .insert_chunks(&[("t", vec![&event(1, Some("k1")), &event(3, Some("k3"))])])
        .await
        .unwrap();
    assert_eq!(later[0].inserted_ids, vec!["k1".to_owned()]);
}

#[tokio::test]
async fn a_database_holding_events_is_partitioned_in_place_and_nothing_is_lost_or_duplicated() {
    // The schema before partitioning, holding events: an old delivered chunk, one still
    // pending from yesterday, one from today; keyed and unkeyed events.
    let db = TestDatabase::migrated_before("2026-11-30-000060").await;
    db.execute(
        "INSERT INTO chunks (id, tenant, event_count, state, created_at) VALUES
         (1, 't', 2, 'forwarded', now() - interval '40 days'),
         (2, 't', 2, 'pending',   now() - interval '1 day'),
         (3, 't', 1, 'pending',   now())",
    )
    .await;
    db.execute("SELECT setval(pg_get_serial_sequence('chunks', 'id'), 3)")
        .await;
    db.execute(
        "INSERT INTO events (chunk_id, tenant, event_id, occurred_at, subscriber, asset_id,
                             interaction, rating, device, received_at)
         SELECT c.id, 't', e.event_id, now(), 'user', 'asset', 'play', 0.5, 'web', c.created_at
         FROM (VALUES (1, 'old-1'), (1, NULL), (2, 'recent-1'), (2, 'recent-2'), (3, 'today-1'))
              AS e(chunk, event_id)
         JOIN chunks c ON c.id = e.chunk",
    )
    .await;
    let store = Store::new(&StoreConfig::new(db.url.clone())).unwrap();
    let applied = store.migrate().await.unwrap();
    assert!(
        applied.iter().any(|v| v.starts_with("20261130000060")),
        "{applied:?}"
    );
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "a second run has nothing to do"
    );

    // The old table is now the partition of everything before the day after tomorrow; the
    // day partitions follow it.
    let partitions = store.partitions().await.unwrap();
    let legacy = partitions
        .iter()
        .find(|p| p.name == "events_legacy")
        .expect("legacy partition");
    let day_after_tomorrow = (chrono::Utc::now() + chrono::TimeDelta::days(2))
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!((legacy.low, legacy.high), (None, Some(day_after_tomorrow)));
    assert!(
        partitions.iter().any(|p| p.low == Some(day_after_tomorrow)),
        "{partitions:?}"
    );

    // Every old row is where it was, in order, and the pending ones are still delivered.
    assert_eq!(store.chunk_events(1).await.unwrap().len(), 2);
    assert_eq!(store.chunk_events(2).await.unwrap().len(), 2);
    assert_eq!(store.pending_event_count().await.unwrap(), 3);
    let claimed = store
        .claim_unpublished(Duration::ZERO, Duration::from_secs(60), chunks(10))
        .await
        .unwrap();
    assert_eq!(
        claimed
            .chunks
            .iter()
            .map(|c| (c.chunk_id, c.events.len()))
            .collect::<Vec<_>>(),
        vec![(2, 2), (3, 1)]
    );

    // Keys of the last 7 days were carried over: those events are still duplicates. Older
    // ones are past any DEDUP_WINDOW's minimum, as after the window on a partitioned store.
    let again = store
        .insert_chunks(&[(
            "t",
            vec![
                &event(1, Some("recent-1")),
                &event(2, Some("today-1")),
                &event(3, Some("old-1")),
            ],
        )])
        .await
        .unwrap();
    assert_eq!(again[0].inserted_ids, vec!["old-1".to_owned()]);
    let new_chunk = again[0].chunk_id.unwrap();
    assert!(new_chunk > 3);
    // New rows number on from the old ones (positions in a chunk follow row ids).
    let new_rows = store.chunk_events(new_chunk).await.unwrap();
    assert!(new_rows[0].id > 5, "{new_rows:?}");
    // "Where is event X?" finds a carried-over key's event in the legacy partition.
    let trace = store
        .trace_event("t", "recent-2")
        .await
        .unwrap()
        .expect("found");
    assert_eq!(trace.chunk_id, 2);

    // The legacy partition is dropped whole once its last day is past retention: not now.
    assert!(
        !store
            .partitions()
            .await
            .unwrap()
            .iter()
            .any(|p| p.high.is_some_and(|h| h <= chrono::Utc::now()) && p.name == "events_legacy")
    );
}

/// Event `n` with the eventId `e<n>`.
fn with_id(n: usize) -> (String, Event) {
    let id = format!("e{n}");
    let event = event(n, Some(&id));
    (id, event)
}

/// A refusal of `events[position]` as the forwarder records it.
fn refusal(events: &[Event], position: u32, attempts: u32) -> Failure<'_> {
    Failure {
        position,
        event: &events[position as usize],
        reason: "400 Bad Request: unknown asset".into(),
        status: Some(400),
        attempts: Some(attempts),
    }
}

#[tokio::test]
async fn an_events_path_shows_where_it_is_and_what_became_of_it() {
    let (_db, store) = TestDatabase::migrated().await;
    let before = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    let events: Vec<Event> = (0..4).map(|n| with_id(n).1).collect();
    let chunk = store
        .insert_chunks(&[("acme", events.iter().collect())])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    let trace = |id: &'static str| {
        let store = store.clone();
        async move { store.trace_event("acme", id).await.unwrap().unwrap() }
    };

    let pending = trace("e3").await;
    assert_eq!(
        (pending.chunk_id, pending.position, pending.status),
        (chunk, 3, EventStatus::Pending)
    );
    assert_eq!(
        (
            pending.chunk_state,
            pending.published_at,
            pending.delivered_at
        ),
        (Some(ChunkState::Pending), None, None)
    );
    assert_eq!(
        (pending.subscriber.as_str(), pending.event_id.as_deref()),
        ("user_3", Some("e3"))
    );

    // 0 and 1 delivered, 2 refused on its third round, 3 without an outcome yet.
    store.mark_published(&[chunk]).await.unwrap();
    let outcome = PartOutcome {
        delivered: vec![0..2],
        refused: vec![refusal(&events, 2, 3)],
    };
    store.record_outcome(chunk, "acme", &outcome).await.unwrap();
    let delivered = trace("e1").await;
    assert_eq!(
        (delivered.position, delivered.status, delivered.failure),
        (1, EventStatus::Delivered, None)
    );
    let delivered_at = delivered
        .delivered_at
        .expect("a delivered event has a time");
    assert!(delivered_at >= delivered.received_at);
    assert!(delivered.published_at.is_some());
    // Recording the same outcome again (a redelivery) keeps the time.
    store.record_outcome(chunk, "acme", &outcome).await.unwrap();
    assert_eq!(trace("e0").await.delivered_at, Some(delivered_at));

    let parked = trace("e2").await;
    assert_eq!(
        (parked.status, parked.delivered_at),
        (EventStatus::Parked, None)
    );
    let failure = parked.failure.expect("a parked event has its refusal");
    assert_eq!(
        (failure.reason.as_str(), failure.status, failure.attempts),
        ("400 Bad Request: unknown asset", Some(400), Some(3))
    );
    let in_flight = trace("e3").await;
    assert_eq!(
        (in_flight.status, in_flight.chunk_state),
        (EventStatus::InFlight, Some(ChunkState::Published))
    );

    // A re-drive delivers the parked event, a retry the last one: the chunk is forwarded, and
    // the refusal stays visible on the event delivered since.
    let rest = PartOutcome {
        delivered: vec![2..4],
        refused: Vec::new(),
    };
    assert_eq!(
        store.record_outcome(chunk, "acme", &rest).await.unwrap(),
        Some(ChunkState::Forwarded)
    );
    let redriven = trace("e2").await;
    assert_eq!(redriven.status, EventStatus::Delivered);
    assert!(redriven.delivered_at.unwrap() >= delivered_at);
    assert_eq!(redriven.failure.unwrap().status, Some(400));

    // Unknown events and tenants.
    assert_eq!(store.trace_event("acme", "nope").await.unwrap(), None);
    assert_eq!(store.trace_event("globex", "e0").await.unwrap(), None);
    assert!(store.tenant_known("acme").await.unwrap());
    assert!(!store.tenant_known("globex").await.unwrap());
    store
        .insert_chunks(&[("initech", vec![&event(7, None)])])
        .await
        .unwrap();
    assert!(
        store.tenant_known("initech").await.unwrap(),
        "a tenant that sends no eventIds is known by its chunks"
    );

    // By subscriber: user_1's events in a window, oldest first, at most `limit`.
    let (_, again) = with_id(1);
    let again = Event {
        event_id: Some("e1-again".into()),
        ..again
    };
    store
        .insert_chunks(&[("acme", vec![&again])])
        .await
        .unwrap();
    let after = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let found = store
        .trace_subscriber("acme", "user_1", before, after, 10)
        .await
        .unwrap();
    let paths: Vec<(Option<&str>, u32, EventStatus)> = found
        .iter()
        .map(|t| (t.event_id.as_deref(), t.position, t.status))
        .collect();
    assert_eq!(
        paths,
        [
            (Some("e1"), 1, EventStatus::Delivered),
            (Some("e1-again"), 0, EventStatus::Pending)
        ]
    );
    let first = store
        .trace_subscriber("acme", "user_1", before, after, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event_id.as_deref(), Some("e1"));
    assert!(
        store
            .trace_subscriber(
                "acme",
                "user_1",
                after,
                after + chrono::TimeDelta::hours(1),
                10
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .trace_subscriber("globex", "user_1", before, after, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn tenant_counts_split_each_tenants_events_by_stage() {
    let (db, store) = TestDatabase::migrated().await;
    let events: Vec<Event> = (0..9).map(|n| event(n, None)).collect();
    let ids: Vec<i64> = store
        .insert_chunks(&[
            ("acme", events[0..4].iter().collect()),
            ("acme", events[4..6].iter().collect()),
            ("acme", events[6..9].iter().collect()),
            ("globex", events[0..5].iter().collect()),
        ])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.chunk_id.unwrap())
        .collect();
    store.mark_published(&ids[0..3]).await.unwrap();
    // acme: 4 events of which 2 delivered, 1 parked, 1 pending; 2 forwarded; 3 failed with
    // 1 delivered and 2 parked. globex: 5 not even published.
    let partly = PartOutcome {
        delivered: vec![0..2],
        refused: vec![refusal(&events[0..4], 2, 1)],
    };
    store.record_outcome(ids[0], "acme", &partly).await.unwrap();
    store
        .record_outcome(ids[1], "acme", &all_delivered(2))
        .await
        .unwrap();
    let failed = PartOutcome {
        delivered: vec![0..1],
        refused: vec![refusal(&events[6..9], 1, 1), refusal(&events[6..9], 2, 12)],
    };
    assert_eq!(
        store.record_outcome(ids[2], "acme", &failed).await.unwrap(),
        Some(ChunkState::Failed)
    );
    // A chunk forwarded before positions were recorded: every event counts as delivered.
    db.execute("INSERT INTO chunks (tenant, event_count, state) VALUES ('legacy', 3, 'forwarded')")
        .await;

    let counts: Vec<(String, i64, i64, i64, i64)> = store
        .tenant_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.tenant, c.accepted, c.delivered, c.pending, c.parked))
        .collect();
    assert_eq!(
        counts,
        [
            ("acme".into(), 9, 5, 1, 3),
            ("globex".into(), 5, 0, 5, 0),
            ("legacy".into(), 3, 3, 0, 0),
        ]
    );
    assert_eq!(
        store.pending_by_tenant().await.unwrap(),
        [("acme".to_owned(), 1), ("globex".to_owned(), 5)]
    );
}

#[tokio::test]
async fn trace_lookups_can_use_their_indexes() {
    use diesel_async::{AsyncConnection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        line: String,
    }
    let (db, store) = TestDatabase::migrated().await;
    insert(&store, &[event(1, Some("e1")), event(2, None)]).await;
    let mut conn = diesel_async::AsyncPgConnection::establish(&db.url)
        .await
        .unwrap();
    // A table this small is cheaper to read whole than through any index: forbid that, so
    // the plan shows whether the index can serve the lookup at all. (The plan on a large
    // table is in trace.rs.)
    for setup in [
        "SET enable_seqscan = off",
        "CREATE FUNCTION plan_of(statement text) RETURNS SETOF text LANGUAGE plpgsql AS $$
         DECLARE line text;
         BEGIN
             FOR line IN EXECUTE 'EXPLAIN ' || statement LOOP RETURN NEXT line; END LOOP;
         END $$",
    ] {
        diesel::sql_query(setup).execute(&mut conn).await.unwrap();
    }
    for (n, (name, statement, indexes)) in interaction_store::testing::trace_statements()
        .into_iter()
        .enumerate()
    {
        let arguments = match name {
            "by eventId" => "('t', 'e1')",
            "by subscriber" => "('t', 'user_1', now() - interval '1 hour', now(), 100)",
            other => panic!("no arguments for {other}"),
        };
        let prepared = format!("trace_{n}");
        diesel::sql_query(format!("PREPARE {prepared} AS {statement}"))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan: Vec<Line> = diesel::sql_query("SELECT plan_of($1) AS line")
            .bind::<diesel::sql_types::Text, _>(format!("EXECUTE {prepared}{arguments}"))
            .load(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let plan = plan
            .into_iter()
            .map(|l| l.line)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            indexes.iter().any(|index| plan.contains(index)),
            "{name} uses none of {indexes:?}:\n{plan}"
        );
        assert!(
            !plan.contains("Seq Scan on events"),
            "{name} reads the whole events table:\n{plan}"
        );
    }
}
