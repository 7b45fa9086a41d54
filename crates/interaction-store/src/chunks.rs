//! Writing chunks of events, and moving chunks through their states.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz};
use diesel::{ExpressionMethods, QueryDsl, QueryableByName, Selectable, SelectableHelper};
use diesel_async::{AsyncConnection, RunQueryDsl};
use interaction_core::{Device, Event, Interaction, InteractionType, Setting};

use crate::schema::{chunks, events};
use crate::{ChunkState, Store, StoreError};

/// Writes one tenant's events and their chunk row in ONE statement: the chunk id comes from
/// the sequence, the events come in through `UNNEST` (one array per column), their
/// idempotency keys go into `event_keys` first — a key already there (a duplicate of a stored
/// event, within DEDUP_WINDOW) keeps its event out of `events` — and the chunk row is written
/// only if at least one event was, with the number actually written. `events` is partitioned
/// by day and cannot hold a unique index on `(tenant, event_id)`: `event_keys` is the
/// arbiter, and its rows expire on their own schedule (migration `…000060`).
///
/// Its text never changes, so diesel keeps it prepared per connection ([`InsertChunk`] is
/// safe to cache, unlike `sql_query`): a write is one round trip (Bind, Execute, Sync) with no
/// parsing or planning, instead of two with both — measured at 0.41 ms against 0.76 ms per
/// write of six events on the bench machine.
///
/// `numbered` marks each row's place in the request and whether it is the first with its
/// `eventId` (a repeated id within one request: the first occurrence wins, as before); events
/// are inserted in request order, so their ids (and so their positions in the chunk) follow it.
///
/// The parts between the binds, in order: tenant, then the ten column arrays.
const INSERT_CHUNK_SQL: [&str; 12] = [
    "WITH chunk AS (SELECT nextval(pg_get_serial_sequence('chunks', 'id')) AS id, ",
    "::text AS tenant),
numbered AS (
    SELECT u.*, row_number() OVER (PARTITION BY u.event_id ORDER BY u.ord) = 1 AS first
    FROM UNNEST(",
    "::text[], ",
    "::timestamptz[], ",
    "::text[], ",
    "::text[], ",
    "::text[], ",
    "::float8[], ",
    "::text[], ",
    "::text[], ",
    "::text[], ",
    "::timestamptz[]) WITH ORDINALITY
         AS u(event_id, occurred_at, subscriber, asset_id, interaction, rating, comment,
              context_id, device, original_occurred_at, ord)
),
keyed AS (
    INSERT INTO event_keys (tenant, event_id, chunk_id)
    SELECT chunk.tenant, n.event_id, chunk.id FROM chunk, numbered AS n
    WHERE n.event_id IS NOT NULL AND n.first
    ON CONFLICT (tenant, event_id) DO NOTHING
    RETURNING event_id
),
inserted AS (
    INSERT INTO events (chunk_id, tenant, event_id, occurred_at, subscriber, asset_id,
                        interaction, rating, comment, context_id, device, original_occurred_at)
    SELECT chunk.id, chunk.tenant, n.event_id, n.occurred_at, n.subscriber, n.asset_id,
           n.interaction, n.rating, n.comment, n.context_id, n.device, n.original_occurred_at
    FROM chunk, numbered AS n
    WHERE n.event_id IS NULL OR (n.first AND n.event_id IN (SELECT event_id FROM keyed))
    ORDER BY n.ord
    RETURNING event_id
),
counted AS (SELECT count(*) AS n FROM inserted),
new_chunk AS (
    INSERT INTO chunks (id, tenant, event_count)
    SELECT chunk.id, chunk.tenant, counted.n FROM chunk, counted WHERE counted.n > 0
    RETURNING id
)
SELECT (SELECT id FROM new_chunk) AS chunk_id,
       (SELECT n FROM counted) AS inserted,
       ARRAY(SELECT event_id FROM inserted WHERE event_id IS NOT NULL) AS inserted_ids",
];

/// The statement of [`INSERT_CHUNK_SQL`] with its binds: one array per column.
struct InsertChunk<'a> {
    tenant: &'a str,
    event_ids: Vec<Option<&'a str>>,
    occurred: Vec<DateTime<Utc>>,
    subscribers: Vec<&'a str>,
    assets: Vec<&'a str>,
    interactions: Vec<&'a str>,
    ratings: Vec<f64>,
    comments: Vec<Option<&'a str>>,
    contexts: Vec<Option<&'a str>>,
    devices: Vec<&'a str>,
    originals: Vec<Option<DateTime<Utc>>>,
}

