-- Storage at production volume (issue 15): `events` partitioned by day of `received_at`, so
-- retention drops whole partitions (no DELETE, no vacuum, almost no WAL), with the idempotency
-- keys in a table of their own (`event_keys`) that keeps them for DEDUP_WINDOW whatever
-- partitions come and go. A unique index on a partitioned table must contain the partition
-- key, so dedup on (tenant, event_id) cannot stay on `events`.
--
-- Live migration: this file runs outside one transaction, in four steps, each committed on its
-- own, each safe to run again if an earlier run was interrupted (the service migrates at
-- start-up, so an interrupted run is simply resumed by the next start):
--   1. (instant) create `event_keys`; add to today's `events` a CHECK that its rows arrived
--      before the day after tomorrow (UTC), NOT VALID: only new rows are checked;
--   2. (one scan of `events`, inserts and reads go on) VALIDATE the CHECK;
--   3. (one pass over the last 7 days of `events`, inserts go on) copy their idempotency keys
--      into `event_keys`;
--   4. (a moment, under an exclusive lock) copy the keys written since step 3 began, rename
--      `events` to `events_legacy`, create the partitioned `events` and ATTACH the old table
--      as its partition for everything before the CHECK's bound. The validated CHECK proves
--      the bound, so ATTACH scans nothing, and the old table's indexes serve as the
--      partition's (its unique index on (tenant, event_id) is dropped: `event_keys` took over). From then on old rows are read and replayed as before; new rows go to
--      `events_legacy` until its bound, then to daily partitions. Retention drops the legacy
--      partition whole once its last day is older than the retention period.
-- An empty `events` (a new installation) is dropped and replaced instead: no legacy partition.
-- Until the new version runs everywhere, replicas of the old one fail their inserts (their
-- ON CONFLICT names a unique index the partitioned table cannot have): clients retry those
-- 503s, and a rolling update ends it. See README "Operations".

-- Step 1.
BEGIN;
CREATE TABLE IF NOT EXISTS event_keys (
    tenant      TEXT        NOT NULL,
    event_id    TEXT        NOT NULL,
    -- Where the event went, so "where is event X?" goes straight to its chunk and partition.
    chunk_id    BIGINT      NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, event_id)
);
-- Expiry (DEDUP_WINDOW) deletes the oldest keys: keys are written in arrival order, so a BRIN
-- index narrows to them at almost no cost per insert.
CREATE INDEX IF NOT EXISTS event_keys_received ON event_keys USING brin (received_at)
    WITH (autosummarize = on);
-- The migration's own notes between its steps; dropped at the end.
CREATE TABLE IF NOT EXISTS events_partitioning (
    legacy_bound TIMESTAMPTZ NOT NULL,
    keys_since   TIMESTAMPTZ
);
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) = 'r'
       AND NOT EXISTS (SELECT 1 FROM events_partitioning) THEN
        INSERT INTO events_partitioning (legacy_bound)
            VALUES (date_trunc('day', now(), 'UTC') + interval '48 hours');
        EXECUTE format(
            'ALTER TABLE events ADD CONSTRAINT events_legacy_bound CHECK (received_at < %L) NOT VALID',
            (SELECT legacy_bound FROM events_partitioning));
    END IF;
END
$$;
COMMIT;

-- Step 2.
BEGIN;
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) = 'r' THEN
        ALTER TABLE events VALIDATE CONSTRAINT events_legacy_bound;
    END IF;
END
$$;
COMMIT;

-- Step 3.
BEGIN;
DO $$
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) = 'r' THEN
        UPDATE events_partitioning SET keys_since = now();
        INSERT INTO event_keys (tenant, event_id, chunk_id, received_at)
            SELECT tenant, event_id, chunk_id, received_at FROM events
            WHERE event_id IS NOT NULL AND received_at >= now() - interval '7 days'
            ON CONFLICT DO NOTHING;
    END IF;
END
$$;
COMMIT;

-- Step 4.
BEGIN;
DO $$
DECLARE
    bound TIMESTAMPTZ := (SELECT legacy_bound FROM events_partitioning);
    legacy BOOLEAN;
