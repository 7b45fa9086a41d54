//! What the forwarder reads back: the failures recorded (written with the parts of a chunk,
//! see [`crate::Store::record_outcome`]), and stored events for replay.

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;

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

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The rows of a replay: a tenant's (`$1`), from the cursor (`$2` received at, `$4` row id;
/// exclusive) to `$3` (received before), in `(received_at, id)` order — the order of the
/// `(tenant, received_at, id)` index of each day partition, so a page is one range of it in
/// each partition the window overlaps, whatever the table's size.
/// `received_at >= $2` is implied by the row comparison but spelled out: PostgreSQL prunes
/// partitions by plain comparisons only, and without it every page would read every older
/// day partition (measured: 7 empty ones cost 3.9 ms of a 4.5 ms page).
/// A macro, not a const, so that [`REPLAY_PAGE`] and the count share the text with `concat!`.
macro_rules! replay_where {
    () => {
        "WHERE tenant = $1 AND received_at >= $2 AND received_at < $3 AND (received_at, id) > ($2, $4)"
    };
}

/// A page of [`replay_where`], `$5` rows at most.
pub(crate) const REPLAY_PAGE: &str = concat!(
    "SELECT id, chunk_id, tenant, event_id, occurred_at, subscriber, asset_id, interaction, ",
    "rating, comment, context_id, device, received_at, original_occurred_at FROM events ",
    replay_where!(),
    " ORDER BY received_at, id LIMIT $5"
);

/// How many rows of [`replay_where`] there are.
const REPLAY_COUNT: &str = concat!("SELECT count(*) AS n FROM events ", replay_where!());

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
    /// of those that arrived at `since` exactly (0: from `since`) — the cursor a replay keeps:
    /// the arrival time and id of the last row it settled.
    pub async fn count_received(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: i64,
    ) -> Result<i64, StoreError> {
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(REPLAY_COUNT)
                .bind::<Text, _>(tenant)
                .bind::<Timestamptz, _>(since)
                .bind::<Timestamptz, _>(until)
                .bind::<BigInt, _>(after_id)
                .get_result::<Count>(conn)
                .await?
                .n)
        })
        .await
    }

    /// Up to `limit` of a tenant's events that arrived in `[since, until)`, after the row
    /// `after_id` of those that arrived at `since` (0: from `since`), in replay order — by
    /// arrival, then row id: page through with the last row's `received_at` as `since` and its
    /// id as `after_id`. Each page is one range of the replay index (`(tenant, received_at,
    /// id)`) of the partitions the window overlaps, merged in order.
    pub async fn received_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(REPLAY_PAGE)
                .bind::<Text, _>(tenant)
                .bind::<Timestamptz, _>(since)
                .bind::<Timestamptz, _>(until)
                .bind::<BigInt, _>(after_id)
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
}
