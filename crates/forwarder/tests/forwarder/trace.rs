//! "Where is event X?" and per-tenant counts: `/trace`, `forwarder trace`, `/tenants` and the
//! per-tenant series of `/metrics`, over events delivered, refused, retrying and unpublished.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use forwarder::{Cli, Command};
use interaction_core::Event;
use interaction_store::ChunkState;
use ncanto_mock::Faults;
use serde_json::Value;

use crate::harness::{Harness, event};

/// Event `n` of `viewer-1`, with the eventId `ev-<n>`, on an asset named after `asset`.
fn traced_event(n: usize, asset: &str) -> Event {
    let mut event = event(n, asset);
    event.interaction.subscriber = "viewer-1".into();
    event.event_id = Some(format!("ev-{n}"));
    event
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Query parameters.
type Query<'a> = &'a [(&'a str, &'a str)];

/// A GET on the admin port: status and JSON body.
async fn get(admin: &str, path: &str, query: Query<'_>) -> (u16, Value) {
    let url = reqwest::Url::parse_with_params(&format!("{admin}{path}"), query).unwrap();
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// `/trace` of one acme event by its eventId: the one event found.
async fn trace_event(admin: &str, event_id: &str) -> Value {
    let (status, body) = get(
        admin,
        "/trace",
        &[("tenant", "acme"), ("eventId", event_id)],
    )
    .await;
    assert_eq!(status, 200, "{event_id}: {body}");
    assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
    body["events"][0].clone()
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {value}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_operator_sees_where_each_event_is_and_how_many_each_tenant_has() {
    interaction_runtime::install_tls_provider();
    let harness = Harness::new(|c| c.pending_gauge_interval = Duration::from_millis(200)).await;
    // ev-2 is refused for good; ev-10 fails (500) until the pattern is cleared, so it keeps
    // going round the retry queues.
    harness
        .mock
        .set_faults(Faults {
            reject_asset_pattern: Some("poison".into()),
            fail_asset_pattern: Some("flaky".into()),
            ..Faults::default()
        })
        .await;
    let forwarder = harness.start().await;
    let before = Utc::now() - chrono::TimeDelta::seconds(1);
    let mut first: Vec<Event> = (0..4).map(|n| traced_event(n, "good")).collect();
    first[2] = traced_event(2, "poison");
    let delivered_chunk = harness.submit("acme", first).await;
    let retried_chunk = harness
        .submit("acme", vec![traced_event(10, "flaky")])
        .await;
    // Stored but never published: what the relay would pick up.
    let unpublished_chunk = harness
        .store
        .insert_chunks(&[("acme", vec![&traced_event(20, "good")])])
        .await
        .unwrap()[0]
        .chunk_id
        .unwrap();
    let globex_chunk = harness
        .submit("globex", (30..32).map(|n| event(n, "good")).collect())
        .await;
    harness.wait_for_unique(5, Duration::from_secs(20)).await;
    harness
        .wait_for(
            "ev-2 parked, globex's events recorded delivered and ev-10 failing",
            Duration::from_secs(20),
            async || {
                let parked = trace_event(&forwarder.admin, "ev-2").await;
                let globex = harness.store.chunk_state(globex_chunk).await.ok()??;
                let failing = harness.mock.stats().failed_requests > 0;
                (parked["status"] == "parked" && globex == ChunkState::Forwarded && failing)
                    .then_some(())
            },
        )
        .await;
    let after = Utc::now() + chrono::TimeDelta::seconds(1);

    // By eventId: each path.
    let delivered = trace_event(&forwarder.admin, "ev-0").await;
    assert_eq!(delivered["status"], "delivered", "{delivered}");
    assert_eq!(delivered["chunkId"], delivered_chunk);
    assert_eq!(delivered["position"], 0);
    assert_eq!(
        delivered["chunkState"], "failed",
        "every event has an outcome"
    );
    assert_eq!(delivered["subscriber"], "viewer-1");
    assert_eq!(delivered["failure"], Value::Null);
    let received = time(&delivered["receivedAt"]);
    let published = time(&delivered["publishedAt"]);
    let delivered_at = time(&delivered["deliveredAt"]);
    assert!(
        received <= published && published <= delivered_at && delivered_at <= after,
        "{delivered}"
    );

    let parked = trace_event(&forwarder.admin, "ev-2").await;
    assert_eq!(
        (
            &parked["chunkId"],
            &parked["position"],
            &parked["deliveredAt"]
        ),
        (&delivered_chunk.into(), &2.into(), &Value::Null),
        "{parked}"
    );
    let failure = &parked["failure"];
    assert_eq!(failure["ncantoStatus"], 400, "{parked}");
    assert_eq!(failure["attempts"], 1, "{parked}");
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("refused by reject_asset_pattern"),
        "{parked}"
    );
    assert!(time(&failure["failedAt"]) >= published);

    let in_flight = trace_event(&forwarder.admin, "ev-10").await;
    assert_eq!(
        (
            &in_flight["status"],
            &in_flight["chunkState"],
            &in_flight["chunkId"]
        ),
        (
            &"in_flight".into(),
            &"published".into(),
            &retried_chunk.into()
        ),
        "{in_flight}"
    );
    assert_eq!(in_flight["deliveredAt"], Value::Null);

    let pending = trace_event(&forwarder.admin, "ev-20").await;
    assert_eq!(
        (
            &pending["status"],
            &pending["chunkState"],
            &pending["publishedAt"]
        ),
        (&"pending".into(), &"pending".into(), &Value::Null),
        "{pending}"
    );
    assert_eq!(pending["chunkId"], unpublished_chunk);

    // By subscriber and window: every one of them, oldest first; a limit says there is more.
    let window = [
        ("tenant", "acme"),
        ("subscriber", "viewer-1"),
        ("since", &rfc3339(before)),
        ("until", &rfc3339(after)),
    ];
    let (status, listed) = get(&forwarder.admin, "/trace", &window).await;
    assert_eq!(status, 200, "{listed}");
    let paths: Vec<(&str, &str)> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["eventId"].as_str().unwrap(),
                e["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        paths,
        [
            ("ev-0", "delivered"),
            ("ev-1", "delivered"),
            ("ev-2", "parked"),
            ("ev-3", "delivered"),
            ("ev-10", "in_flight"),
            ("ev-20", "pending"),
        ]
    );
    assert_eq!(listed["truncated"], false);
    let mut limited = window.to_vec();
    limited.push(("limit", "2"));
    let (_, first_two) = get(&forwarder.admin, "/trace", &limited).await;
    assert_eq!(first_two["events"].as_array().unwrap().len(), 2);
    assert_eq!(first_two["truncated"], true);

    // Clear errors.
    // (query, status, what the error says)
    let errors: [(Query, u16, &str); 5] = [
        (
            &[("tenant", "acme"), ("eventId", "nope")],
            404,
            r#"tenant "acme" has no stored event with eventId "nope""#,
        ),
        (
            &[("tenant", "initech"), ("eventId", "ev-0")],
            404,
            r#"unknown tenant "initech""#,
        ),
        (
            &[("tenant", "initech"), ("subscriber", "viewer-1")],
            404,
            r#"unknown tenant "initech""#,
        ),
        (
            &[],
            400,
            "missing parameters: tenant, eventId or subscriber",
        ),
        (
            &[
                ("tenant", "acme"),
                ("subscriber", "viewer-1"),
                ("since", "2026-01-01T00:00:00Z"),
                ("until", "2026-01-03T00:00:00Z"),
            ],
            400,
            "longer than 24 hours",
        ),
    ];
    for (query, want_status, want_text) in errors {
        let (status, body) = get(&forwarder.admin, "/trace", query).await;
        assert_eq!(status, want_status, "{query:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(want_text),
            "{query:?}: {body}"
        );
    }

    // `forwarder trace`, as main runs it: the table, and the JSON of /trace.
    let run = async |args: &[&str]| {
        let cli = Cli::try_parse_from(
            [
                "forwarder",
                "--database-url",
                "postgres://unused/x",
                "trace",
            ]
            .iter()
            .chain(args),
        )
        .unwrap();
        let Some(Command::Trace(args)) = cli.command else {
            panic!("trace")
        };
        let report = forwarder::trace::trace(&harness.store, &args.query(Utc::now()).unwrap())
            .await
            .unwrap();
        forwarder::trace::render(&report, args.format()).unwrap()
    };
    let table = run(&["--tenant", "acme", "--subscriber", "viewer-1"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("tenant acme, subscriber viewer-1, received from "),
        "{table}"
    );
    assert!(lines[0].ends_with(": 6 events"), "{table}");
    assert!(lines[1].starts_with("EVENT  SUBSCRIBER"), "{table}");
    let row = |id: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}:\n{table}"))
            .to_string()
    };
    let parked_row = row("ev-2");
    assert!(
        parked_row.contains(&format!(" {delivered_chunk} "))
            && parked_row.contains(" failed ")
            && parked_row.contains(" parked ")
            && parked_row.contains("Ncanto 400 after 1 attempt: Ncanto answered 400"),
        "{table}"
    );
    assert!(
        row("ev-0").contains(&format!(
            " delivered  {}",
            delivered_at.to_rfc3339_opts(SecondsFormat::Millis, true)
        )),
        "{table}"
    );
    assert!(row("ev-10").contains(" in_flight "), "{table}");
    assert!(row("ev-20").contains(" pending "), "{table}");
    let json: Value =
        serde_json::from_str(&run(&["--tenant", "acme", "--event-id", "ev-2", "--json"]).await)
            .unwrap();
    assert_eq!(json, trace_event_report(&forwarder.admin, "ev-2").await);

    // Per-tenant counts from the database.
    let (status, tenants) = get(&forwarder.admin, "/tenants", &[]).await;
    assert_eq!(status, 200, "{tenants}");
    assert_eq!(
        tenants,
        serde_json::json!({
            "acme": {"accepted": 6, "delivered": 3, "pending": 2, "parked": 1},
            "globex": {"accepted": 2, "delivered": 2, "pending": 0, "parked": 0},
        })
    );

    // And in /metrics: counters where outcomes are recorded (just after the statement that
    // records them), the gauge from the database (every 200 ms here).
    let series = [
        r#"forwarder_events_delivered_total{tenant="acme"} 3"#,
        r#"forwarder_events_delivered_total{tenant="globex"} 2"#,
        r#"forwarder_events_parked_total{tenant="acme"} 1"#,
        r#"pending_events{tenant="acme"} 2"#,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", forwarder.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<&str> = series
            .into_iter()
            .filter(|s| !metrics.lines().any(|line| line == *s))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{missing:?} missing from:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    forwarder.stop().await;
}

/// The whole `/trace` body for an acme eventId.
async fn trace_event_report(admin: &str, event_id: &str) -> Value {
    get(
        admin,
        "/trace",
        &[("tenant", "acme"), ("eventId", event_id)],
    )
    .await
    .1
}
