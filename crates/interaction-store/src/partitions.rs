//! Day partitions of `events`, and retention by whole partitions (issue 15).
//!
//! `events` is partitioned by the UTC day of `received_at` (migration `…000060`). Partitions
//! are created [`PARTITION_DAYS_AHEAD`] days ahead by every process that migrates and, every
//! hour, by ingest-api ([`Store::ensure_partitions`]): a write never waits for one, at midnight
//! or after days of downtime. Rows of a day without a partition (a clock that jumped further
//! ahead) land in `events_default` instead of failing.
//!
//! **Retention** ([`Store::drop_partition`]) detaches and drops a day whose end is older than
//! the cutoff: no row is deleted, so no WAL per row, no vacuum, no index churn. A day is kept
//! whole while any chunk created in it is still `pending` or `published` (its events are
//! still to be delivered); a `failed` chunk's refused events each have an `event_failures`
//! row holding the event as sent (re-drive reads it from there), so dropping the day loses
//! nothing of them: they are moved aside, and kept until their own retention
//! ([`Store::purge_failures`], PURGE_FAILURES_OLDER_THAN). Chunk rows, failure rows and
//! idempotency keys, one row per chunk, per refused event and per keyed event, are deleted in
//! batches ([`Store::purge_chunks`] over the [`uncovered`] ranges,
//! [`Store::expire_keys`]); rows that landed
//! in `events_default` are deleted like before partitioning ([`Store::purge_default`]).

use chrono::{DateTime, NaiveDate, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Date, Nullable, Text, Timestamptz};
use diesel_async::{AsyncConnection, RunQueryDsl};

use crate::{Store, StoreError};

/// How many days after today have their partition created in advance: a week of upkeep
/// failures (or downtime of every ingest-api) before a write lands in `events_default`.
pub const PARTITION_DAYS_AHEAD: u32 = 7;

/// Key of the transaction-level advisory lock taken while creating a partition ("ILPT"):
/// replicas starting together would otherwise race to create the same table.
const PARTITION_LOCK: i64 = 0x494C_5054;

/// How long retention waits for the brief exclusive lock DETACH needs on `events`. Inserts
/// queue behind a waiting DETACH, so it gives up soon and tries again on its next round
/// rather than stall the write path.
const DETACH_LOCK_TIMEOUT: &str = "2s";

/// A partition of `events` and the arrival times it holds, `[low, high)`.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Partition {
    /// Table name: `events_pYYYYMMDD`, `events_legacy` (the table before partitioning) or
    /// `events_default`.
    #[diesel(sql_type = Text)]
    pub name: String,
    /// From (inclusive); `None` for the legacy partition (everything before `high`) and the
    /// default one.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub low: Option<DateTime<Utc>>,
    /// To (exclusive); `None` only for the default partition.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub high: Option<DateTime<Utc>>,
}

/// A range of arrival times, `[low, high)`; `low` `None`: from the beginning.
pub type ArrivalRange = (Option<DateTime<Utc>>, DateTime<Utc>);

/// The arrival-time ranges before `before` that no partition but the default one holds —
/// the days dropped by retention (and any time before the first partition) — as `[low,
/// high)` with `low` `None` for "from the beginning". Chunks created in them have no events
/// left outside `events_default`.
pub fn uncovered(partitions: &[Partition], before: DateTime<Utc>) -> Vec<ArrivalRange> {
    let mut covered: Vec<(Option<DateTime<Utc>>, DateTime<Utc>)> = partitions
        .iter()
        .filter_map(|p| p.high.map(|high| (p.low, high)))
        .collect();
    covered.sort();
    let mut gaps = Vec::new();
    let mut from: Option<DateTime<Utc>> = None;
    for (low, high) in covered {
        let low = low.map_or(DateTime::<Utc>::MIN_UTC, |l| l);
        let start = from.unwrap_or(DateTime::<Utc>::MIN_UTC);
        if low > start {
            let end = low.min(before);
            if end > start {
                gaps.push((from, end));
            }
        }
        if from.is_none_or(|f| high > f) {
            from = Some(high);
        }
    }
    let start = from.unwrap_or(DateTime::<Utc>::MIN_UTC);
    if before > start {
        gaps.push((from, before));
    }
    gaps
}

/// What [`Store::ensure_partitions`] found, day by day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionUpkeep {
    /// Partitions created now.
    pub created: Vec<String>,
    /// Days left without a partition because `events_default` holds rows of them: creating
    /// the partition would fail. Rows of those days keep landing in the default partition;
    /// an operator moves them (README "Operations").
    pub blocked: Vec<NaiveDate>,
}

