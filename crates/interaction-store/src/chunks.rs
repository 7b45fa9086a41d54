//! Writing chunks of events, and moving chunks through their states.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz};
use diesel::{
    BoolExpressionMethods, ExpressionMethods, QueryDsl, QueryableByName, Selectable,
    SelectableHelper,
};
use diesel_async::{AsyncConnection, RunQueryDsl};
use interaction_core::{Device, Event, Interaction, InteractionType, Setting};

use crate::schema::{chunks, events};
use crate::{Store, StoreError};

/// Writes one tenant's events and their chunk row in ONE statement: the chunk id comes from
/// the sequence, the events go in through `UNNEST` (one array per column), duplicates of a
/// stored `(tenant, event_id)` are skipped, and the chunk row is written only if at least one
/// event was, with the number actually written.
const INSERT_CHUNK: &str = "\
WITH chunk AS (SELECT nextval(pg_get_serial_sequence('chunks', 'id')) AS id),
inserted AS (
    INSERT INTO events (chunk_id, tenant, event_id, occurred_at, subscriber, asset_id,
                        interaction, rating, comment, context_id, device)
    SELECT chunk.id, $1, u.event_id, u.occurred_at, u.subscriber, u.asset_id,
           u.interaction, u.rating, u.comment, u.context_id, u.device
    FROM chunk, UNNEST($2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                       $7::float8[], $8::text[], $9::text[], $10::text[])
         AS u(event_id, occurred_at, subscriber, asset_id, interaction, rating, comment,
              context_id, device)
    ON CONFLICT (tenant, event_id) WHERE event_id IS NOT NULL DO NOTHING
    RETURNING event_id
),
counted AS (SELECT count(*) AS n FROM inserted),
new_chunk AS (
    INSERT INTO chunks (id, tenant, event_count)
    SELECT chunk.id, $1, counted.n FROM chunk, counted WHERE counted.n > 0
    RETURNING id
)
SELECT (SELECT id FROM new_chunk) AS chunk_id,
       (SELECT n FROM counted) AS inserted,
       ARRAY(SELECT event_id FROM inserted WHERE event_id IS NOT NULL) AS inserted_ids";

/// What writing one tenant's events produced.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct InsertedChunk {
    /// The new chunk; `None` when every event was a duplicate (no chunk is written then).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub chunk_id: Option<i64>,
    /// Events written.
    #[diesel(sql_type = BigInt)]
    pub inserted: i64,
    /// The `eventId`s of the events written; an `eventId` sent but missing here was a
    /// duplicate. A repeated id within one chunk appears once: its first occurrence won.
    #[diesel(sql_type = Array<Text>)]
    pub inserted_ids: Vec<String>,
}

/// A chunk claimed for (re-)publishing, with its events.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkToPublish {
    /// The chunk.
    pub chunk_id: i64,
    /// Whose events.
    pub tenant: String,
    /// The events, in the order they were written.
    pub events: Vec<Event>,
}

/// One stored event row, as read back.
#[derive(Debug, Clone, PartialEq, diesel::Queryable, Selectable)]
#[diesel(table_name = events, check_for_backend(diesel::pg::Pg))]
pub struct StoredEvent {
    /// Row id.
    pub id: i64,
    /// The chunk it was written with.
    pub chunk_id: i64,
    /// Tenant.
    pub tenant: String,
    /// Client idempotency key.
    pub event_id: Option<String>,
    /// `timestamp`.
    pub occurred_at: DateTime<Utc>,
    /// `subscriber`.
    pub subscriber: String,
    /// `assetId`.
    pub asset_id: String,
    /// `interaction`.
    pub interaction: String,
    /// `ratingEquivalent`.
    pub rating: f64,
    /// `comment`.
    pub comment: Option<String>,
    /// `contextId`.
    pub context_id: Option<String>,
    /// `setting.device`.
    pub device: String,
    /// When ingest-api stored it.
    pub received_at: DateTime<Utc>,
}

impl StoredEvent {
    /// The normalized event again. Rows are only ever written from normalized events, so the
    /// names parse; a row edited by hand into something else is reported, not guessed.
    pub fn to_event(&self) -> Result<Event, StoreError> {
        let corrupt = |what: &str, value: &str| {
            StoreError::Corrupt(format!("event row {}: unknown {what} {value:?}", self.id))
        };
        Ok(Event {
            interaction: Interaction {
                timestamp: self.occurred_at,
                subscriber: self.subscriber.clone(),
                asset_id: self.asset_id.clone(),
                interaction: InteractionType::parse(&self.interaction)
                    .ok_or_else(|| corrupt("interaction", &self.interaction))?,
                rating_equivalent: self.rating,
                comment: self.comment.clone(),
                context_id: self.context_id.clone(),
                setting: Setting {
                    device: Device::parse(&self.device)
                        .ok_or_else(|| corrupt("device", &self.device))?,
                },
            },
            event_id: self.event_id.clone(),
        })
    }
}

