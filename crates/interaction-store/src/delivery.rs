//! What the forwarder reads back: the failures recorded (written with the parts of a chunk,
//! see [`crate::Store::record_outcome`]), stored events for replay, and the deleting of
//! forwarded events for retention.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use diesel::{OptionalExtension, QueryDsl, QueryableByName};
use diesel_async::RunQueryDsl;

use crate::schema::events;
use crate::{Store, StoreError, StoredEvent};

/// A recorded failure, as read back.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct FailureRow {
    /// The chunk the event came with.
    #[diesel(sql_type = BigInt)]
    pub chunk_id: i64,
    /// Its position in the chunk (`None` on rows recorded before positions were).
    #[diesel(sql_type = Nullable<Integer>)]
    pub position: Option<i32>,
    /// Tenant.
    #[diesel(sql_type = Text)]
    pub tenant: String,
    /// The event as JSON (canonical fields plus `eventId`).
    #[diesel(sql_type = Text)]
    pub event: String,
    /// Why.
    #[diesel(sql_type = Text)]
    pub reason: String,
    /// Ncanto's status.
    #[diesel(sql_type = Nullable<Integer>)]
    pub status: Option<i32>,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Event rows.
    pub events: i64,
    /// Chunk rows (emptied by earlier batches).
    pub chunks: i64,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The rows of a replay: a tenant's (`$1`), from the cursor (`$2` received at, `$4` row id;
/// exclusive) to `$3` (received before), in `(received_at, id)` order — the order of the
/// `events_tenant_received` index, so a page is one range of it, whatever the table's size.
/// A macro, not a const, so that [`REPLAY_PAGE`] and the count share the text with `concat!`.
macro_rules! replay_where {
    () => {
        "WHERE tenant = $1 AND received_at < $3 AND (received_at, id) > ($2, $4)"
    };
}

/// A page of [`replay_where`], `$5` rows at most.
const REPLAY_PAGE: &str = concat!(
    "SELECT id, chunk_id, tenant, event_id, occurred_at, subscriber, asset_id, interaction, ",
    "rating, comment, context_id, device, received_at, original_occurred_at FROM events ",
    replay_where!(),
    " ORDER BY received_at, id LIMIT $5"
);

/// How many rows of [`replay_where`] there are.
const REPLAY_COUNT: &str = concat!("SELECT count(*) AS n FROM events ", replay_where!());

/// Where a replay resumes: just after row `after_id` (found by its primary key) in
/// `(received_at, id)` order, or at `since` for 0 or a row from before the window.
async fn replay_cursor(
    conn: &mut crate::Connection,
    since: DateTime<Utc>,
    after_id: i64,
) -> Result<(DateTime<Utc>, i64), StoreError> {
    if after_id <= 0 {
        return Ok((since, 0));
    }
    let received: Option<DateTime<Utc>> = events::table
        .find(after_id)
        .select(events::received_at)
        .first(conn)
        .await
        .optional()?;
    match received {
        Some(at) if at >= since => Ok((at, after_id)),
        Some(_) => Ok((since, 0)),
        None => Err(StoreError::Corrupt(format!(
            "no event row {after_id} to resume after (purged since?); resume with a later \
             --since instead"
        ))),
    }
}

#[derive(QueryableByName)]
struct Explained {
    #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
    plan: String,
}

/// The gist of PostgreSQL's plan for a query.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPlan {
    /// The top node (`Limit`), then the nodes under it, outermost first, e.g.
    /// `["Limit", "Index Scan"]`.
    pub nodes: Vec<String>,
    /// The index read, if any.
    pub index: Option<String>,
    /// The planner's total cost estimate of the whole query.
    pub total_cost: f64,
    /// The rows it expects.
    pub rows: f64,
}

impl QueryPlan {
    fn from_json(text: &str) -> Result<Self, StoreError> {
        let bad = || StoreError::Corrupt(format!("unexpected EXPLAIN output: {text}"));
        let value: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
        let top = value.get(0).and_then(|v| v.get("Plan")).ok_or_else(bad)?;
        let mut nodes = Vec::new();
        let mut index = None;
        let mut node = Some(top);
        while let Some(current) = node {
            if let Some(kind) = current.get("Node Type").and_then(|v| v.as_str()) {
                nodes.push(kind.to_owned());
            }
            if index.is_none() {
                index = current
                    .get("Index Name")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned);
            }
            node = current.get("Plans").and_then(|plans| plans.get(0));
        }
        Ok(Self {
            nodes,
            index,
            total_cost: top
                .get("Total Cost")
                .and_then(|v| v.as_f64())
                .ok_or_else(bad)?,
            rows: top
                .get("Plan Rows")
                .and_then(|v| v.as_f64())
                .ok_or_else(bad)?,
        })
    }
}

impl std::fmt::Display for QueryPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.nodes.join(" → "))?;
        if let Some(index) = &self.index {
            write!(f, " using {index}")?;
        }
        write!(
            f,
            " (cost {:.1}, ~{} rows per page)",
            self.total_cost, self.rows
        )
    }
}

