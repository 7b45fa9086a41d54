//! Delivery state per part of a chunk: which of a chunk's events were delivered, which were
//! refused, and so what is left for a message that carries some of them.
//!
//! **Why per part, not per chunk.** A chunk travels as one message, but its events can part
//! ways: some delivered, some refused and parked, some sent through a retry queue — and an
//! operator can re-drive the parked ones while the retried ones are still waiting. Marking the
//! whole chunk done when one of those messages succeeds loses the others (they arrive later,
//! see "already forwarded", and are acknowledged unsent). So each message says which events of
//! the chunk it carries — their *positions*, 0-based in `events.id` order, which is the order
//! ingest-api publishes them and the relay loads them — and the store records positions, not
//! chunks:
//!
//! - `chunks.delivered` and `chunks.refused` are `int4multirange`s of positions. An outcome
//!   adds to them with ONE statement per message ([`Store::record_outcome`]): a few bytes per
//!   chunk whatever its size, no row per event, and idempotent (a union), so an outcome
//!   recorded twice — a redelivery after a crash, a retry once the database is back — changes
//!   nothing the second time.
//! - A refused event also gets an `event_failures` row keyed by `(chunk_id, position)`, so
//!   recording it again keeps one row with the latest reason.
//! - The chunk's state follows from the positions: `forwarded` once every position is
//!   delivered, `failed` once every position is delivered or refused with some refused, and
//!   otherwise unchanged (`published`, or `pending` if the confirm was never recorded).
//! - Before delivering, a message asks what of its part is still undone
//!   ([`Store::undone_positions`]): positions delivered are skipped, and so are positions
//!   refused — unless the message is a re-drive of refused events, whose whole point is to
//!   try them again. A message is thus skipped only when ITS events are done, and a message
//!   that overlaps others (a whole chunk re-published by the relay) delivers only the rest.

use std::ops::Range;

use diesel::OptionalExtension;
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Integer, Nullable, Text};
use diesel_async::RunQueryDsl;
use interaction_core::Event;

use crate::{ChunkState, Store, StoreError};

/// One event that could not be delivered, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure<'a> {
    /// Its position in its chunk.
    pub position: u32,
    /// The event.
    pub event: &'a Event,
    /// Why it failed, for people.
    pub reason: String,
    /// Ncanto's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Delivery rounds the event went through, this one included (1: refused at its first
    /// delivery; each trip through a retry queue adds one); `None` when unknown.
    pub attempts: Option<u32>,
}

/// What became of (part of) one message's events, to record in one statement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartOutcome<'a> {
    /// Positions Ncanto accepted.
    pub delivered: Vec<Range<u32>>,
    /// Events refused for good (or out of retries).
    pub refused: Vec<Failure<'a>>,
}

/// A chunk's delivery state as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkParts {
    /// Its state.
    pub state: ChunkState,
    /// How many events it holds (positions `0..event_count`).
    pub event_count: u32,
    /// Positions delivered, as sorted disjoint ranges.
    pub delivered: Vec<Range<u32>>,
    /// Positions refused and not delivered since, as sorted disjoint ranges.
    pub refused: Vec<Range<u32>>,
}

/// What is left of a part, per [`Store::undone_positions`]. Positions not yet delivered
/// (and, unless re-driving, not refused); ranges of `$2..$3` minus what is done.
const UNDONE: &str = "\
SELECT c.state,
       ARRAY(SELECT lower(r) FROM unnest(d.undone) AS r) AS firsts,
       ARRAY(SELECT upper(r) FROM unnest(d.undone) AS r) AS lasts
FROM chunks AS c
CROSS JOIN LATERAL (
    SELECT CASE WHEN c.state = 'forwarded' THEN '{}'::int4multirange
           ELSE coalesce((SELECT range_agg(int4range(u.f, u.l))
                          FROM unnest($2::int4[], $3::int4[]) AS u(f, l)), '{}'::int4multirange)
                - c.delivered
                - CASE WHEN $4 THEN '{}'::int4multirange ELSE c.refused END
           END AS undone
) AS d
WHERE c.id = $1";