impl<'a> InsertChunk<'a> {
    fn new(tenant: &'a str, batch: &[&'a Event]) -> Self {
        let n = batch.len();
        let mut query = Self {
            tenant,
            event_ids: Vec::with_capacity(n),
            occurred: Vec::with_capacity(n),
            subscribers: Vec::with_capacity(n),
            assets: Vec::with_capacity(n),
            interactions: Vec::with_capacity(n),
            ratings: Vec::with_capacity(n),
            comments: Vec::with_capacity(n),
            contexts: Vec::with_capacity(n),
            devices: Vec::with_capacity(n),
            originals: Vec::with_capacity(n),
        };
        for event in batch {
            let i = &event.interaction;
            query.event_ids.push(event.event_id.as_deref());
            query.occurred.push(i.timestamp);
            query.subscribers.push(i.subscriber.as_str());
            query.assets.push(i.asset_id.as_str());
            query.interactions.push(i.interaction.as_str());
            query.ratings.push(i.rating_equivalent);
            query.comments.push(i.comment.as_deref());
            query.contexts.push(i.context_id.as_deref());
            query.devices.push(i.setting.device.as_str());
            query.originals.push(event.original_timestamp);
        }
        query
    }
}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for InsertChunk<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> diesel::QueryResult<()> {
        let sql = INSERT_CHUNK_SQL;
        out.push_sql(sql[0]);
        out.push_bind_param::<Text, _>(&self.tenant)?;
        out.push_sql(sql[1]);
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.event_ids)?;
        out.push_sql(sql[2]);
        out.push_bind_param::<Array<Timestamptz>, _>(&self.occurred)?;
        out.push_sql(sql[3]);
        out.push_bind_param::<Array<Text>, _>(&self.subscribers)?;
        out.push_sql(sql[4]);
        out.push_bind_param::<Array<Text>, _>(&self.assets)?;
        out.push_sql(sql[5]);
        out.push_bind_param::<Array<Text>, _>(&self.interactions)?;
        out.push_sql(sql[6]);
        out.push_bind_param::<Array<Double>, _>(&self.ratings)?;
        out.push_sql(sql[7]);
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.comments)?;
        out.push_sql(sql[8]);
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.contexts)?;
        out.push_sql(sql[9]);
        out.push_bind_param::<Array<Text>, _>(&self.devices)?;
        out.push_sql(sql[10]);
        out.push_bind_param::<Array<Nullable<Timestamptz>>, _>(&self.originals)?;
        out.push_sql(sql[11]);
        Ok(())
    }
}

/// Identifies the statement for diesel's per-connection cache of prepared statements.
impl diesel::query_builder::QueryId for InsertChunk<'_> {
    type QueryId = InsertChunk<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for InsertChunk<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

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
    /// How long it has waited, by the database's clock: since it was written (a `pending`
    /// chunk) or since it was last published (a `published` one).
    pub age: Duration,
}

/// A claimed chunk with a row that cannot be read back as an event (edited by hand, or
/// written by a newer version). It is left out of publishing: guessing would send Ncanto
/// something nobody accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct UnreadableChunk {
    /// The chunk.
    pub chunk_id: i64,
    /// Whose events.
    pub tenant: String,
    /// How long it has waited (as [`ChunkToPublish::age`]).
    pub age: Duration,
    /// What is wrong with its first unreadable row (names the row id).
    pub reason: String,
}

/// What one claim took: the chunks to publish, and those left out because a row of theirs
/// is unreadable. Both are leased.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claimed {
    /// Ready to publish, by chunk id.
    pub chunks: Vec<ChunkToPublish>,
    /// Not publishable as they are, by chunk id.
    pub unreadable: Vec<UnreadableChunk>,
}