impl Store {
    /// The failures recorded for a chunk, oldest first.
    pub async fn failures(&self, chunk_id: i64) -> Result<Vec<FailureRow>, StoreError> {
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(
                "SELECT chunk_id, position, tenant, event::text AS event, reason, status
                 FROM event_failures WHERE chunk_id = $1 ORDER BY position NULLS LAST, id",
            )
            .bind::<BigInt, _>(chunk_id)
            .load(conn)
            .await?)
        })
        .await
    }

    /// How many of a tenant's events arrived in `[since, until)`, after the row `after_id`
    /// in replay order (0: from `since`).
    pub async fn count_received(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: i64,
    ) -> Result<i64, StoreError> {
        self.with_connection(async |conn| {
            let (from, after) = replay_cursor(conn, since, after_id).await?;
            Ok(diesel::sql_query(REPLAY_COUNT)
                .bind::<Text, _>(tenant)
                .bind::<Timestamptz, _>(from)
                .bind::<Timestamptz, _>(until)
                .bind::<BigInt, _>(after)
                .get_result::<Count>(conn)
                .await?
                .n)
        })
        .await
    }

    /// Up to `limit` of a tenant's events that arrived in `[since, until)`, after the row
    /// `after_id` (0: from `since`), in replay order — by arrival, then row id: page through
    /// with the last id seen. Each page is one range of the `events_tenant_received` index.
    pub async fn received_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.with_connection(async |conn| {
            let (from, after) = replay_cursor(conn, since, after_id).await?;
            Ok(diesel::sql_query(REPLAY_PAGE)
                .bind::<Text, _>(tenant)
                .bind::<Timestamptz, _>(from)
                .bind::<Timestamptz, _>(until)
                .bind::<BigInt, _>(after)
                .bind::<BigInt, _>(limit)
                .load(conn)
                .await?)
        })
        .await
    }

    /// How PostgreSQL will read a page of [`Self::received_page`] for this tenant and window:
    /// `forwarder replay` prints it before it starts, so an operator sees a sequential scan
    /// of a billion rows coming instead of finding out an hour later.
    pub async fn replay_plan(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: i64,
    ) -> Result<QueryPlan, StoreError> {
        self.with_connection(async |conn| {
            let explained = diesel::sql_query(format!("EXPLAIN (FORMAT JSON) {REPLAY_PAGE}"))
                .bind::<Text, _>(tenant)
                .bind::<Timestamptz, _>(since)
                .bind::<Timestamptz, _>(until)
                .bind::<BigInt, _>(0)
                .bind::<BigInt, _>(limit)
                .get_result::<Explained>(conn)
                .await?;
            QueryPlan::from_json(&explained.plan)
        })
        .await
    }

    /// How many events [`Self::purge_forwarded`] would delete for `cutoff`.
    pub async fn count_purgeable(&self, cutoff: DateTime<Utc>) -> Result<i64, StoreError> {
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(
                "SELECT count(*) AS n FROM events e JOIN chunks c ON c.id = e.chunk_id
                 WHERE e.received_at < $1 AND c.state = 'forwarded'",
            )
            .bind::<Timestamptz, _>(cutoff)
            .get_result::<Count>(conn)
            .await?
            .n)
        })
        .await
    }

    /// Deletes up to `batch` events that arrived before `cutoff` and whose chunk was forwarded,
    /// then up to `batch` forwarded chunks created before `cutoff` that no longer have events.
    /// Events of failed or unfinished chunks are never deleted. Call until nothing is left.
    pub async fn purge_forwarded(
        &self,
        cutoff: DateTime<Utc>,
        batch: i64,
    ) -> Result<Purged, StoreError> {
        self.with_connection(async |conn| {
            let events = diesel::sql_query(
                "WITH doomed AS (
                     SELECT e.id FROM events e JOIN chunks c ON c.id = e.chunk_id
                     WHERE e.received_at < $1 AND c.state = 'forwarded'
                     LIMIT $2
                 ), gone AS (DELETE FROM events WHERE id IN (SELECT id FROM doomed) RETURNING 1)
                 SELECT count(*) AS n FROM gone",
            )
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(batch)
            .get_result::<Count>(conn)
            .await?
            .n;
            let chunks = diesel::sql_query(
                "WITH doomed AS (
                     SELECT c.id FROM chunks c
                     WHERE c.state = 'forwarded' AND c.created_at < $1
                       AND NOT EXISTS (SELECT 1 FROM events e WHERE e.chunk_id = c.id)
                     ORDER BY c.created_at
                     LIMIT $2
                 ), gone AS (DELETE FROM chunks WHERE id IN (SELECT id FROM doomed) RETURNING 1)
                 SELECT count(*) AS n FROM gone",
            )
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(batch)
            .get_result::<Count>(conn)
            .await?
            .n;
            Ok(Purged { events, chunks })
        })
        .await
    }
}
