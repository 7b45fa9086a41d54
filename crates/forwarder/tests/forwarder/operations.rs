//! Operator surfaces: admin endpoints, replay, purge.

use std::time::Duration;

use interaction_store::ChunkState;

use crate::harness::{Harness, event};

#[tokio::test]
async fn the_admin_port_reports_liveness_readiness_health_and_metrics() {
    let harness = Harness::new(|_| {}).await;
    let forwarder = harness.start().await;
    interaction_runtime::install_tls_provider();
    let client = reqwest::Client::new();
    harness.submit("acme", vec![event(1, "a")]).await;
    harness.wait_for_unique(1, Duration::from_secs(20)).await;
    assert_eq!(
        client
            .get(format!("{}/livez", forwarder.admin))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    harness
        .wait_for("ready", Duration::from_secs(10), async || {
            let status = client
                .get(format!("{}/readyz", forwarder.admin))
                .send()
                .await
                .ok()?
                .status();
            (status == 200).then_some(())
        })
        .await;
    let health: serde_json::Value = client
        .get(format!("{}/health", forwarder.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (health["status"].as_str(), health["rabbitmq"].as_bool()),
        (Some("ok"), Some(true))
    );
    assert!(health["pending_interactions"].is_i64());
    let metrics = client
        .get(format!("{}/metrics", forwarder.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "forwarder_events_forwarded_total",
        "forwarder_ncanto_seconds",
        "forwarder_in_flight",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    forwarder.stop().await;
}

#[tokio::test]
async fn replay_sends_a_tenants_stored_events_again_and_a_dry_run_only_counts() {
    let harness = Harness::new(|c| c.ncanto_batch_size = 7).await;
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    harness
        .submit("acme", (0..30).map(|n| event(n, "a")).collect())
        .await;
    harness
        .submit("globex", (100..110).map(|n| event(n, "g")).collect())
        .await;
    let until = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let store = &harness.store;
    let client = forwarder::app::ncanto(&harness.config).unwrap();
    let policy = forwarder::app::policy(&harness.config);
    let request = |dry_run| forwarder::replay::ReplayRequest {
        tenant: "acme".into(),
        since,
        until,
        dry_run,
        rate: 0,
        after_id: 0,
    };
    let dry = forwarder::replay::replay(store, &client, &policy, &request(true))
        .await
        .unwrap();
    assert_eq!((dry.total, dry.sent), (30, 0));
    // The plan of a page is reported (on a table this small PostgreSQL may read it whole;
    // the store's tests check the index on a larger one).
    assert!(dry.plan.starts_with("Limit"), "{}", dry.plan);
    assert!(dry.plan.contains("rows per page"), "{}", dry.plan);
    assert_eq!(harness.mock.stats().received, 0);
    let report = forwarder::replay::replay(store, &client, &policy, &request(false))
        .await
        .unwrap();
    assert_eq!((report.total, report.sent, report.refused), (30, 30, 0));
    let stats = harness.mock.stats();
    assert_eq!((stats.received, stats.unique), (30, 30));
    assert_eq!(stats.by_tenant.get("acme"), Some(&30));
    assert!(!stats.by_tenant.contains_key("globex"));
    // Replay changes nothing in the database.
    assert_eq!(harness.store.pending_event_count().await.unwrap(), 40);
}

#[tokio::test]
async fn an_interrupted_replay_names_where_to_resume_and_resuming_there_skips_nothing() {
    let harness = Harness::new(|c| {
        c.ncanto_batch_size = 10; // 100 events per replay batch
        c.inline_retries = 0;
        c.max_attempts = 1; // give up at the second transient failure
    })
    .await;
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    harness
        .submit("acme", (0..250).map(|n| event(n, "a")).collect())
        .await;
    let until = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let client = forwarder::app::ncanto(&harness.config).unwrap();
    let mut policy = forwarder::app::policy(&harness.config);
    policy.queue_delays = vec![Duration::from_millis(10)];
    let request = |since, after_id| forwarder::replay::ReplayRequest {
        tenant: "acme".into(),
        since,
        until,
        dry_run: false,
        // 100 events at 200/s: the second batch is due 0.5 s after the first.
        rate: 200,
        after_id,
    };
    // Ncanto fails once the first batch is in: mid-page (a page is 1,000 rows).
    let breaker = async {
        while harness.mock.stats().received < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        harness
            .mock
            .set_faults(ncanto_mock::Faults {
                outage: Some(ncanto_mock::Outage::Error),
                ..ncanto_mock::Faults::default()
            })
            .await;
    };
    let first = request(since, 0);
    let (result, ()) = tokio::join!(
        forwarder::replay::replay(&harness.store, &client, &policy, &first),
        breaker
    );
    let error = result.unwrap_err().to_string();
    let after_id: i64 = error
        .rsplit("--after-id ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no --after-id in: {error}"));
    assert!(after_id > 0, "{error}");
    // The resume point is a cursor: the last settled row's arrival time and id.
    let resume_since = error
        .split("--since ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("no --since in: {error}"))
        .to_utc();
    assert!(resume_since >= since, "{error}");
    assert_eq!(harness.mock.stats().unique, 100, "{error}");

    harness
        .mock
        .set_faults(ncanto_mock::Faults::default())
        .await;
    let resumed = forwarder::replay::replay(
        &harness.store,
        &client,
        &policy,
        &request(resume_since, after_id),
    )
    .await
    .unwrap();
    assert_eq!((resumed.total, resumed.sent), (150, 150));
    // Every event of the window arrived, none twice.
    let stats = harness.mock.stats();
    assert_eq!((stats.unique, stats.duplicates), (250, 0));
}

#[tokio::test]
async fn replay_paces_itself_to_the_requested_rate() {
    let harness = Harness::new(|c| c.ncanto_batch_size = 10).await;
    let since = chrono::Utc::now() - chrono::TimeDelta::seconds(1);
    harness
        .submit("acme", (0..40).map(|n| event(n, "a")).collect())
        .await;
    let client = forwarder::app::ncanto(&harness.config).unwrap();
    let policy = forwarder::app::policy(&harness.config);
    let started = std::time::Instant::now();
    let report = forwarder::replay::replay(
        &harness.store,
        &client,
        &policy,
        &forwarder::replay::ReplayRequest {
            tenant: "acme".into(),
            since,
            until: chrono::Utc::now() + chrono::TimeDelta::seconds(1),
            dry_run: false,
            rate: 100,
            after_id: 0,
        },
    )
    .await
    .unwrap();
    assert_eq!(report.sent, 40);
    // 40 events at 100/s: the last page is due at 0.4 s at the earliest.
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
}

fn retention(older_than_days: u64) -> forwarder::purge::Retention {
    forwarder::purge::Retention {
        older_than: Duration::from_secs(older_than_days * 86_400),
        dedup_window: Duration::from_secs(7 * 86_400),
        failures_older_than: Duration::ZERO,
        batch: 2,
    }
}

#[tokio::test]
async fn purge_drops_old_days_but_keeps_a_day_with_undelivered_events() {
    let harness = Harness::new(|_| {}).await;
    let forwarder = harness.start().await;
    let delivered = harness
        .submit("acme", (0..5).map(|n| event(n, "a")).collect())
        .await;
    harness.wait_for_unique(5, Duration::from_secs(20)).await;
    harness
        .wait_for("forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(delivered).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
    forwarder.stop().await;
    // Stored but never forwarded: its day is kept however old.
    let waiting = harness
        .store
        .insert_chunks(&[(
            "acme",
            (10..13)
                .map(|n| event(n, "b"))
                .collect::<Vec<_>>()
                .iter()
                .collect(),
        )])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    harness.db.age_chunk(delivered, 40).await;
    harness.db.age_chunk(waiting, 45).await;
    let day = |days: i64| {
        format!(
            "events_p{}",
            (chrono::Utc::now() - chrono::TimeDelta::days(days)).format("%Y%m%d")
        )
    };
    let mut plan = forwarder::purge::plan(&harness.store, Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    plan.sort();
    assert_eq!(
        plan.iter()
            .map(|(name, _, unfinished)| (name.clone(), *unfinished))
            .collect::<Vec<_>>(),
        vec![(day(45), 1), (day(40), 0)],
        "the dry run names both days and what keeps one"
    );
    assert!(
        forwarder::purge::plan(&harness.store, Duration::from_secs(50 * 86_400))
            .await
            .unwrap()
            .is_empty()
    );
    // While another process holds the retention lock, a purge does nothing and says so.
    let other = harness
        .store
        .try_lock(interaction_store::RETENTION_LOCK)
        .await
        .unwrap()
        .expect("nobody holds the retention lock yet");
    let skipped = forwarder::purge::purge(&harness.store, retention(30))
        .await
        .unwrap();
    assert_eq!(skipped, None, "another replica is purging");
    assert_eq!(
        harness.store.chunk_events(delivered).await.unwrap().len(),
        5
    );
    drop(other);
    // Once it lets go (its connection closes), this one purges.
    let purged = harness
        .wait_for(
            "the retention lock to be free",
            Duration::from_secs(10),
            async || {
                forwarder::purge::purge(&harness.store, retention(30))
                    .await
                    .unwrap()
            },
        )
        .await;
    assert_eq!(purged.dropped, vec![day(40)]);
    assert_eq!(purged.held, vec![(day(45), 1)]);
    assert_eq!(purged.chunks, 1);
    assert_eq!(harness.store.chunk_state(delivered).await.unwrap(), None);
    assert_eq!(harness.store.chunk_events(waiting).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_serving_forwarder_purges_periodically_when_configured() {
    let harness = Harness::new(|c| {
        c.purge_older_than = Duration::from_secs(30 * 86_400);
        c.purge_interval = Duration::from_millis(100);
    })
    .await;
    let forwarder = harness.start().await;
    let chunk = harness
        .submit("acme", (0..4).map(|n| event(n, "a")).collect())
        .await;
    harness.wait_for_unique(4, Duration::from_secs(20)).await;
    harness
        .wait_for("forwarded", Duration::from_secs(10), async || {
            (harness.store.chunk_state(chunk).await.ok()? == Some(ChunkState::Forwarded))
                .then_some(())
        })
        .await;
    // As if it had arrived 40 days ago: the next round drops its day.
    harness.db.age_chunk(chunk, 40).await;
    harness
        .wait_for(
            "the forwarded chunk to be purged",
            Duration::from_secs(10),
            async || (harness.store.chunk_state(chunk).await.ok()?.is_none()).then_some(()),
        )
        .await;
    assert!(harness.store.chunk_events(chunk).await.unwrap().is_empty());
    forwarder.stop().await;
}
