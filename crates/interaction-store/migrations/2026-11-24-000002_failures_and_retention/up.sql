-- Events Ncanto refused for good (or that ran out of retries): one row per event with the
-- reason, for operators. The event is kept as sent, so a re-drive needs nothing else.
CREATE TABLE event_failures (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    chunk_id   BIGINT      NOT NULL,
    tenant     TEXT        NOT NULL,
    event      JSONB       NOT NULL,
    reason     TEXT        NOT NULL,
    -- Ncanto's HTTP status, when it answered.
    status     INTEGER,
    failed_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX event_failures_chunk ON event_failures (chunk_id);

-- Replay and retention select events by arrival time. received_at grows with the table, so a
-- BRIN index stays tiny and costs inserts almost nothing, even at 100 million rows.
CREATE INDEX events_received_brin ON events USING brin (received_at);
-- Retention deletes the chunks it emptied, oldest first.
CREATE INDEX chunks_forwarded_created ON chunks (created_at) WHERE state = 'forwarded';