/// How much one claim may take: at most `chunks` chunks whose events add up to at most
/// `bytes` by [`estimated_bytes`] — except that the oldest due chunk is always taken, however
/// large, so that no chunk can block the ones behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimLimits {
    /// Most chunks.
    pub chunks: i64,
    /// Most estimated bytes of events.
    pub bytes: i64,
}

/// The part of [`estimated_bytes`] that does not depend on an event's texts: the `Event`
/// value itself (~144 B), the heap allocator's overhead on its up to five strings (~80 B),
/// and the JSON around its values when it is encoded for publishing (field names, timestamp,
/// rating, interaction and device names: ~220 B), rounded up.
pub const EVENT_FIXED_BYTES: usize = 512;

/// An estimate of the memory an event takes while it is queued and published: a fixed part
/// ([`EVENT_FIXED_BYTES`]) plus its texts twice (once in the value, once in the JSON encoding).
/// JSON escapes (a line break in a comment becomes two bytes) are not counted: an estimate,
/// close enough to bound queues in bytes. The largest event normalization lets through
/// (three 256-character ids, a 1,024-character comment and a 128-character `eventId`, all in
/// 4-byte characters) is estimated at 15,872 B; a typical one at ~600 B.
///
/// The claim statements compute the same sum in SQL (`octet_length` is the UTF-8 length, as
/// `str::len`); keep the two in step.
pub fn estimated_bytes(event: &Event) -> usize {
    let i = &event.interaction;
    let texts = i.subscriber.len()
        + i.asset_id.len()
        + i.comment.as_deref().map_or(0, str::len)
        + i.context_id.as_deref().map_or(0, str::len)
        + event.event_id.as_deref().map_or(0, str::len);
    EVENT_FIXED_BYTES + 2 * texts
}

/// [`estimated_bytes`] of a whole chunk.
pub fn estimated_chunk_bytes(events: &[Event]) -> usize {
    events.iter().map(estimated_bytes).sum()
}

/// The claim statement shared by the relay and the reconciler: `$1` how long a chunk must
/// have waited (µs), `$2` the lease (µs), `$3` most chunks, `$4` most bytes, `$5`
/// [`EVENT_FIXED_BYTES`]. `due` locks candidates (`FOR UPDATE SKIP LOCKED` — PostgreSQL allows
/// no window function at that level, hence the CTEs), `sized` estimates each one's events
/// like [`estimated_bytes`], `taken` keeps the oldest while their running total fits (always
/// the first), and the UPDATE leases them. Candidates past the byte budget are only unlocked.
macro_rules! claim_statement {
    (state = $state:literal, since = $since:literal, due_also = $due_also:literal) => {
        concat!(
            "WITH due AS (
    SELECT id, ",
            $since,
            " AS since
    FROM chunks
    WHERE state = '",
            $state,
            "'
      AND ",
            $since,
            " < now() - $1 * interval '1 microsecond'
      ",
            $due_also,
            "
      AND (leased_until IS NULL OR leased_until < now())
    ORDER BY ",
            $since,
            ", id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
),
sized AS (
    SELECT due.id, due.since,
           (SELECT 2 * coalesce(sum(octet_length(e.subscriber) + octet_length(e.asset_id)
                                    + coalesce(octet_length(e.comment), 0)
                                    + coalesce(octet_length(e.context_id), 0)
                                    + coalesce(octet_length(e.event_id), 0)), 0)
                   + $5 * count(*)
            FROM events e WHERE e.chunk_id = due.id) AS bytes
    FROM due
),
taken AS (
    SELECT id, since FROM (
        SELECT id, since,
               sum(bytes) OVER (ORDER BY since, id) AS running,
               row_number() OVER (ORDER BY since, id) AS position
        FROM sized
    ) ranked
    WHERE position = 1 OR running <= $4
)
UPDATE chunks SET leased_until = now() + $2 * interval '1 microsecond'
FROM taken
WHERE chunks.id = taken.id
RETURNING chunks.id, chunks.tenant, chunks.created_at,
          extract(epoch FROM now() - taken.since)::float8 AS age_seconds"
        )
    };
}

