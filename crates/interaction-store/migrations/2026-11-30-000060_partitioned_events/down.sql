-- Back to one unpartitioned table: every partition's rows are copied into it (a full rewrite;
-- for development databases, not for a live system of billions of rows).
DROP FUNCTION IF EXISTS events_create_partition(DATE);
ALTER TABLE events RENAME TO events_partitioned;
CREATE TABLE events (
    id                   BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
);
INSERT INTO events OVERRIDING SYSTEM VALUE SELECT * FROM events_partitioned;
SELECT setval(pg_get_serial_sequence('events', 'id'), coalesce(max(id), 0) + 1, false) FROM events;
DROP TABLE events_partitioned;
DROP TABLE event_keys;
CREATE UNIQUE INDEX events_tenant_event_id ON events (tenant, event_id) WHERE event_id IS NOT NULL;
CREATE INDEX events_chunk ON events (chunk_id);
CREATE INDEX events_received_brin ON events USING brin (received_at) WITH (autosummarize = on);
CREATE INDEX events_tenant_received ON events (tenant, received_at, id);