/// What [`Store::drop_partition`] did with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionRetention {
    /// Detached and dropped; `rows` is PostgreSQL's estimate of the rows it held.
    Dropped {
        /// Estimated rows (`pg_class.reltuples`): counting them would read the whole day.
        rows: i64,
    },
    /// Kept: chunks created that day are still unfinished (`pending` or `published`).
    Held {
        /// How many.
        unfinished_chunks: i64,
    },
    /// Not dropped now: DETACH could not get its lock within the timeout (busy table).
    Busy,
}

/// A table's row count as PostgreSQL estimates it (`$1` its name; -1, never analyzed, as 0).
const ESTIMATED_ROWS: &str = "SELECT coalesce((SELECT greatest(reltuples, 0)::int8 FROM pg_class WHERE oid = to_regclass($1)), 0) AS n";

/// Up to `$3` finished chunks created in `[$1, $2)` deleted ([`Store::purge_chunks`]).
pub(crate) const PURGE_CHUNKS: &str = "WITH doomed AS (
    (SELECT c.id FROM chunks c
     WHERE c.state = 'forwarded'
       AND ($1::timestamptz IS NULL OR c.created_at >= $1) AND c.created_at < $2
       AND NOT EXISTS (SELECT 1 FROM events_default e WHERE e.chunk_id = c.id)
     ORDER BY c.created_at
     LIMIT $3)
    UNION ALL
    (SELECT c.id FROM chunks c
     WHERE c.state = 'failed'
       AND ($1::timestamptz IS NULL OR c.created_at >= $1) AND c.created_at < $2
       AND NOT EXISTS (SELECT 1 FROM events_default e WHERE e.chunk_id = c.id)
       AND NOT EXISTS (SELECT 1 FROM event_failures f WHERE f.chunk_id = c.id)
     ORDER BY c.created_at
     LIMIT $3)
), gone AS (DELETE FROM chunks WHERE id IN (SELECT id FROM doomed) RETURNING 1)
SELECT count(*) AS n FROM gone";

/// Up to `$2` failure rows recorded before `$1` deleted ([`Store::purge_failures`]).
const PURGE_FAILURES: &str = "WITH gone AS (
    DELETE FROM event_failures WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM event_failures WHERE failed_at < $1
        ORDER BY failed_at LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone";

