//! `forwarder replay`: sends a tenant's stored events to Ncanto again, for when Ncanto lost
//! data. Reads PostgreSQL page by page, in arrival order (each page one range of the
//! `(tenant, received_at, id)` index of the day partitions in the window; the plan is printed
//! first), resuming cleanly and never skipping: an interrupted replay names the `--since` and
//! `--after-id` to resume from, the arrival time and id of the last row of the last batch
//! Ncanto settled,
//! sends through the same client and retry policy as the consumer, optionally rate-limited,
//! with a progress display. Nothing in the database changes.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use interaction_core::Event;
use interaction_store::Store;

use crate::deliver::deliver_chunk;
use crate::ncanto::NcantoClient;
use crate::progress::Progress;
use crate::retry::RetryPolicy;

/// Rows read per page.
const PAGE: i64 = 1000;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Events in the window.
    pub total: u64,
    /// Events Ncanto accepted.
    pub sent: u64,
    /// Events Ncanto refused for good (with the first reason).
    pub refused: u64,
    /// The first refusal's reason.
    pub first_refusal: Option<String>,
    /// How PostgreSQL reads each page (printed before the replay starts).
    pub plan: String,
}

/// The window and pace of a replay.
#[derive(Debug, Clone)]
pub struct ReplayRequest {
    /// Tenant.
    pub tenant: String,
    /// Received at or after.
    pub since: DateTime<Utc>,
    /// Received before.
    pub until: DateTime<Utc>,
    /// Only count.
    pub dry_run: bool,
    /// Most events per second; 0 for no limit.
    pub rate: u32,
    /// Of the events received at `since` exactly, only those with a row id above this (0:
    /// from the start of the window): where an interrupted replay said to resume.
    pub after_id: i64,
}

/// Runs a replay.
pub async fn replay(
    store: &Store,
    client: &NcantoClient,
    policy: &RetryPolicy,
    request: &ReplayRequest,
) -> anyhow::Result<ReplayReport> {
    // Before anything long: how each page will be read, so a plan that scans the whole table
    // is seen (and the replay stopped) at once.
    let plan = store
        .replay_plan(&request.tenant, request.since, request.until, PAGE)
        .await?
        .to_string();
    log::info!("replay: each page of {PAGE} is read as {plan}");
    let total = store
        .count_received(
            &request.tenant,
            request.since,
            request.until,
            request.after_id,
        )
        .await?;
    let mut report = ReplayReport {
        total: total.max(0) as u64,
        plan,
        ..ReplayReport::default()
    };
    if request.dry_run || total == 0 {
        return Ok(report);
    }
    let mut progress = Progress::new("events", report.total);
    let started = Instant::now();
    // The last row (arrival time, id) whose event — and every one before it — Ncanto has
    // settled: where a replay interrupted now resumes without skipping or repeating a page.
    let mut settled_through = (request.since, request.after_id);
    loop {
        let page = store
            .received_page(
                &request.tenant,
                settled_through.0,
                request.until,
                settled_through.1,
                PAGE,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        let events = page
            .iter()
            .map(|row| row.to_event())
            .collect::<Result<Vec<Event>, _>>()?;
        let per_batch = client.batch_size().max(1) * 10;
        for (batch, rows) in events.chunks(per_batch).zip(page.chunks(per_batch)) {
            send_until_settled(client, policy, &request.tenant, batch, &mut report)
                .await
                .map_err(|reason| {
                    anyhow::anyhow!(
                        "Ncanto keeps failing ({reason}); replayed {} of {} events. Resume \
                         with: forwarder replay --tenant {} --since {} --until {} --after-id {}",
                        report.sent,
                        report.total,
                        request.tenant,
                        settled_through
                            .0
                            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                        request.until.to_rfc3339(),
                        settled_through.1
                    )
                })?;
            if let Some(last) = rows.last() {
                settled_through = (last.received_at, last.id);
            }
            if request.rate > 0 {
                // Pace to the average rate: sleep until `done` events are due.
                let due = Duration::from_secs_f64(
                    (report.sent + report.refused) as f64 / f64::from(request.rate),
                );
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            progress.update(report.sent + report.refused);
        }
    }
    progress.finish(report.sent + report.refused);
    Ok(report)
}

/// Sends a batch, waiting out transient failures on the retry schedule; refused events are
/// counted. Errs with the last reason once the schedule is exhausted.
async fn send_until_settled(
    client: &NcantoClient,
    policy: &RetryPolicy,
    tenant: &str,
    events: &[Event],
    report: &mut ReplayReport,
) -> Result<(), String> {
    let mut remaining = events.to_vec();
    let mut waits = 0usize;
    loop {
        // Always a first attempt for the delivery logic: the waiting between rounds is done
        // here, by the operator's command, instead of by a retry queue.
        let outcome = deliver_chunk(client, policy, tenant, &remaining, 0).await;
        report.sent += outcome.delivered_count() as u64;
        if let Some(first) = outcome.failed.first() {
            report
                .first_refusal
                .get_or_insert_with(|| first.reason.clone());
        }
        report.refused += outcome.failed.len() as u64;
        let Some(requeue) = outcome.requeue else {
            return Ok(());
        };
        waits += 1;
        if waits > policy.max_attempts as usize {
            return Err(requeue.reason);
        }
        let last = policy.queue_delays.len().saturating_sub(1);
        let wait = policy
            .queue_delays
            .get(requeue.queue.max(waits - 1).min(last))
            .copied()
            .unwrap_or(Duration::from_secs(5));
        log::warn!("replay: {}; waiting {wait:?}", requeue.reason);
        tokio::time::sleep(wait).await;
        remaining = requeue
            .indexes
            .into_iter()
            .flat_map(|range| remaining[range].to_vec())
            .collect();
    }
}