/// Records one message's outcome (see [`Store::record_outcome`]). The chunk row is locked
/// first (`current`), so concurrent outcomes of the same chunk apply one after the other, each
/// to the other's result. Data-modifying CTEs always run to completion, whether read or not.
const RECORD_OUTCOME: &str = "\
WITH outcome AS (
    SELECT coalesce((SELECT range_agg(int4range(u.f, u.l))
                     FROM unnest($2::int4[], $3::int4[]) AS u(f, l)), '{}'::int4multirange)
               AS delivered,
           coalesce((SELECT range_agg(int4range(u.p, u.p + 1))
                     FROM unnest($4::int4[]) AS u(p)), '{}'::int4multirange)
               AS refused
),
current AS (
    SELECT id, state, event_count, delivered, refused FROM chunks WHERE id = $1 FOR UPDATE
),
next AS (
    SELECT c.id,
           d.delivered,
           -- Positions delivered now and not before: an outcome recorded twice keeps the
           -- first time (recording stays idempotent).
           NOT isempty(o.delivered - c.delivered) AS newly_delivered,
           (c.refused + o.refused) - d.delivered AS refused,
           CASE WHEN c.state = 'forwarded' OR d.delivered @> int4range(0, c.event_count)
                    THEN 'forwarded'
                WHEN (d.delivered + c.refused + o.refused) @> int4range(0, c.event_count)
                    THEN 'failed'
                ELSE c.state
           END AS state
    FROM current AS c, outcome AS o, LATERAL (SELECT c.delivered + o.delivered AS delivered) AS d
),
updated AS (
    UPDATE chunks AS c
    SET delivered = n.delivered,
        refused = n.refused,
        state = n.state,
        forwarded_at = CASE WHEN n.state = 'forwarded' THEN coalesce(c.forwarded_at, now())
                            ELSE c.forwarded_at END,
        -- For tracing an event: when this chunk's events were last delivered.
        last_delivered_at = CASE WHEN n.newly_delivered THEN now() ELSE c.last_delivered_at END,
        -- A finished chunk needs no relay any more: drop its lease.
        leased_until = CASE WHEN n.state IN ('forwarded', 'failed') THEN NULL
                            ELSE c.leased_until END
    FROM next AS n
    WHERE c.id = n.id
    RETURNING c.state
),
failed AS (
    INSERT INTO event_failures (chunk_id, tenant, position, event, reason, status, attempts)
    SELECT $1, $5, u.position, u.event::jsonb, u.reason, u.status, u.attempts
    FROM unnest($4::int4[], $6::text[], $7::text[], $8::int4[], $9::int4[])
         AS u(position, event, reason, status, attempts)
    ON CONFLICT (chunk_id, position) WHERE position IS NOT NULL
    DO UPDATE SET event = EXCLUDED.event, reason = EXCLUDED.reason, status = EXCLUDED.status,
                  attempts = EXCLUDED.attempts, failed_at = now()
    RETURNING 1
)
SELECT (SELECT state FROM updated) AS state";

#[derive(QueryableByName)]
struct UndoneRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Array<Integer>)]
    firsts: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    lasts: Vec<i32>,
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Nullable<Text>)]
    state: Option<String>,
}

#[derive(QueryableByName)]
struct PartsRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    event_count: i32,
    #[diesel(sql_type = Array<Integer>)]
    delivered_firsts: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    delivered_lasts: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    refused_firsts: Vec<i32>,
    #[diesel(sql_type = Array<Integer>)]
    refused_lasts: Vec<i32>,
}

fn parse_state(text: &str) -> Result<ChunkState, StoreError> {
    text.parse()
        .map_err(|e: crate::UnknownChunkState| StoreError::Corrupt(e.to_string()))
}

