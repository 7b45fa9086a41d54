//! What the forwarder reads back: the failures recorded (written with the parts of a chunk,
//! see [`crate::Store::record_outcome`]), stored events for replay, and the deleting of
//! forwarded events for retention.

use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Integer, Nullable, Text, Timestamptz};
use diesel::{ExpressionMethods, QueryDsl, QueryableByName, SelectableHelper};
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

    /// How many of a tenant's events arrived in `[since, until)`.
    pub async fn count_received(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: i64,
    ) -> Result<i64, StoreError> {
        self.with_connection(async |conn| {
            Ok(events::table
                .filter(events::tenant.eq(tenant))
                .filter(events::received_at.ge(since))
                .filter(events::received_at.lt(until))
                .filter(events::id.gt(after_id))
                .count()
                .get_result(conn)
                .await?)
        })
        .await
    }

    /// Up to `limit` of a tenant's events that arrived in `[since, until)`, with row ids above
    /// `after_id`, in id order: page through with the last id seen.
    pub async fn received_page(
        &self,
        tenant: &str,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.with_connection(async |conn| {
            Ok(events::table
                .filter(events::tenant.eq(tenant))
                .filter(events::received_at.ge(since))
                .filter(events::received_at.lt(until))
                .filter(events::id.gt(after_id))
                .order(events::id)
                .limit(limit)
                .select(StoredEvent::as_select())
                .load(conn)
                .await?)
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