/// The relay's claim: `pending` chunks by creation time.
const CLAIM_UNPUBLISHED: &str =
    claim_statement!(state = "pending", since = "created_at", due_also = "");

/// The reconciler's claim: `published` chunks by their last publish, which must also be older
/// than the chunk was at that publish (see [`Store::claim_unfinished`]). `coalesce`: a
/// `published` chunk without `published_at` would otherwise never be due.
const CLAIM_UNFINISHED: &str = claim_statement!(
    state = "published",
    since = "coalesce(published_at, created_at)",
    due_also = "AND coalesce(published_at, created_at) < now() - (coalesce(published_at, created_at) - created_at)"
);

/// One row the claim statements return.
#[derive(QueryableByName)]
struct ClaimedRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Timestamptz)]
    created_at: DateTime<Utc>,
    #[diesel(sql_type = Double)]
    age_seconds: f64,
}

/// A duration in whole microseconds for SQL, capped at ~68 years: `now()` plus or minus it
/// stays a valid timestamp.
fn micros(duration: Duration) -> i64 {
    const CAP: i64 = i32::MAX as i64 * 1_000_000;
    i64::try_from(duration.as_micros()).map_or(CAP, |us| us.min(CAP))
}

/// How far from its chunk's `created_at` an event's `received_at` is looked for. They are
/// equal (one statement writes both, `now()` is the transaction's start); the margin only
/// keeps a hand-edited row from going unseen, while the bound still spares the partitions of
/// every other day a probe of their chunk index.
const RECEIVED_MARGIN: chrono::TimeDelta = chrono::TimeDelta::days(1);

/// The events of the given chunks, by chunk, in write order; a chunk with a row that cannot be
/// read maps to the reason instead (its other chunks are not affected). `created` spans the
/// chunks' `created_at`: only the day partitions around it are read.
async fn load_events(
    conn: &mut diesel_async::AsyncPgConnection,
    ids: &[i64],
    created: (DateTime<Utc>, DateTime<Utc>),
) -> Result<HashMap<i64, Result<Vec<Event>, String>>, StoreError> {
    let rows: Vec<StoredEvent> = events::table
        .filter(events::chunk_id.eq_any(ids))
        .filter(events::received_at.ge(created.0 - RECEIVED_MARGIN))
        .filter(events::received_at.le(created.1 + RECEIVED_MARGIN))
        .order(events::id)
        .select(StoredEvent::as_select())
        .load(conn)
        .await?;
    let mut by_chunk: HashMap<i64, Result<Vec<Event>, String>> = HashMap::new();
    for row in rows {
        let entry = by_chunk
            .entry(row.chunk_id)
            .or_insert_with(|| Ok(Vec::new()));
        if let Ok(events) = entry {
            match row.to_event() {
                Ok(event) => events.push(event),
                Err(error) => *entry = Err(error.to_string()),
            }
        }
    }
    Ok(by_chunk)
}

/// One stored event row, as read back.
#[derive(Debug, Clone, PartialEq, diesel::Queryable, QueryableByName, Selectable)]
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
    /// The device's own timestamp, when clock-skew correction changed `occurred_at`.
    pub original_occurred_at: Option<DateTime<Utc>>,
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
            original_timestamp: self.original_occurred_at,
        })
    }
}

