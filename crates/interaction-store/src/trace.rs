//! What operators ask of the store: where an event is ("where is event X?") and how many
//! events each tenant has in each stage.
//!
//! **An event's path** is read from what the pipeline records anyway — the event row (when it
//! was received, in which chunk), its chunk (state, publish time, the positions delivered and
//! refused) and its `event_failures` row (reason, Ncanto's status, attempts) — so tracing
//! costs nothing on the hot path. An event's position in its chunk is not stored: it is
//! counted (the chunk index of its partition, at most one chunk's rows per event traced).
//!
//! **Lookups use indexes that exist for other reasons**; none is added for tracing, because
//! every index on `events` is paid for by every insert:
//! - by `eventId`: the idempotency key (`event_keys`, primary key) names the event's chunk and
//!   arrival time, which picks its partition; there the chunk's rows are one probe of the
//!   partition's chunk index. Keys live DEDUP_WINDOW: an event older than that (or sent
//!   without an `eventId`) is found by subscriber and time.
//! - by subscriber: a time window is required (and bounded by the caller); it picks the day
//!   partitions it overlaps, and in each a BRIN index on `received_at` narrows the scan to the
//!   block ranges received in the window; tenant and subscriber are filtered there. The cost
//!   is that of reading the window's events, whoever they belong to: fine for an operator's
//!   question about a day (callers bound the window), not for a month. Measured on 3 million
//!   events over 30 days before partitioning (PostgreSQL 15, 2 cores, after ANALYZE): one
//!   hour read 150 heap blocks in 1.4 ms, one day 1,011 blocks in 21 ms. BRIN narrows only
//!   over block ranges it has summarized, hence `autosummarize` (migration `…000030_trace`).
//!   A B-tree on (tenant, subscriber, received_at) would make the lookup a probe, at the price
//!   of another B-tree maintained by every insert into a table meant to take 60,000
//!   events/s: not worth it for an operator's question.
//!
//! `tests/store.rs` checks that both lookups can use their index (`EXPLAIN`).

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

use crate::{ChunkState, Store, StoreError};

/// The trace statement: `found` selects event rows; each gets its position (counted among its
/// chunk's rows in id order), its chunk and its failure row, if any. A chunk `forwarded`
/// before positions were recorded has every event delivered.
macro_rules! trace_statement {
    ($found:literal) => {
        concat!(
            "WITH found AS (",
            $found,
            ")
SELECT e.id AS row_id, e.tenant, e.event_id, e.subscriber, e.asset_id, e.interaction,
       e.occurred_at, e.received_at, e.chunk_id, p.position,
       c.state AS chunk_state, c.published_at,
       coalesce(c.last_delivered_at, c.forwarded_at) AS delivered_at,
       coalesce(c.state = 'forwarded' OR c.delivered @> p.position, false) AS delivered,
       coalesce(c.refused @> p.position, false) AS refused,
       f.reason, f.status, f.failed_at, f.attempts
FROM found AS e
CROSS JOIN LATERAL (
    SELECT count(*)::int4 AS position FROM events AS s
    WHERE s.chunk_id = e.chunk_id AND s.received_at = e.received_at AND s.id < e.id
) AS p
LEFT JOIN chunks AS c ON c.id = e.chunk_id
LEFT JOIN event_failures AS f
       ON f.chunk_id = e.chunk_id AND f.position = p.position AND f.position IS NOT NULL
ORDER BY e.received_at, e.id"
        )
    };
}

/// A tenant's event by `eventId` (`$1` tenant, `$2` eventId): its key in `event_keys`, then
/// its chunk's rows in the one partition of its arrival time.
pub(crate) const TRACE_BY_EVENT_ID: &str = trace_statement!(
    "SELECT e.id, e.tenant, e.event_id, e.subscriber, e.asset_id, e.interaction, e.occurred_at,
            e.received_at, e.chunk_id
     FROM event_keys AS k
     JOIN events AS e ON e.chunk_id = k.chunk_id AND e.received_at = k.received_at
                     AND e.tenant = k.tenant AND e.event_id = k.event_id
     WHERE k.tenant = $1 AND k.event_id = $2"
);

/// A subscriber's events received in `[$3, $4)`, the first `$5` (`$1` tenant, `$2`
/// subscriber): the window picks partitions, their BRIN indexes bound the scan to it.
pub(crate) const TRACE_BY_SUBSCRIBER: &str = trace_statement!(
    "SELECT id, tenant, event_id, subscriber, asset_id, interaction, occurred_at, received_at,
            chunk_id
     FROM events
     WHERE tenant = $1 AND subscriber = $2 AND received_at >= $3 AND received_at < $4
     ORDER BY received_at, id
     LIMIT $5"
);