BEGIN
    IF (SELECT relkind FROM pg_class WHERE oid = 'events'::regclass) <> 'r' THEN
        RETURN;
    END IF;
    LOCK TABLE events IN ACCESS EXCLUSIVE MODE;
    legacy := EXISTS (SELECT 1 FROM events);
    IF legacy THEN
        -- Rows committed since step 3 took its snapshot arrived (received_at is their
        -- transaction's start) at most a statement timeout before it: a minute covers it.
        INSERT INTO event_keys (tenant, event_id, chunk_id, received_at)
            SELECT tenant, event_id, chunk_id, received_at FROM events
            WHERE event_id IS NOT NULL
              AND received_at >= (SELECT keys_since FROM events_partitioning) - interval '1 minute'
            ON CONFLICT DO NOTHING;
        ALTER TABLE events RENAME TO events_legacy;
        -- Dedup is `event_keys`' now. Left in place, this index would refuse an eventId sent
        -- again after its key expired (DEDUP_WINDOW) while rows still land in this partition.
        DROP INDEX events_tenant_event_id;
        -- The identity's sequence goes with it; a plain sequence continues the numbering.
        ALTER TABLE events_legacy ALTER COLUMN id DROP IDENTITY;
        CREATE SEQUENCE events_id_seq AS BIGINT;
        PERFORM setval('events_id_seq', coalesce((SELECT max(id) FROM events_legacy), 0) + 1, false);
    ELSE
        DROP TABLE events;
        CREATE SEQUENCE events_id_seq AS BIGINT;
    END IF;

    CREATE TABLE events (
        -- Not an identity: a partition created with LIKE shares this default, so rows written
        -- to any partition number from the one sequence (positions in a chunk follow `id`).
        id                   BIGINT           NOT NULL DEFAULT nextval('events_id_seq'),
        chunk_id             BIGINT           NOT NULL,
        tenant               TEXT             NOT NULL,
        event_id             TEXT,
        occurred_at          TIMESTAMPTZ      NOT NULL,
        subscriber           TEXT             NOT NULL,
        asset_id             TEXT             NOT NULL,
        interaction          TEXT             NOT NULL,
        rating               DOUBLE PRECISION NOT NULL,
        comment              TEXT,
        context_id           TEXT,
        device               TEXT             NOT NULL,
        received_at          TIMESTAMPTZ      NOT NULL DEFAULT now(),
        original_occurred_at TIMESTAMPTZ
    ) PARTITION BY RANGE (received_at);
    ALTER SEQUENCE events_id_seq OWNED BY events.id;
    -- Each partition has these three (the legacy table has them already: ATTACH adopts its
    -- indexes instead of building them). No primary key: it would have to include
    -- received_at, and nothing looks events up by id alone.
    CREATE INDEX events_by_chunk ON events (chunk_id);
    CREATE INDEX events_by_tenant_received ON events (tenant, received_at, id);
    CREATE INDEX events_by_received ON events USING brin (received_at);
    IF legacy THEN
        EXECUTE format('ALTER TABLE events ATTACH PARTITION events_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
        ALTER TABLE events_legacy DROP CONSTRAINT events_legacy_bound;
    END IF;
    -- Rows for a day without a partition (the clock jumped past the days created ahead) land
    -- here rather than fail; partition upkeep never creates a day this holds rows of.
    CREATE TABLE events_default PARTITION OF events DEFAULT;
END
$$;
DROP TABLE IF EXISTS events_partitioning;
COMMIT;

-- The partitions of `events` with their bounds: `low` NULL for MINVALUE (the legacy
-- partition), both NULL for the default partition. For retention and upkeep, and for SREs.
CREATE OR REPLACE FUNCTION events_partitions()
RETURNS TABLE (name TEXT, low TIMESTAMPTZ, high TIMESTAMPTZ)
LANGUAGE sql STABLE AS $$
    SELECT c.relname::text,
           substring(b.bound FROM 'FROM \(''([^'']*)''\)')::timestamptz,
           substring(b.bound FROM 'TO \(''([^'']*)''\)')::timestamptz
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) AS b
    WHERE i.inhparent = 'events'::regclass
    ORDER BY 3 NULLS LAST, 1
$$;

-- Creates the day's partition of `events` (UTC day `day`) unless it exists: a table of the
-- parent's shape with its indexes, then ATTACHed, which locks the parent only against other
-- DDL (not against inserts, as CREATE TABLE … PARTITION OF would). Returns 'created',
-- 'exists', 'covered' (another partition, the legacy one, holds part of the day), or 'default holds rows' when rows of that day are in `events_default` (the day is
-- then left there: creating it would fail, and moving rows is an operator's decision).
CREATE OR REPLACE FUNCTION events_create_partition(day DATE) RETURNS TEXT
LANGUAGE plpgsql AS $$
DECLARE
    name TEXT := 'events_p' || to_char(day, 'YYYYMMDD');
    day_low TIMESTAMPTZ := day::timestamp AT TIME ZONE 'UTC';
    day_high TIMESTAMPTZ := (day + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN 'exists';
    END IF;
    IF EXISTS (SELECT 1 FROM events_partitions() AS p
               WHERE p.high IS NOT NULL AND p.high > day_low AND (p.low IS NULL OR p.low < day_high)) THEN
        RETURN 'covered';
    END IF;
    IF EXISTS (SELECT 1 FROM events_default WHERE received_at >= day_low AND received_at < day_high) THEN
        RETURN 'default holds rows';
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', name);
    EXECUTE format('CREATE INDEX %I ON %I (chunk_id)', name || '_chunk', name);
    EXECUTE format('CREATE INDEX %I ON %I (tenant, received_at, id)', name || '_tenant_received', name);
    EXECUTE format('CREATE INDEX %I ON %I USING brin (received_at)', name || '_received', name);
    -- The CHECK lets ATTACH skip its scan (of an empty table, but also of the default partition).
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (received_at >= %L AND received_at < %L)',
                   name, name || '_bound', day_low, day_high);
    EXECUTE format('ALTER TABLE events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)', name, day_low, day_high);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', name, name || '_bound');
    RETURN 'created';
END
$$;
