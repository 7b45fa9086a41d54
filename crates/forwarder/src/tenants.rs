//! Per-tenant counts of events by stage: `GET /tenants` on the admin port (from the database,
//! on demand), and the `pending_events{tenant}` gauge (refreshed in the background).
//!
//! The tenant label's values are tenants ingest-api stored events for: those of its configured
//! API keys (`API_KEYS`). So the gauge has one series per configured tenant, never one per
//! client, subscriber or event.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use interaction_store::{Store, StoreError};
use serde::Serialize;
use tokio::sync::watch;

/// One tenant's counts in `GET /tenants`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Events stored (retention removes forwarded ones after `PURGE_OLDER_THAN`).
    pub accepted: i64,
    /// Of those, delivered to Ncanto.
    pub delivered: i64,
    /// Without an outcome yet: not published, in flight or in a retry queue.
    pub pending: i64,
    /// Refused (or out of retries), recorded and parked, and not delivered since.
    pub parked: i64,
}

/// Every tenant's counts, by tenant. One scan of `chunks` (one row per chunk; `events` is
/// not read): fine for an operator's call, not for polling.
pub async fn counts(store: &Store) -> Result<BTreeMap<String, Counts>, StoreError> {
    Ok(store
        .tenant_counts()
        .await?
        .into_iter()
        .map(|c| {
            (
                c.tenant,
                Counts {
                    accepted: c.accepted,
                    delivered: c.delivered,
                    pending: c.pending,
                    parked: c.parked,
                },
            )
        })
        .collect())
}

/// The tenants the `pending_events` gauge has a series for.
#[derive(Debug, Default)]
pub struct PendingGauge {
    reported: BTreeSet<String>,
}

impl PendingGauge {
    /// The values to set after reading `rows` (tenants with pending events): each of them,
    /// and 0 for every tenant reported before that is no longer among them — a gauge keeps
    /// its last value otherwise, and a drained backlog would look stuck.
    pub fn update(&mut self, rows: Vec<(String, i64)>) -> Vec<(String, i64)> {
        let current: BTreeSet<String> = rows.iter().map(|(tenant, _)| tenant.clone()).collect();
        let drained: Vec<(String, i64)> = self
            .reported
            .difference(&current)
            .map(|tenant| (tenant.clone(), 0))
            .collect();
        self.reported.extend(current);
        rows.into_iter().chain(drained).collect()
    }
}

/// Refreshes `pending_events{tenant}` every `every` until `stop` turns true: one GROUP BY
/// over unfinished chunks ([`Store::pending_by_tenant`]), whose events count unless
/// delivered or refused. Every replica reports the same values (they come from the shared
/// database): aggregate them with `max by (tenant)`, not `sum`. While the database is away
/// the gauge keeps its last values.
pub async fn refresh_pending(store: Store, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut gauge = PendingGauge::default();
    loop {
        match store.pending_by_tenant().await {
            Ok(rows) => {
                for (tenant, pending) in gauge.update(rows) {
                    metrics::gauge!("pending_events", "tenant" => tenant).set(pending as f64);
                }
            }
            Err(error) => log::debug!("pending_events not refreshed: {error}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pending events by tenant.
    type Pending = &'static [(&'static str, i64)];

    fn rows(pairs: Pending) -> Vec<(String, i64)> {
        pairs.iter().map(|(t, n)| ((*t).to_owned(), *n)).collect()
    }

    #[test]
    fn tenants_whose_backlog_drained_are_set_to_zero_once_seen() {
        let mut gauge = PendingGauge::default();
        // Successive refreshes → the values set by each.
        let table: [(Pending, Pending); 4] = [
            (&[("acme", 5), ("globex", 2)], &[("acme", 5), ("globex", 2)]),
            (&[("acme", 3)], &[("acme", 3), ("globex", 0)]),
            (&[], &[("acme", 0), ("globex", 0)]),
            (
                &[("initech", 1)],
                &[("initech", 1), ("acme", 0), ("globex", 0)],
            ),
        ];
        for (read, set) in table {
            assert_eq!(gauge.update(rows(read)), rows(set), "{read:?}");
        }
    }
}