/// Whether the database holds anything of a tenant (`$1`). The first test is one probe of
/// `event_keys` (tenants that sent `eventId`s within DEDUP_WINDOW); the second scans `chunks` until
/// it meets one of the tenant's (at once for any active tenant; the whole table, one row per
/// chunk, for a tenant never seen). Asked only when a trace found nothing.
const TENANT_KNOWN: &str = "\
SELECT EXISTS (SELECT 1 FROM event_keys WHERE tenant = $1)
    OR EXISTS (SELECT 1 FROM chunks WHERE tenant = $1) AS known";

/// Events of a multirange of positions (`int4` ranges are canonical `[lower, upper)`).
macro_rules! positions_in {
    ($column:literal) => {
        concat!(
            "(SELECT coalesce(sum(upper(r) - lower(r)), 0) FROM unnest(",
            $column,
            ") AS r)"
        )
    };
}

/// Per-tenant counts over every chunk: one sequential scan of `chunks` (one row per chunk,
/// not per event; `events` is not read). A `forwarded` chunk counts whole (its positions are
/// not even looked at); a `failed` one has every event not delivered parked (so chunks failed
/// before positions were recorded count too); an unfinished one splits into delivered,
/// refused (parked) and the rest (pending). Measured: 30,000 chunks (3 million events) in
/// 90 ms.
const TENANT_COUNTS: &str = concat!(
    "WITH sized AS (
    SELECT tenant, state, event_count,
           CASE WHEN state = 'forwarded' THEN event_count ELSE ",
    positions_in!("delivered"),
    " END AS delivered,
           CASE WHEN state = 'forwarded' THEN 0 ELSE ",
    positions_in!("refused"),
    " END AS refused
    FROM chunks
)
SELECT tenant,
       sum(event_count)::int8 AS accepted,
       sum(delivered)::int8 AS delivered,
       sum(CASE WHEN state IN ('pending', 'published') THEN event_count - delivered - refused
                ELSE 0 END)::int8 AS pending,
       sum(CASE WHEN state = 'failed' THEN event_count - delivered
                WHEN state IN ('pending', 'published') THEN refused
                ELSE 0 END)::int8 AS parked
FROM sized
GROUP BY tenant
ORDER BY tenant"
);

/// Events without an outcome yet, per tenant: only unfinished chunks (the partial index
/// `chunks_unfinished` has exactly this predicate), each counting its events neither
/// delivered nor refused. Unfinished chunks are the backlog, so this reads few rows (an
/// `Index Scan using chunks_unfinished`, then a sort by tenant).
pub(crate) const PENDING_BY_TENANT: &str = concat!(
    "SELECT tenant, sum(event_count - ",
    positions_in!("delivered"),
    " - ",
    positions_in!("refused"),
    ")::int8 AS pending
FROM chunks
WHERE state IN ('pending', 'published')
GROUP BY tenant
ORDER BY tenant"
);

/// Where an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventStatus {
    /// Committed; its chunk is not confirmed by the broker yet (the relay publishes it).
    Pending,
    /// Published; no outcome yet: in the forward queue, being delivered, or waiting in a
    /// retry queue.
    InFlight,
    /// Ncanto accepted it.
    Delivered,
    /// Refused by Ncanto for good, or out of retries: recorded in `event_failures` and
    /// parked (until a re-drive delivers it).
    Parked,
    /// Its chunk row is missing (deleted by hand): nothing is known.
    Unknown,
}

impl EventStatus {
    /// The status of an event from its chunk's state (`None`: no chunk row) and whether its
    /// position is among the chunk's delivered and refused ones.
    pub fn of(chunk: Option<ChunkState>, delivered: bool, refused: bool) -> Self {
        match chunk {
            None => EventStatus::Unknown,
            Some(ChunkState::Forwarded) => EventStatus::Delivered,
            Some(_) if delivered => EventStatus::Delivered,
            Some(_) if refused => EventStatus::Parked,
            // Every event of a failed chunk has an outcome; not delivered means refused (also
            // on chunks failed before positions were recorded).
            Some(ChunkState::Failed) => EventStatus::Parked,
            Some(ChunkState::Pending) => EventStatus::Pending,
            Some(ChunkState::Published) => EventStatus::InFlight,
        }
    }

    /// As shown to people and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::InFlight => "in_flight",
            EventStatus::Delivered => "delivered",
            EventStatus::Parked => "parked",
            EventStatus::Unknown => "unknown",
        }
    }
}

