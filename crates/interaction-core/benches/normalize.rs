//! Parse + normalize throughput of request bodies, one core, printed as a table.
//!
//! `cargo bench -p interaction-core` (or `make bench-core`). A plain timing loop rather than
//! criterion: the figure we care about is events per second on one core, and criterion's build
//! cost on a 2-core machine buys nothing here.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use interaction_core::{Limits, Normalizer, RatingMap};
use serde_json::{Value, json};

/// A realistic event: ~250 bytes, like the spec's examples.
fn event(i: usize, now: DateTime<Utc>) -> Value {
    let ts = (now - TimeDelta::seconds(i as i64 * 7)).to_rfc3339();
    let device = ["web", "android_app", "ios_app"][i % 3];
    let common = json!({
        "timestamp": ts,
        "subscriber": format!("viusasa_user_{}", 10_000 + i * 37),
        "assetId": format!("viusasa_episode_{}", 60_000 + i * 11),
        "contextId": "viusasa_player_context",
        "eventId": format!("evt-{i:08}"),
        "setting": {"device": device},
    });
    let mut event = common;
    let form = match i % 10 {
        0..=5 => json!({"interaction": "play_complete", "ratingEquivalent": 0.5,
                        "comment": "User watched 90% of the episode."}),
        6 | 7 => json!({"action": "watch", "progress": 0.93}),
        8 => json!({"action": "like"}),
        _ => json!({"interaction": "select"}),
    };
    for (k, v) in form.as_object().unwrap() {
        event[k] = v.clone();
    }
    event
}

struct Row {
    name: &'static str,
    events_per_run: usize,
    bytes_per_run: usize,
    runs: u64,
    elapsed: Duration,
}

fn measure(name: &'static str, bodies: &[Vec<u8>], events: usize, n: &Normalizer<'_>) -> Row {
    let run = || {
        for body in bodies {
            let batch = n.parse_body(black_box(body)).unwrap();
            assert!(batch.errors.is_empty(), "{:?}", batch.errors);
            black_box(batch);
        }
    };
    for _ in 0..200 {
        run(); // warm-up
    }
    let start = Instant::now();
    let mut runs = 0;
    while start.elapsed() < Duration::from_secs(3) {
        for _ in 0..50 {
            run();
        }
        runs += 50;
    }
    Row {
        name,
        events_per_run: events,
        bytes_per_run: bodies.iter().map(Vec::len).sum(),
        runs,
        elapsed: start.elapsed(),
    }
}

fn main() {
    let map = RatingMap::builtin();
    let limits = Limits::default();
    let now = Utc::now();
    let normalizer = Normalizer::new(map.profile("video").unwrap(), &limits, now);

    let events: Vec<Value> = (0..100).map(|i| event(i, now)).collect();
    let batch = vec![serde_json::to_vec(&events).unwrap()];
    let singles: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap())
        .collect();

    let rows = [
        measure("1 body of 100 events", &batch, 100, &normalizer),
        measure("100 bodies of 1 event", &singles, 100, &normalizer),
    ];
    println!();
    println!("| parse + normalize (1 core) | events/s | ns/event | MB/s |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        let secs = row.elapsed.as_secs_f64();
        let events = (row.events_per_run as u64 * row.runs) as f64;
        let bytes = (row.bytes_per_run as u64 * row.runs) as f64;
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            row.name,
            events / secs,
            secs * 1e9 / events,
            bytes / secs / 1e6
        );
    }
}
