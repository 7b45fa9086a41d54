//! When to retry, how long to wait, and when to give up: small named functions, so the policy
//! is read and tested in one place rather than scattered through the delivery loop.
//!
//! Two levels. A failed call to Ncanto is first retried a few times in process, with short
//! exponential delays (that rides out a blip without touching the broker). If it still fails,
//! the remaining events go to a TTL retry queue (5 s, 30 s, 2 min, 10 min) and come back
//! later: a long wait never holds a consumer or its prefetch slot. After `max_attempts` trips
//! through the retry queues, the events are parked for an operator.
//!
//! The arithmetic of the in-process delays (exponential, jitter, `Retry-After`) is the shared
//! [`interaction_runtime`] backoff; this module decides what to do with it. Choosing a retry
//! queue stays a function of its own: it picks a queue by attempt number and `Retry-After`, a
//! deterministic choice among fixed delays, not a sleep.

use std::time::Duration;

use interaction_runtime::{equal_jitter, exponential_delay, honor_retry_after};

/// Whether a Ncanto HTTP status is worth retrying: timeouts (408), rate limiting (429) and
/// server errors (5xx). Any other 4xx means the request itself is wrong and will stay wrong.
pub fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// How a call to Ncanto failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth retrying: connection refused or reset, timeout, 408, 429, 5xx.
    #[error("{reason}")]
    Transient {
        /// What happened, for logs and failure records.
        reason: String,
        /// Ncanto's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// Not worth retrying: the events (or some of them) are refused.
    #[error("{reason}")]
    Permanent {
        /// What happened.
        reason: String,
        /// Ncanto's status.
        status: u16,
    },
}

/// Tuning of the retry policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls retried in process before the events go to a retry queue.
    pub inline_retries: u32,
    /// First in-process delay; doubled per retry.
    pub inline_base: Duration,
    /// Longest in-process delay: a `Retry-After` above it goes through a retry queue instead.
    pub inline_max: Duration,
    /// Trips through the retry queues before the events are parked.
    pub max_attempts: u32,
    /// The retry queues' delays, shortest first.
    pub queue_delays: Vec<Duration>,
}

/// The in-process delay before retry number `retry` (1-based): `base · 2^(retry-1)`, capped at
/// `max`, scaled by `jitter_fraction` (0..1) into `[½, 1]` of that so that many forwarders do
/// not retry in lockstep — but never shorter than Ncanto's `Retry-After`.
pub fn retry_delay(
    retry: u32,
    retry_after: Option<Duration>,
    base: Duration,
    max: Duration,
    jitter_fraction: f64,
) -> Duration {
    let backoff = exponential_delay(retry, base, max);
    honor_retry_after(equal_jitter(backoff, jitter_fraction), retry_after)
}

/// Which retry queue (index into `delays`) the `attempt`-th trip (1-based) uses: the schedule
/// steps up per attempt and stays on the longest; a `Retry-After` longer than the step's
/// delay moves to the first queue that waits at least that long.
pub fn retry_queue_for(attempt: u32, retry_after: Option<Duration>, delays: &[Duration]) -> usize {
    let last = delays.len().saturating_sub(1);
    let by_attempt = (attempt.saturating_sub(1) as usize).min(last);
    let by_retry_after = retry_after
        .map(|wait| delays.iter().position(|d| *d >= wait).unwrap_or(last))
        .unwrap_or(0);
    by_attempt.max(by_retry_after)
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Wait this long in process, then call again.
    RetryInline(Duration),
    /// Send the remaining events to this retry queue.
    Requeue(usize),
    /// Give up: record the events as failed and park them.
    Park,
}

/// Decides the next step after the `inline_retry`-th in-process retry failed (0 after the
/// first call) on a message that has already made `attempt` trips through the retry queues.
pub fn next_step(
    inline_retry: u32,
    attempt: u32,
    retry_after: Option<Duration>,
    policy: &RetryPolicy,
    jitter_fraction: f64,
) -> NextStep {
    if inline_retry < policy.inline_retries {
        let delay = retry_delay(
            inline_retry + 1,
            retry_after,
            policy.inline_base,
            policy.inline_max,
            jitter_fraction,
        );
        if delay <= policy.inline_max {
            return NextStep::RetryInline(delay);
        }
    }
    if attempt >= policy.max_attempts {
        NextStep::Park
    } else {
        NextStep::Requeue(retry_queue_for(
            attempt + 1,
            retry_after,
            &policy.queue_delays,
        ))
    }
}

/// Reads a `Retry-After` header value: whole seconds (the form rate limiters send). An HTTP
/// date or garbage yields `None`, and the normal schedule applies.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}