/// Up to `$2` rows of `events_default` received before `$1` whose chunk was forwarded,
/// deleted ([`Store::purge_default`]).
const PURGE_DEFAULT: &str = "WITH gone AS (
    DELETE FROM events_default WHERE ctid = ANY (ARRAY(
        SELECT e.ctid FROM events_default e JOIN chunks c ON c.id = e.chunk_id
        WHERE e.received_at < $1 AND c.state = 'forwarded'
        LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone";

/// Up to `$2` idempotency keys received before `$1` deleted ([`Store::expire_keys`]).
pub(crate) const EXPIRE_KEYS: &str = "WITH gone AS (
    DELETE FROM event_keys WHERE ctid = ANY (ARRAY(
        SELECT ctid FROM event_keys WHERE received_at < $1 LIMIT $2))
    RETURNING 1
)
SELECT count(*) AS n FROM gone";

/// Chunks still to deliver created in `[$1, $2)` (`$1` NULL: from the beginning). A chunk's
/// events were received when it was created, so these are the events of that range still
/// to deliver.
pub(crate) const UNFINISHED_CHUNKS: &str = "SELECT count(*) AS n FROM chunks
    WHERE state IN ('pending', 'published')
      AND ($1::timestamptz IS NULL OR created_at >= $1) AND created_at < $2";

#[derive(QueryableByName)]
struct Outcome {
    #[diesel(sql_type = Text)]
    outcome: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

impl Store {
    /// Creates the partitions of `events` for `first` and the [`PARTITION_DAYS_AHEAD`] days
    /// after it that do not exist yet, each in a short transaction of its own.
    pub async fn ensure_partitions(&self, first: NaiveDate) -> Result<PartitionUpkeep, StoreError> {
        let mut upkeep = PartitionUpkeep::default();
        for offset in 0..=PARTITION_DAYS_AHEAD {
            let day = first + chrono::Days::new(u64::from(offset));
            let outcome = self
                .with_connection(async |conn| {
                    Ok(conn
                        .transaction::<_, diesel::result::Error, _>(async |conn| {
                            diesel::sql_query(format!(
                                "SELECT pg_advisory_xact_lock({PARTITION_LOCK})"
                            ))
                            .execute(conn)
                            .await?;
                            diesel::sql_query("SELECT events_create_partition($1) AS outcome")
                                .bind::<Date, _>(day)
                                .get_result::<Outcome>(conn)
                                .await
                        })
                        .await?
                        .outcome)
                })
                .await?;
            match outcome.as_str() {
                "created" => upkeep
                    .created
                    .push(format!("events_p{}", day.format("%Y%m%d"))),
                "default holds rows" => upkeep.blocked.push(day),
                _ => {}
            }
        }
        Ok(upkeep)
    }

    /// Every partition of `events`, oldest first (the default one last).
    pub async fn partitions(&self) -> Result<Vec<Partition>, StoreError> {
        self.with_connection(async |conn| {
            Ok(
                diesel::sql_query("SELECT name, low, high FROM events_partitions()")
                    .load(conn)
                    .await?,
            )
        })
        .await
    }

    /// Detaches and drops `partition` (a name from [`Self::partitions`], never the default
    /// one) unless a chunk created within its bounds is unfinished. The check runs after
    /// DETACH, in the same transaction, so nothing can become unfinished in between; a held
    /// partition is attached again by the rollback.
    pub async fn drop_partition(
        &self,
        partition: &Partition,
    ) -> Result<PartitionRetention, StoreError> {
        let Some(high) = partition.high else {
            return Err(StoreError::Config(format!(
                "{} is the default partition: it is purged row by row, never dropped",
                partition.name
            )));
        };
        let low = partition.low;
        let name = partition.name.clone();
        self.with_connection(async move |conn| {
            let result = conn
                .transaction::<_, diesel::result::Error, _>(async |conn| {
                    diesel::sql_query(format!("SET LOCAL lock_timeout = '{DETACH_LOCK_TIMEOUT}'"))
                        .execute(conn)
                        .await?;
                    let rows = diesel::sql_query(ESTIMATED_ROWS)
                        .bind::<Text, _>(&name)
                        .get_result::<Count>(conn)
                        .await?
                        .n;
                    diesel::sql_query(format!(
                        "ALTER TABLE events DETACH PARTITION {}",
                        quote_ident(&name)
                    ))
                    .execute(conn)
                    .await?;
                    let unfinished = diesel::sql_query(UNFINISHED_CHUNKS)
                        .bind::<Nullable<Timestamptz>, _>(low)
                        .bind::<Nullable<Timestamptz>, _>(Some(high))
                        .get_result::<Count>(conn)
                        .await?
                        .n;
                    if unfinished > 0 {
                        return Err(HeldBack(unfinished).into());
                    }
                    diesel::sql_query(format!("DROP TABLE {}", quote_ident(&name)))
                        .execute(conn)
                        .await?;
                    Ok(rows)
                })
                .await;
            match result {
                Ok(rows) => Ok(PartitionRetention::Dropped { rows }),
                Err(error) => match HeldBack::from_error(&error) {
                    Some(unfinished_chunks) => Ok(PartitionRetention::Held { unfinished_chunks }),
                    None if is_lock_timeout(&error) => Ok(PartitionRetention::Busy),
                    None => Err(error.into()),
                },
            }
        })
        .await
    }

    /// A partition's estimated rows (`pg_class.reltuples`) and the unfinished chunks created
    /// within its bounds (what would keep it from being dropped).
    pub async fn partition_status(&self, partition: &Partition) -> Result<(i64, i64), StoreError> {
        self.with_connection(async |conn| {
            let rows = diesel::sql_query(ESTIMATED_ROWS)
                .bind::<Text, _>(&partition.name)
                .get_result::<Count>(conn)
                .await?
                .n;
            let unfinished = diesel::sql_query(UNFINISHED_CHUNKS)
                .bind::<Nullable<Timestamptz>, _>(partition.low)
                .bind::<Nullable<Timestamptz>, _>(partition.high)
                .get_result::<Count>(conn)
                .await?
                .n;
            Ok((rows, unfinished))
        })
        .await
    }

    /// Deletes up to `batch` finished chunks created in `[low, high)` (`low` `None`: from
    /// the beginning) — a range no partition holds any more, so their events are gone —
    /// except those with rows in `events_default`: forwarded chunks, and failed ones whose
    /// failure rows have expired too ([`Self::purge_failures`]). Each kind is one range of its
    /// partial index on `created_at`, so a range cleared before costs nothing to look at
    /// again. Call until it returns 0.
    pub async fn purge_chunks(
        &self,
        low: Option<DateTime<Utc>>,
        high: DateTime<Utc>,
        batch: i64,
    ) -> Result<i64, StoreError> {
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(PURGE_CHUNKS)
                .bind::<Nullable<Timestamptz>, _>(low)
                .bind::<Timestamptz, _>(high)
                .bind::<BigInt, _>(batch)
                .get_result::<Count>(conn)
                .await?
                .n)
        })
        .await
    }

    /// Deletes up to `batch` failure rows recorded before `before` (PURGE_FAILURES_OLDER_THAN
    /// ago): the refused events they keep can no longer be re-driven. Call until it returns 0.
    pub async fn purge_failures(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<i64, StoreError> {
        self.delete_batch(PURGE_FAILURES, before, batch).await
    }

    /// Deletes up to `batch` rows of `events_default` received before `before` whose chunk
    /// was forwarded (the rows a partition would have held). Call until it returns 0.
    pub async fn purge_default(
        &self,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<i64, StoreError> {
        self.delete_batch(PURGE_DEFAULT, before, batch).await
    }

    /// Deletes up to `batch` idempotency keys received before `before` (DEDUP_WINDOW ago):
    /// an `eventId` sent again after that is stored as a new event. Call until it returns 0.
    pub async fn expire_keys(&self, before: DateTime<Utc>, batch: i64) -> Result<i64, StoreError> {
        self.delete_batch(EXPIRE_KEYS, before, batch).await
    }

    /// Runs one batch of a row-by-row retention statement (`$1` the cutoff, `$2` the batch;
    /// it answers `n`, the rows deleted). The rows are picked first and deleted by their
    /// physical address (`ctid = ANY(…)`: a TID scan), so each batch reads only its rows.
    async fn delete_batch(
        &self,
        sql: &'static str,
        before: DateTime<Utc>,
        batch: i64,
    ) -> Result<i64, StoreError> {
        self.with_connection(async |conn| {
            Ok(diesel::sql_query(sql)
                .bind::<Timestamptz, _>(before)
                .bind::<BigInt, _>(batch)
                .get_result::<Count>(conn)
                .await?
                .n)
        })
        .await
    }
}

/// The rollback reason of a partition kept because of unfinished chunks.
#[derive(Debug)]
struct HeldBack(i64);

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} unfinished chunks", self.0)
    }
}

