//! What the publisher logs about connection failures: the broker address, never the password.

use crate::common::TestTopology;
use interaction_bus::{BusConfig, Publisher};
use log::{LevelFilter, Log, Metadata, Record};
use std::{
    sync::{Mutex, Once},
    time::{Duration, Instant},
};

/// Every log line of this test process (the logger is global: other tests' lines too).
struct Capture(Mutex<Vec<String>>);

impl Log for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        let line = format!("{} {}", record.level(), record.args());
        self.0.lock().unwrap().push(line);
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

fn captured_lines() -> Vec<String> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CAPTURE).unwrap();
        log::set_max_level(LevelFilter::Trace);
    });
    CAPTURE.0.lock().unwrap().clone()
}

#[tokio::test]
async fn connection_failures_are_logged_at_warn_with_the_address_but_not_the_password() {
    let test = TestTopology::new();
    let _ = captured_lines();
    let password = format!("pw-{}", uuid::Uuid::new_v4());
    // Nothing listens on port 1: every attempt fails.
    let url = format!("amqp://guest:{password}@127.0.0.1:1/%2f");
    let publisher = Publisher::start(BusConfig {
        url: url.into(),
        ..test.config()
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    let failures = loop {
        let failures: Vec<String> = captured_lines()
            .into_iter()
            .filter(|line| line.contains("guest:***@127.0.0.1:1/"))
            .collect();
        if failures.len() >= 2 || Instant::now() > deadline {
            break failures;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    publisher.close().await;

    assert!(
        failures.len() >= 2,
        "each failed attempt is logged: {failures:?}"
    );
    assert!(
        failures.iter().all(|line| line.starts_with("WARN")),
        "{failures:?}"
    );
    assert!(failures[0].contains("attempt 1"), "{failures:?}");
    let leaks: Vec<String> = captured_lines()
        .into_iter()
        .filter(|line| line.contains(&password))
        .collect();
    assert!(leaks.is_empty(), "password logged: {leaks:?}");
    assert!(!format!("{publisher:?}").contains(&password));
}