/// Ranges as two bind arrays (starts, ends). Positions come from messages; one beyond what
/// PostgreSQL's `integer` holds cannot be a position of any chunk.
fn bounds(ranges: &[Range<u32>]) -> Result<(Vec<i32>, Vec<i32>), StoreError> {
    let convert = |n: u32| {
        i32::try_from(n).map_err(|_| StoreError::Corrupt(format!("position {n} out of range")))
    };
    let mut firsts = Vec::with_capacity(ranges.len());
    let mut lasts = Vec::with_capacity(ranges.len());
    for range in ranges.iter().filter(|r| !r.is_empty()) {
        firsts.push(convert(range.start)?);
        lasts.push(convert(range.end)?);
    }
    Ok((firsts, lasts))
}

/// Ranges from the bounds PostgreSQL returned (never negative: positions start at 0).
fn ranges(firsts: Vec<i32>, lasts: Vec<i32>) -> Vec<Range<u32>> {
    firsts
        .into_iter()
        .zip(lasts)
        .filter_map(|(first, last)| Some(u32::try_from(first).ok()?..u32::try_from(last).ok()?))
        .collect()
}

impl Store {
    /// A chunk's state, if it exists.
    pub async fn chunk_state(&self, chunk_id: i64) -> Result<Option<ChunkState>, StoreError> {
        let row: Option<StateRow> = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query("SELECT state FROM chunks WHERE id = $1")
                    .bind::<BigInt, _>(chunk_id)
                    .get_result(conn)
                    .await
                    .optional()?)
            })
            .await?;
        row.and_then(|row| row.state)
            .map(|state| parse_state(&state))
            .transpose()
    }

    /// A chunk's state with the positions delivered and refused, if it exists.
    pub async fn chunk_parts(&self, chunk_id: i64) -> Result<Option<ChunkParts>, StoreError> {
        let row: Option<PartsRow> = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(
                    "SELECT state, event_count,
                            ARRAY(SELECT lower(r) FROM unnest(delivered) AS r) AS delivered_firsts,
                            ARRAY(SELECT upper(r) FROM unnest(delivered) AS r) AS delivered_lasts,
                            ARRAY(SELECT lower(r) FROM unnest(refused) AS r) AS refused_firsts,
                            ARRAY(SELECT upper(r) FROM unnest(refused) AS r) AS refused_lasts
                     FROM chunks WHERE id = $1",
                )
                .bind::<BigInt, _>(chunk_id)
                .get_result(conn)
                .await
                .optional()?)
            })
            .await?;
        row.map(|row| {
            Ok(ChunkParts {
                state: parse_state(&row.state)?,
                event_count: u32::try_from(row.event_count).unwrap_or(0),
                delivered: ranges(row.delivered_firsts, row.delivered_lasts),
                refused: ranges(row.refused_firsts, row.refused_lasts),
            })
        })
        .transpose()
    }

    /// What is left to do of `part` (positions of chunk `chunk_id`, as ranges): the
    /// positions not delivered yet and, unless `redriven` (a re-drive of refused events, which
    /// tries them again), not refused. Sorted disjoint ranges; empty when the message's events
    /// are all done. `None` when the chunk does not exist (never stored, or deleted by
    /// retention after it was forwarded): nothing is known about it. One statement.
    pub async fn undone_positions(
        &self,
        chunk_id: i64,
        part: &[Range<u32>],
        redriven: bool,
    ) -> Result<Option<Vec<Range<u32>>>, StoreError> {
        let (firsts, lasts) = bounds(part)?;
        let row: Option<UndoneRow> = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(UNDONE)
                    .bind::<BigInt, _>(chunk_id)
                    .bind::<Array<Integer>, _>(&firsts)
                    .bind::<Array<Integer>, _>(&lasts)
                    .bind::<Bool, _>(redriven)
                    .get_result(conn)
                    .await
                    .optional()?)
            })
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                parse_state(&row.state)?;
                Ok(Some(ranges(row.firsts, row.lasts)))
            }
        }
    }

    /// Records what became of some of a chunk's events, in ONE statement: the positions
    /// delivered and refused join the chunk's (a position delivered is never refused after),
    /// each refused event gets (or updates) its `event_failures` row (with its reason, status
    /// and attempts), the chunk's `last_delivered_at` becomes now if positions were newly
    /// delivered, and the chunk becomes
    /// `forwarded` or `failed` when every event has an outcome. Idempotent: recording the same
    /// outcome again changes nothing but the failures' timestamps. Returns the chunk's state
    /// after, or `None` when the chunk does not exist (failures are recorded all the same).
    pub async fn record_outcome(
        &self,
        chunk_id: i64,
        tenant: &str,
        outcome: &PartOutcome<'_>,
    ) -> Result<Option<ChunkState>, StoreError> {
        let (firsts, lasts) = bounds(&outcome.delivered)?;
        // One failure per position: ON CONFLICT DO UPDATE may not touch a row twice.
        let mut refused: Vec<&Failure<'_>> = outcome.refused.iter().collect();
        refused.sort_by_key(|f| f.position);
        refused.dedup_by_key(|f| f.position);
        let mut positions = Vec::with_capacity(refused.len());
        let mut events = Vec::with_capacity(refused.len());
        let mut reasons = Vec::with_capacity(refused.len());
        let mut statuses = Vec::with_capacity(refused.len());
        let mut attempts = Vec::with_capacity(refused.len());
        for failure in refused {
            positions.push(i32::try_from(failure.position).map_err(|_| {
                StoreError::Corrupt(format!("position {} out of range", failure.position))
            })?);
            events.push(
                serde_json::to_string(failure.event).map_err(|e| {
                    StoreError::Corrupt(format!("cannot encode a failed event: {e}"))
                })?,
            );
            // PostgreSQL text cannot hold NUL; a reason quoting Ncanto's body might.
            reasons.push(failure.reason.replace('\0', "\u{fffd}"));
            statuses.push(failure.status.map(i32::from));
            attempts.push(
                failure
                    .attempts
                    .map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
            );
        }
        let row: StateRow = self
            .with_connection(async |conn| {
                Ok(diesel::sql_query(RECORD_OUTCOME)
                    .bind::<BigInt, _>(chunk_id)
                    .bind::<Array<Integer>, _>(&firsts)
                    .bind::<Array<Integer>, _>(&lasts)
                    .bind::<Array<Integer>, _>(&positions)
                    .bind::<Text, _>(tenant)
                    .bind::<Array<Text>, _>(&events)
                    .bind::<Array<Text>, _>(&reasons)
                    .bind::<Array<Nullable<Integer>>, _>(&statuses)
                    .bind::<Array<Nullable<Integer>>, _>(&attempts)
                    .get_result(conn)
                    .await?)
            })
            .await?;
        row.state.map(|state| parse_state(&state)).transpose()
    }
}

#[cfg(test)]
// Lists of position ranges, where one range is as normal as several.
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn ranges_go_to_bind_arrays_and_back_skipping_empty_ones() {
        // ranges → (starts, ends)
        type Bounds = (Vec<i32>, Vec<i32>);
        let table: [(Vec<Range<u32>>, Bounds); 3] = [
            (vec![], (vec![], vec![])),
            (vec![0..3, 5..5, 7..8], (vec![0, 7], vec![3, 8])),
            (vec![2..4], (vec![2], vec![4])),
        ];
        for (input, expected) in table {
            let (firsts, lasts) = bounds(&input).unwrap();
            assert_eq!((firsts.clone(), lasts.clone()), expected, "{input:?}");
            let back: Vec<Range<u32>> = input.into_iter().filter(|r| !r.is_empty()).collect();
            assert_eq!(ranges(firsts, lasts), back);
        }
        assert!(bounds(&[0..u32::MAX]).is_err());
    }
}