impl std::error::Error for HeldBack {}

impl From<HeldBack> for diesel::result::Error {
    fn from(held: HeldBack) -> Self {
        diesel::result::Error::QueryBuilderError(Box::new(held))
    }
}

impl HeldBack {
    fn from_error(error: &diesel::result::Error) -> Option<i64> {
        match error {
            diesel::result::Error::QueryBuilderError(inner) => {
                inner.downcast_ref::<HeldBack>().map(|held| held.0)
            }
            _ => None,
        }
    }
}

/// Whether PostgreSQL gave a statement up on `lock_timeout` (SQLSTATE 55P03).
fn is_lock_timeout(error: &diesel::result::Error) -> bool {
    matches!(
        error,
        diesel::result::Error::DatabaseError(_, info) if info.message().contains("lock timeout")
    )
}

/// `name` as an SQL identifier (partition names come from the catalog; quoted all the same).
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> DateTime<Utc> {
        chrono::NaiveDate::from_ymd_opt(2026, 11, d)
            .and_then(|day| day.and_hms_opt(0, 0, 0))
            .map(|at| at.and_utc())
            .unwrap_or_default()
    }

    fn partition(low: Option<u32>, high: Option<u32>) -> Partition {
        Partition {
            name: format!("{low:?}-{high:?}"),
            low: low.map(day),
            high: high.map(day),
        }
    }

    #[test]
    fn uncovered_ranges_are_the_gaps_before_the_cutoff() {
        let noon = day(2) + chrono::TimeDelta::hours(12);
        let default = partition(None, None);
        let cases: Vec<(Vec<Partition>, DateTime<Utc>, Vec<ArrivalRange>)> = vec![
            // Nothing but the default partition: everything before the cutoff.
            (vec![default.clone()], day(5), vec![(None, day(5))]),
            // The legacy partition covers everything before its bound.
            (
                vec![
                    partition(None, Some(3)),
                    partition(Some(3), Some(4)),
                    default.clone(),
                ],
                day(4),
                vec![],
            ),
            // Days dropped between kept ones, and after the last one.
            (
                vec![
                    partition(Some(1), Some(2)),
                    partition(Some(3), Some(4)),
                    default.clone(),
                ],
                day(6),
                vec![
                    (None, day(1)),
                    (Some(day(2)), day(3)),
                    (Some(day(4)), day(6)),
                ],
            ),
            // A cutoff inside a gap ends it there.
            (
                vec![partition(Some(3), Some(4)), partition(Some(1), Some(2))],
                noon,
                vec![(None, day(1)), (Some(day(2)), noon)],
            ),
            // A cutoff before every partition: only what lies before it.
            (
                vec![partition(Some(3), Some(4))],
                day(2),
                vec![(None, day(2))],
            ),
        ];
        for (partitions, before, want) in cases {
            assert_eq!(
                uncovered(&partitions, before),
                want,
                "{partitions:?} before {before}"
            );
        }
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("events_p20261130"), "\"events_p20261130\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