/// A refusal recorded for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedFailure {
    /// Why, as recorded.
    pub reason: String,
    /// Ncanto's HTTP status, when it answered.
    pub status: Option<u16>,
    /// When it was recorded (the latest time, if recorded more than once).
    pub failed_at: DateTime<Utc>,
    /// Delivery rounds it went through (`None` on failures recorded before they were
    /// counted).
    pub attempts: Option<u32>,
}

/// One event's path through the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct EventTrace {
    /// Its row id.
    pub row_id: i64,
    /// Tenant.
    pub tenant: String,
    /// The client's idempotency key.
    pub event_id: Option<String>,
    /// `subscriber`.
    pub subscriber: String,
    /// `assetId`.
    pub asset_id: String,
    /// `interaction`.
    pub interaction: String,
    /// `timestamp`.
    pub occurred_at: DateTime<Utc>,
    /// When ingest-api stored it.
    pub received_at: DateTime<Utc>,
    /// The chunk it was stored and published with.
    pub chunk_id: i64,
    /// Its position in the chunk (0-based, in `events.id` order).
    pub position: u32,
    /// The chunk's state (`None`: the chunk row is missing).
    pub chunk_state: Option<ChunkState>,
    /// When the broker confirmed the chunk (the last time, after a re-publish).
    pub published_at: Option<DateTime<Utc>>,
    /// Where the event is.
    pub status: EventStatus,
    /// For a delivered event: the chunk's `last_delivered_at` — when the event was delivered
    /// if its chunk went out in one delivery (the usual case), otherwise an upper bound — or,
    /// for chunks finished before that was recorded, `forwarded_at`.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Its recorded refusal, if any: why it is parked, or, on an event delivered since (by a
    /// re-drive), why it was.
    pub failure: Option<RecordedFailure>,
}

/// Counts of one tenant's events, by stage, over what the database holds (retention deletes
/// forwarded events, and their chunks, after `PURGE_OLDER_THAN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantCounts {
    /// Tenant.
    pub tenant: String,
    /// Events stored.
    pub accepted: i64,
    /// Of those, delivered to Ncanto.
    pub delivered: i64,
    /// Without an outcome yet: not published, in flight or in a retry queue.
    pub pending: i64,
    /// Refused (or out of retries) and not delivered since.
    pub parked: i64,
}

#[derive(QueryableByName)]
struct TraceRow {
    #[diesel(sql_type = BigInt)]
    row_id: i64,
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Nullable<Text>)]
    event_id: Option<String>,
    #[diesel(sql_type = Text)]
    subscriber: String,
    #[diesel(sql_type = Text)]
    asset_id: String,
    #[diesel(sql_type = Text)]
    interaction: String,
    #[diesel(sql_type = Timestamptz)]
    occurred_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    received_at: DateTime<Utc>,
    #[diesel(sql_type = BigInt)]
    chunk_id: i64,
    #[diesel(sql_type = Integer)]
    position: i32,
    #[diesel(sql_type = Nullable<Text>)]
    chunk_state: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    published_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    delivered_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Bool)]
    delivered: bool,
    #[diesel(sql_type = Bool)]
    refused: bool,
    #[diesel(sql_type = Nullable<Text>)]
    reason: Option<String>,
    #[diesel(sql_type = Nullable<Integer>)]
    status: Option<i32>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    failed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Integer>)]
    attempts: Option<i32>,
}

impl TraceRow {
    fn into_trace(self) -> Result<EventTrace, StoreError> {
        let chunk_state = self
            .chunk_state
            .map(|state| {
                state
                    .parse::<ChunkState>()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })
            .transpose()?;
        let status = EventStatus::of(chunk_state, self.delivered, self.refused);
        let failure = match (self.reason, self.failed_at) {
            (Some(reason), Some(failed_at)) => Some(RecordedFailure {
                reason,
                status: self.status.and_then(|s| u16::try_from(s).ok()),
                failed_at,
                attempts: self.attempts.and_then(|n| u32::try_from(n).ok()),
            }),
            _ => None,
        };
        Ok(EventTrace {
            row_id: self.row_id,
            tenant: self.tenant,
            event_id: self.event_id,
            subscriber: self.subscriber,
            asset_id: self.asset_id,
            interaction: self.interaction,
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            chunk_id: self.chunk_id,
            // A count of rows: never negative.
            position: u32::try_from(self.position).unwrap_or(0),
            chunk_state,
            published_at: self.published_at,
            status,
            delivered_at: (status == EventStatus::Delivered)
                .then_some(self.delivered_at)
                .flatten(),
            failure,
        })
    }
}

#[derive(QueryableByName)]
struct KnownRow {
    #[diesel(sql_type = Bool)]
    known: bool,
}