/// Writes one tenant's events as one chunk on `conn` (see [`INSERT_CHUNK_SQL`]).
async fn insert_chunk(
    conn: &mut diesel_async::AsyncPgConnection,
    tenant: &str,
    batch: &[&Event],
) -> Result<InsertedChunk, diesel::result::Error> {
    InsertChunk::new(tenant, batch).get_result(conn).await
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
                    .filter(chunks::state.eq(ChunkState::Pending.as_str())),
            )
            .set((
                chunks::state.eq(ChunkState::Published.as_str()),
                chunks::published_at.eq(diesel::dsl::now),
                chunks::leased_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await?)
        })
        .await
    }

    /// Claims chunks committed but never confirmed by the broker (`pending`), created longer
    /// ago than `older_than` and not leased by another replica, leases them for `lease`, and
    /// returns them with their events: the relay's work. Oldest first, within `limits`.
    pub async fn claim_unpublished(
        &self,
        older_than: Duration,
        lease: Duration,
        limits: ClaimLimits,
    ) -> Result<Claimed, StoreError> {
        self.claim(CLAIM_UNPUBLISHED, older_than, lease, limits)
            .await
    }

    /// Claims chunks the broker confirmed (`published`) but that nobody finished since: the
    /// reconciler's work (their message was lost, purged or dead-lettered in the broker — or
    /// is still legitimately in a retry queue, which is why `older_than` must be long).
    ///
    /// A chunk is due once its last publish is older than `older_than` AND older than the
    /// chunk was at that publish, so the waits between re-publishes of one chunk double
    /// (`older_than`, `older_than`, 2×, 4×…): a forwarder that stays away for a day does not
    /// get every chunk re-published once per `older_than`. Oldest publish first, within
    /// `limits`; leased for `lease` like the relay's claims.
    pub async fn claim_unfinished(
        &self,
        older_than: Duration,
        lease: Duration,
        limits: ClaimLimits,
    ) -> Result<Claimed, StoreError> {
        self.claim(CLAIM_UNFINISHED, older_than, lease, limits)
            .await
    }

    /// Runs one of the claim statements, then loads the claimed chunks' events.
    ///
    /// One statement, no transaction held open: `FOR UPDATE SKIP LOCKED` lets many replicas
    /// claim at once without waiting on or taking each other's chunks, and the lease keeps
    /// them apart afterwards while they publish. Every time is the database's `now()`, never
    /// this process's clock: replicas whose clocks disagree still agree on leases and ages.
    async fn claim(
        &self,
        statement: &'static str,
        older_than: Duration,
        lease: Duration,
        limits: ClaimLimits,
    ) -> Result<Claimed, StoreError> {
        self.with_connection(async |conn| {
            let rows: Vec<ClaimedRow> = diesel::sql_query(statement)
                .bind::<BigInt, _>(micros(older_than))
                .bind::<BigInt, _>(micros(lease))
                .bind::<BigInt, _>(limits.chunks.max(1))
                .bind::<BigInt, _>(limits.bytes)
                .bind::<BigInt, _>(EVENT_FIXED_BYTES as i64)
                .load(conn)
                .await?;
            if rows.is_empty() {
                return Ok(Claimed::default());
            }
            let ids: Vec<i64> = rows.iter().map(|row| row.id).collect();
            let created = rows.iter().map(|row| row.created_at);
            let span = (
                created.clone().min().unwrap_or_default(),
                created.max().unwrap_or_default(),
            );
            let mut by_chunk = load_events(conn, &ids, span).await?;
            let mut claimed = Claimed::default();
            for row in rows {
                let age = Duration::try_from_secs_f64(row.age_seconds).unwrap_or_default();
                match by_chunk.remove(&row.id).unwrap_or(Ok(Vec::new())) {
                    Ok(events) => claimed.chunks.push(ChunkToPublish {
                        chunk_id: row.id,
                        tenant: row.tenant,
                        events,
                        age,
                    }),
                    Err(reason) => claimed.unreadable.push(UnreadableChunk {
                        chunk_id: row.id,
                        tenant: row.tenant,
                        age,
                        reason,
                    }),
                }
            }
            claimed.chunks.sort_by_key(|c| c.chunk_id);
            claimed.unreadable.sort_by_key(|c| c.chunk_id);
            Ok(claimed)
        })
        .await
    }

    /// Keeps chunks leased — away from every relay and reconciler — for `lease` from now (the
    /// database's clock). For chunks that cannot be published as they are (an unreadable row):
    /// they stay in their state, counted and visible, and are looked at again after `lease`.
    pub async fn extend_lease(&self, ids: &[i64], lease: Duration) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(
                "UPDATE chunks SET leased_until = now() + $2 * interval '1 microsecond'
                 WHERE id = ANY($1)",
            )
            .bind::<Array<BigInt>, _>(ids)
            .bind::<BigInt, _>(micros(lease))
            .execute(conn)
            .await?)
        })
        .await
    }

    /// Records that chunks still `published` were published again (by the reconciler): their
    /// `published_at` becomes now, which restarts their wait, and their lease ends. Chunks
    /// finished meanwhile are left as they are.
    pub async fn mark_republished(&self, ids: &[i64]) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.with_connection(async |conn| {
            Ok(diesel::update(
                chunks::table
                    .filter(chunks::id.eq_any(ids))
                    .filter(chunks::state.eq(ChunkState::Published.as_str())),
            )
            .set((
                chunks::published_at.eq(diesel::dsl::now),
                chunks::leased_until.eq(None::<DateTime<Utc>>),
            ))
            .execute(conn)
            .await?)
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;
    use interaction_core::{MAX_COMMENT_CHARS, MAX_EVENT_ID_CHARS, MAX_ID_CHARS};

    fn event(
        subscriber: &str,
        asset: &str,
        comment: Option<&str>,
        context: Option<&str>,
        event_id: Option<&str>,
    ) -> Event {
        Event {
            interaction: Interaction {
                timestamp: DateTime::UNIX_EPOCH,
                subscriber: subscriber.to_owned(),
                asset_id: asset.to_owned(),
                interaction: InteractionType::Play,
                rating_equivalent: 0.5,
                comment: comment.map(str::to_owned),
                context_id: context.map(str::to_owned),
                setting: Setting {
                    device: Device::Web,
                },
            },
            event_id: event_id.map(str::to_owned),
            original_timestamp: None,
        }
    }

    #[test]
    fn the_estimate_is_the_fixed_part_plus_every_text_twice() {
        let widest = "𝄞"; // 4 bytes in UTF-8: the most a character can take
        let long_id = widest.repeat(MAX_ID_CHARS);
        let long_comment = widest.repeat(MAX_COMMENT_CHARS);
        let long_event_id = widest.repeat(MAX_EVENT_ID_CHARS);
        let cases: [(&str, Event, usize); 5] = [
            ("shortest", event("u", "a", None, None, None), 512 + 2 * 2),
            (
                "typical, with an eventId",
                event(
                    "citizen_user_12345",
                    "citizen_article_67890",
                    None,
                    None,
                    Some("0b9f7c3e-6d0a-4f7e-9a59-2f6c1d8e4b21"),
                ),
                512 + 2 * (18 + 21 + 36),
            ),
            (
                "every optional field",
                event("u1", "a1", Some("hello"), Some("ctx"), Some("e1")),
                512 + 2 * (2 + 2 + 5 + 3 + 2),
            ),
            (
                "bytes, not characters",
                event("é", "€", Some("𝄞"), None, None),
                512 + 2 * (2 + 3 + 4),
            ),
            (
                "the largest event normalization accepts",
                event(
                    &long_id,
                    &long_id,
                    Some(&long_comment),
                    Some(&long_id),
                    Some(&long_event_id),
                ),
                15_872,
            ),
        ];
        for (name, event, want) in cases {
            assert_eq!(estimated_bytes(&event), want, "{name}");
        }
    }

    #[test]
    fn a_chunk_is_estimated_as_the_sum_of_its_events() {
        let one = event("u", "a", None, None, None);
        assert_eq!(estimated_chunk_bytes(&[]), 0);
        assert_eq!(
            estimated_chunk_bytes(&[one.clone(), one.clone(), one.clone()]),
            3 * estimated_bytes(&one)
        );
    }

    #[test]
    fn durations_reach_sql_in_microseconds_capped_to_valid_timestamps() {
        let cases = [
            (Duration::ZERO, 0),
            (Duration::from_millis(1500), 1_500_000),
            (Duration::from_secs(3 * 3600), 10_800_000_000),
            (Duration::MAX, i64::from(i32::MAX) * 1_000_000),
        ];
        for (duration, want) in cases {
            assert_eq!(micros(duration), want, "{duration:?}");
        }
    }
}
