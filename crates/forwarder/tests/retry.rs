//! The retry policy, as tables and properties.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use forwarder::retry::{
    NextStep, RetryPolicy, is_retryable_status, next_step, parse_retry_after, retry_delay,
    retry_queue_for,
};
use proptest::prelude::*;

const S: fn(u64) -> Duration = Duration::from_secs;
const MS: fn(u64) -> Duration = Duration::from_millis;

fn queues() -> Vec<Duration> {
    vec![S(5), S(30), S(120), S(600)]
}

fn policy() -> RetryPolicy {
    RetryPolicy {
        inline_retries: 3,
        inline_base: MS(200),
        inline_max: S(2),
        max_attempts: 5,
        queue_delays: queues(),
    }
}

#[test]
fn transient_statuses_are_408_429_and_5xx_and_nothing_else() {
    for (status, retryable) in [
        (200, false),
        (400, false),
        (401, false),
        (403, false),
        (404, false),
        (408, true),
        (409, false),
        (413, false),
        (422, false),
        (429, true),
        (499, false),
        (500, true),
        (502, true),
        (503, true),
        (504, true),
        (599, true),
        (600, false),
    ] {
        assert_eq!(is_retryable_status(status), retryable, "{status}");
    }
}

#[test]
fn inline_delays_double_are_capped_and_honor_retry_after() {
    // (retry, retry_after, jitter fraction) -> delay
    let cases = [
        (1, None, 1.0, MS(200)),
        (2, None, 1.0, MS(400)),
        (3, None, 1.0, MS(800)),
        (4, None, 1.0, MS(1600)),
        (5, None, 1.0, S(2)),
        (40, None, 1.0, S(2)),
        (1, None, 0.0, MS(100)),
        (3, None, 0.5, MS(600)),
        (1, Some(S(1)), 0.0, S(1)),
        (5, Some(MS(10)), 1.0, S(2)),
        (1, Some(S(30)), 1.0, S(30)),
    ];
    for (retry, retry_after, jitter, expected) in cases {
        assert_eq!(
            retry_delay(retry, retry_after, MS(200), S(2), jitter),
            expected,
            "retry {retry}, Retry-After {retry_after:?}, jitter {jitter}"
        );
    }
}

#[test]
fn retry_queues_step_up_per_attempt_and_for_long_retry_after() {
    let cases = [
        (1, None, 0),
        (2, None, 1),
        (3, None, 2),
        (4, None, 3),
        (9, None, 3),
        (1, Some(S(3)), 0),
        (1, Some(S(5)), 0),
        (1, Some(S(6)), 1),
        (1, Some(S(100)), 2),
        (1, Some(S(3600)), 3),
        (3, Some(S(6)), 2),
    ];
    for (attempt, retry_after, expected) in cases {
        assert_eq!(
            retry_queue_for(attempt, retry_after, &queues()),
            expected,
            "{attempt} {retry_after:?}"
        );
    }
}

#[test]
fn the_next_step_goes_inline_then_to_the_queues_then_parks() {
    let p = policy();
    let cases = [
        // (inline retry so far, queue attempt, Retry-After) -> step
        (0, 0, None, NextStep::RetryInline(MS(200))),
        (2, 0, None, NextStep::RetryInline(MS(800))),
        (3, 0, None, NextStep::Requeue(0)),
        (3, 1, None, NextStep::Requeue(1)),
        (3, 4, None, NextStep::Requeue(3)),
        (3, 5, None, NextStep::Park),
        (0, 5, None, NextStep::RetryInline(MS(200))),
        (0, 0, Some(S(1)), NextStep::RetryInline(S(1))),
        // A Retry-After longer than the in-process cap goes straight to a queue that waits it.
        (0, 0, Some(S(20)), NextStep::Requeue(1)),
        (0, 5, Some(S(20)), NextStep::Park),
    ];
    for (inline, attempt, retry_after, expected) in cases {
        assert_eq!(
            next_step(inline, attempt, retry_after, &p, 1.0),
            expected,
            "{inline} {attempt} {retry_after:?}"
        );
    }
}

#[test]
fn retry_after_headers_are_whole_seconds() {
    assert_eq!(parse_retry_after("7"), Some(S(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(S(0)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
    assert_eq!(parse_retry_after("1.5"), None);
}

proptest! {
    #[test]
    fn delays_stay_within_half_and_all_of_the_cap_or_at_retry_after(
        retry in 1u32..100,
        retry_after in proptest::option::of(0u64..10_000),
        jitter in 0.0f64..=1.0,
    ) {
        let retry_after = retry_after.map(MS);
        let delay = retry_delay(retry, retry_after, MS(200), S(2), jitter);
        prop_assert!(delay <= S(2).max(retry_after.unwrap_or_default()));
        prop_assert!(delay >= MS(100).min(S(2)) || retry_after.is_some_and(|r| delay >= r));
        if let Some(wait) = retry_after {
            prop_assert!(delay >= wait);
        }
    }

    #[test]
    fn the_queue_always_waits_at_least_the_retry_after_unless_none_is_long_enough(
        attempt in 1u32..50,
        retry_after in 0u64..5_000,
    ) {
        let delays = queues();
        let index = retry_queue_for(attempt, Some(S(retry_after)), &delays);
        prop_assert!(index < delays.len());
        prop_assert!(delays[index] >= S(retry_after) || index == delays.len() - 1);
    }

    #[test]
    fn every_failure_eventually_parks(inline in 0u32..10, attempt in 0u32..20) {
        let step = next_step(inline, attempt, None, &policy(), 0.5);
        match step {
            NextStep::RetryInline(_) => prop_assert!(inline < 3),
            NextStep::Requeue(q) => prop_assert!(attempt < 5 && q < 4),
            NextStep::Park => prop_assert!(attempt >= 5),
        }
    }
}