/// Writes one tenant's events as one chunk on `conn` (see [`INSERT_CHUNK`]).
async fn insert_chunk(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant: &str,
    batch: &[&Event],
) -> Result<InsertedChunk, diesel::result::Error> {
    let n = batch.len();
    let mut event_ids = Vec::with_capacity(n);
    let mut occurred = Vec::with_capacity(n);
    let mut subscribers = Vec::with_capacity(n);
    let mut assets = Vec::with_capacity(n);
    let mut interactions = Vec::with_capacity(n);
    let mut ratings = Vec::with_capacity(n);
    let mut comments = Vec::with_capacity(n);
    let mut contexts = Vec::with_capacity(n);
    let mut devices = Vec::with_capacity(n);
    for event in batch {
        let i = &event.interaction;
        event_ids.push(event.event_id.as_deref());
        occurred.push(i.timestamp);
        subscribers.push(i.subscriber.as_str());
        assets.push(i.asset_id.as_str());
        interactions.push(i.interaction.as_str());
        ratings.push(i.rating_equivalent);
        comments.push(i.comment.as_deref());
        contexts.push(i.context_id.as_deref());
        devices.push(i.setting.device.as_str());
    }
    diesel::sql_query(INSERT_CHUNK)
        .bind::<Text, _>(tenant)
        .bind::<Array<Nullable<Text>>, _>(event_ids)
        .bind::<Array<Timestamptz>, _>(occurred)
        .bind::<Array<Text>, _>(subscribers)
        .bind::<Array<Text>, _>(assets)
        .bind::<Array<Text>, _>(interactions)
        .bind::<Array<Double>, _>(ratings)
        .bind::<Array<Nullable<Text>>, _>(comments)
        .bind::<Array<Nullable<Text>>, _>(contexts)
        .bind::<Array<Text>, _>(devices)
        .get_result(conn)
        .await
}

impl Store {
    /// Writes each tenant's events as one chunk, all in one transaction, and returns what
    /// each write produced, in order. Nothing is written if anything fails.
    pub async fn insert_chunks(
        &self,
        groups: &[(&str, Vec<&Event>)],
    ) -> Result<Vec<InsertedChunk>, StoreError> {
        self.with_connection(async |conn| {
            if let [(tenant, batch)] = groups {
                // One statement is its own transaction: no BEGIN/COMMIT round trips.
                return Ok(vec![insert_chunk(conn, tenant, batch).await?]);
            }
            let results = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    let mut results = Vec::with_capacity(groups.len());
                    for (tenant, batch) in groups {
                        results.push(insert_chunk(conn, tenant, batch).await?);
                    }
                    Ok(results)
                })
                .await?;
            Ok(results)
        })
        .await
    }

    /// Marks chunks as confirmed by the broker (one statement). Chunks already further along
    /// are left as they are.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.with_connection(async |conn| {
            Ok(diesel::update(
                chunks::table
                    .filter(chunks::id.eq_any(ids))
                    .filter(chunks::state.eq("pending")),
            )
            .set((
                chunks::state.eq("published"),
                chunks::published_at.eq(diesel::dsl::now),
                chunks::leased_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await?)
        })
        .await
    }

    /// Claims up to `limit` chunks that have stayed unpublished for longer than `older_than`
    /// and are not leased by another relay, leases them for `lease`, and returns them with
    /// their events. `FOR UPDATE SKIP LOCKED` lets many replicas claim at once without
    /// waiting on or taking each other's chunks; the lease keeps them apart afterwards while
    /// no transaction is held open during publishing.
    pub async fn claim_unpublished(
        &self,
        older_than: Duration,
        lease: Duration,
        limit: i64,
    ) -> Result<Vec<ChunkToPublish>, StoreError> {
        let now = Utc::now();
        let cutoff = now - chrono::TimeDelta::from_std(older_than).unwrap_or_default();
        let until = now + chrono::TimeDelta::from_std(lease).unwrap_or_default();
        self.with_connection(async |conn| {
            let claimed: Vec<(i64, String)> = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    let ids: Vec<i64> = chunks::table
                        .filter(chunks::state.eq("pending"))
                        .filter(chunks::created_at.lt(cutoff))
                        .filter(
                            chunks::leased_until
                                .is_null()
                                .or(chunks::leased_until.lt(now)),
                        )
                        .order(chunks::created_at)
                        .limit(limit)
                        .select(chunks::id)
                        .for_update()
                        .skip_locked()
                        .load(conn)
                        .await?;
                    diesel::update(chunks::table.filter(chunks::id.eq_any(&ids)))
                        .set(chunks::leased_until.eq(until))
                        .returning((chunks::id, chunks::tenant))
                        .get_results(conn)
                        .await
                })
                .await?;
            if claimed.is_empty() {
                return Ok(Vec::new());
            }
            let ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
            let mut by_chunk = self.load_events(conn, &ids).await?;
            let mut out: Vec<ChunkToPublish> = claimed
                .into_iter()
                .map(|(chunk_id, tenant)| ChunkToPublish {
                    events: by_chunk.remove(&chunk_id).unwrap_or_default(),
                    chunk_id,
                    tenant,
                })
                .collect();
            out.sort_by_key(|c| c.chunk_id);
            Ok(out)
        })
        .await
    }

    /// The events of the given chunks, by chunk, in write order.
    async fn load_events(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        ids: &[i64],
    ) -> Result<HashMap<i64, Vec<Event>>, StoreError> {
        let rows: Vec<StoredEvent> = events::table
            .filter(events::chunk_id.eq_any(ids))
            .order(events::id)
            .select(StoredEvent::as_select())
            .load(conn)
            .await?;
        let mut by_chunk: HashMap<i64, Vec<Event>> = HashMap::new();
        for row in rows {
            by_chunk
                .entry(row.chunk_id)
                .or_default()
                .push(row.to_event()?);
        }
        Ok(by_chunk)
    }

    /// Every stored event row of a chunk, in write order.
    pub async fn chunk_events(&self, chunk_id: i64) -> Result<Vec<StoredEvent>, StoreError> {
        self.with_connection(async |conn| {
            Ok(events::table
                .filter(events::chunk_id.eq(chunk_id))
                .order(events::id)
                .select(StoredEvent::as_select())
                .load(conn)
                .await?)
        })
        .await
    }
}