#[derive(QueryableByName)]
struct CountsRow {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = BigInt)]
    accepted: i64,
    #[diesel(sql_type = BigInt)]
    delivered: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    parked: i64,
}

#[derive(QueryableByName)]
struct PendingRow {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = BigInt)]
    pending: i64,
}

impl Store {
    /// The path of a tenant's event with this `eventId`, if one is stored (one probe of the
    /// unique index on (tenant, event_id)).
    pub async fn trace_event(
        &self,
        tenant: &str,
        event_id: &str,
    ) -> Result<Option<EventTrace>, StoreError> {
        let rows: Vec<TraceRow> = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(TRACE_BY_EVENT_ID)
                    .bind::<Text, _>(tenant)
                    .bind::<Text, _>(event_id)
                    .load(conn)
                    .await?)
            })
            .await?;
        rows.into_iter()
            .next()
            .map(TraceRow::into_trace)
            .transpose()
    }

    /// The paths of a subscriber's events received in `[since, until)`, oldest first, at
    /// most `limit`. The cost grows with the window (see the module docs): callers bound it.
    pub async fn trace_subscriber(
        &self,
        tenant: &str,
        subscriber: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<EventTrace>, StoreError> {
        let rows: Vec<TraceRow> = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(TRACE_BY_SUBSCRIBER)
                    .bind::<Text, _>(tenant)
                    .bind::<Text, _>(subscriber)
                    .bind::<Timestamptz, _>(since)
                    .bind::<Timestamptz, _>(until)
                    .bind::<BigInt, _>(limit)
                    .load(conn)
                    .await?)
            })
            .await?;
        rows.into_iter().map(TraceRow::into_trace).collect()
    }

    /// Whether the database holds any event of `tenant` (see [`TENANT_KNOWN`] for the cost:
    /// ask it when a lookup found nothing, to tell an unknown tenant from an unknown event).
    pub async fn tenant_known(&self, tenant: &str) -> Result<bool, StoreError> {
        let row: KnownRow = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(TENANT_KNOWN)
                    .bind::<Text, _>(tenant)
                    .get_result(conn)
                    .await?)
            })
            .await?;
        Ok(row.known)
    }

    /// Per-tenant counts of accepted, delivered, pending and parked events, by tenant name.
    /// One sequential scan of `chunks` (one row per chunk; `events` is not read): an
    /// operator's call, not something to poll every second.
    pub async fn tenant_counts(&self) -> Result<Vec<TenantCounts>, StoreError> {
        let rows: Vec<CountsRow> = self
            .with_connection(async |conn| Ok(diesel::sql_query(TENANT_COUNTS).load(conn).await?))
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| TenantCounts {
                tenant: row.tenant,
                accepted: row.accepted,
                delivered: row.delivered,
                pending: row.pending,
                parked: row.parked,
            })
            .collect())
    }

    /// Events without an outcome yet (neither delivered nor refused), per tenant with any,
    /// by tenant name. Reads unfinished chunks only (the backlog), through their partial
    /// index: cheap enough to refresh a gauge every few seconds.
    pub async fn pending_by_tenant(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows: Vec<PendingRow> = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(PENDING_BY_TENANT).load(conn).await?)
            })
            .await?;
        Ok(rows.into_iter().map(|r| (r.tenant, r.pending)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_events_status_follows_from_its_chunk_and_its_position() {
        use ChunkState::*;
        use EventStatus as S;
        // (chunk state, position delivered, position refused) → status
        let table = [
            (None, false, false, S::Unknown),
            (None, true, false, S::Unknown),
            (Some(Pending), false, false, S::Pending),
            (Some(Published), false, false, S::InFlight),
            (Some(Published), true, false, S::Delivered),
            (Some(Published), false, true, S::Parked),
            // `refused` never holds a delivered position; if it did, delivered wins.
            (Some(Published), true, true, S::Delivered),
            (Some(Forwarded), false, false, S::Delivered),
            (Some(Failed), true, false, S::Delivered),
            (Some(Failed), false, true, S::Parked),
            (Some(Failed), false, false, S::Parked),
        ];
        for (state, delivered, refused, want) in table {
            assert_eq!(
                EventStatus::of(state, delivered, refused),
                want,
                "{state:?} delivered={delivered} refused={refused}"
            );
        }
    }

    #[test]
    fn statuses_have_stable_names() {
        let names: Vec<&str> = [
            EventStatus::Pending,
            EventStatus::InFlight,
            EventStatus::Delivered,
            EventStatus::Parked,
            EventStatus::Unknown,
        ]
        .into_iter()
        .map(EventStatus::as_str)
        .collect();
        assert_eq!(
            names,
            ["pending", "in_flight", "delivered", "parked", "unknown"]
        );
    }
}
