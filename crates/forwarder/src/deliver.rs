//! Delivering one chunk's events to Ncanto.
//!
//! Events go out in calls of `NCANTO_BATCH_SIZE`. A transient failure is retried in process
//! per [`crate::retry::next_step`]; if it persists, that batch and every later one go back
//! through a retry queue (nothing more is sent to an Ncanto that is failing). A permanent
//! failure is narrowed down by halving the batch until the refused events are isolated, so
//! the good events in it still arrive; the refused ones are reported as failed.
//!
//! Outcomes name events by their index in the slice given, so the caller can tell exactly
//! which events of its message (and so which positions of the chunk) each outcome is about.

use std::ops::Range;
use std::time::Duration;

use interaction_core::{Event, Interaction};
use interaction_runtime::random_fraction;

use crate::ncanto::NcantoClient;
use crate::retry::{NextStep, RetryPolicy, SendError, next_step, retry_queue_for};

/// An event that will not be delivered, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedEvent {
    /// Its index in the events given.
    pub index: usize,
    /// Why, for people.
    pub reason: String,
    /// Ncanto's status, when it answered.
    pub status: Option<u16>,
}

/// Events to try again later through a retry queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Requeue {
    /// Indexes (in the events given) of the events still to deliver, in order.
    pub indexes: Vec<Range<usize>>,
    /// Index of the retry queue.
    pub queue: usize,
    /// The last failure, for logs.
    pub reason: String,
}

/// What became of a chunk's events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChunkOutcome {
    /// Indexes (in the events given) of the events Ncanto accepted.
    pub delivered: Vec<Range<usize>>,
    /// Events refused for good, or out of retries.
    pub failed: Vec<FailedEvent>,
    /// Events to retry later.
    pub requeue: Option<Requeue>,
}

impl ChunkOutcome {
    /// How many events Ncanto accepted.
    pub fn delivered_count(&self) -> usize {
        self.delivered.iter().map(|r| r.len()).sum()
    }
}

/// Delivers `events` of `tenant`, on the message's `attempt`-th trip through the retry
/// queues (0 on first delivery).
pub async fn deliver_chunk(
    client: &NcantoClient,
    policy: &RetryPolicy,
    tenant: &str,
    events: &[Event],
    attempt: u32,
) -> ChunkOutcome {
    let call = Call {
        client,
        policy,
        tenant,
        events,
        attempt,
    };
    let mut outcome = ChunkOutcome::default();
    let mut leftover: Vec<Range<usize>> = Vec::new();
    let mut last_transient: Option<(String, Option<Duration>)> = None;
    let size = client.batch_size();
    let mut start = 0;
    while start < events.len() {
        let range = start..(start + size).min(events.len());
        start = range.end;
        if !leftover.is_empty() {
            // Ncanto is failing: keep the rest for the retry queue rather than hammer it.
            leftover.push(range);
            continue;
        }
        match call.send_with_retries(range.clone()).await {
            Ok(()) => outcome.delivered.push(range),
            Err(SendError::Transient {
                reason,
                retry_after,
            }) => {
                last_transient = Some((reason, retry_after));
                leftover.push(range);
            }
            Err(SendError::Permanent { reason, status }) if range.len() == 1 => {
                outcome.failed.push(FailedEvent {
                    index: range.start,
                    reason,
                    status: Some(status),
                });
            }
            Err(SendError::Permanent { .. }) => {
                let (delivered, failed, transient) = call.isolate(range).await;
                outcome.delivered.extend(delivered);
                outcome.failed.extend(failed);
                if let Some((transient_range, reason, retry_after)) = transient {
                    last_transient = Some((reason, retry_after));
                    leftover.extend(transient_range);
                }
            }
        }
    }
    if let Some((reason, retry_after)) = last_transient {
        // Halving pushes ranges out of order: the retried message keeps chunk order.
        leftover.sort_by_key(|range| range.start);
        if attempt >= policy.max_attempts {
            outcome
                .failed
                .extend(leftover.into_iter().flatten().map(|index| FailedEvent {
                    index,
                    reason: format!(
                        "gave up after {} retry rounds; last failure: {reason}",
                        attempt + 1
                    ),
                    status: None,
                }));
        } else {
            outcome.requeue = Some(Requeue {
                indexes: leftover,
                queue: retry_queue_for(attempt + 1, retry_after, &policy.queue_delays),
                reason,
            });
        }
    }
    outcome
}

struct Call<'a> {
    client: &'a NcantoClient,
    policy: &'a RetryPolicy,
    tenant: &'a str,
    events: &'a [Event],
    attempt: u32,
}

impl Call<'_> {
    async fn send_with_retries(&self, range: Range<usize>) -> Result<(), SendError> {
        let batch: Vec<&Interaction> = self.events[range].iter().map(|e| &e.interaction).collect();
        let mut inline_retry = 0;
        loop {
            let error = match self.client.send(self.tenant, &batch).await {
                Ok(()) => return Ok(()),
                Err(error @ SendError::Permanent { .. }) => return Err(error),
                Err(error) => error,
            };
            let SendError::Transient { retry_after, .. } = &error else {
                return Err(error);
            };
            match next_step(
                inline_retry,
                self.attempt,
                *retry_after,
                self.policy,
                random_fraction(),
            ) {
                NextStep::RetryInline(delay) => {
                    metrics::counter!("forwarder_inline_retries_total").increment(1);
                    tokio::time::sleep(delay).await;
                    inline_retry += 1;
                }
                NextStep::Requeue(_) | NextStep::Park => return Err(error),
            }
        }
    }

    /// Halves a refused batch until the refused events are alone. Returns the ranges
    /// delivered on the way, the events refused, and the ranges that failed transiently
    /// meanwhile (with the reason), which go to the retry queue.
    async fn isolate(
        &self,
        range: Range<usize>,
    ) -> (
        Vec<Range<usize>>,
        Vec<FailedEvent>,
        Option<(Vec<Range<usize>>, String, Option<Duration>)>,
    ) {
        let mut delivered = Vec::new();
        let mut failed = Vec::new();
        let mut transient: Vec<Range<usize>> = Vec::new();
        let mut transient_reason = None;
        // Halves are split from the already-refused batch; start with them.
        let mut stack = split(range);
        while let Some(part) = stack.pop() {
            if transient_reason.is_some() {
                transient.push(part);
                continue;
            }
            match self.send_with_retries(part.clone()).await {
                Ok(()) => delivered.push(part),
                Err(SendError::Permanent { reason, status }) if part.len() == 1 => {
                    failed.push(FailedEvent {
                        index: part.start,
                        reason,
                        status: Some(status),
                    });
                }
                Err(SendError::Permanent { .. }) => stack.extend(split(part)),
                Err(SendError::Transient {
                    reason,
                    retry_after,
                }) => {
                    transient.push(part);
                    transient_reason = Some((reason, retry_after));
                }
            }
        }
        let transient =
            transient_reason.map(|(reason, retry_after)| (transient, reason, retry_after));
        (delivered, failed, transient)
    }
}

/// The two halves of a range of at least two, second half first on the stack so the first
/// half is tried first. A single event stays itself.
fn split(range: Range<usize>) -> Vec<Range<usize>> {
    if range.len() < 2 {
        return vec![range];
    }
    let middle = range.start + range.len() / 2;
    vec![middle..range.end, range.start..middle]
}
