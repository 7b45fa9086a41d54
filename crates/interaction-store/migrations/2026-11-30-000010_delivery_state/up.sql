-- Delivery state per part of a chunk (issue 12). A chunk's events are numbered by their
-- position in the chunk (0-based, in `events.id` order: the order ingest-api publishes them).
-- Messages carry a part of a chunk (positions); each outcome adds its positions here with one
-- UPDATE of the chunk row, so a partial failure, a retry and a re-drive can interleave in any
-- order and only the positions actually delivered count as delivered. Multiranges keep this
-- to a few bytes per chunk whatever its size: no row per event.
--
-- `delivered`: positions Ncanto accepted. `refused`: positions refused for good (or out of
-- retries) and not delivered since, each with an `event_failures` row. The chunk is
-- `forwarded` once `delivered` covers [0, event_count), `failed` once delivered and refused
-- together cover it with something refused. ADD COLUMN with a constant default rewrites
-- nothing, however large the table.
ALTER TABLE chunks
    ADD COLUMN delivered int4multirange NOT NULL DEFAULT '{}',
    ADD COLUMN refused   int4multirange NOT NULL DEFAULT '{}';

-- Which event of its chunk a failure is about, so recording the same outcome twice (a
-- redelivery after a crash, a retry after the database came back) keeps one row per event,
-- holding the latest reason. NULL on rows written before this migration.
ALTER TABLE event_failures ADD COLUMN position INTEGER;
CREATE UNIQUE INDEX event_failures_chunk_position ON event_failures (chunk_id, position)
    WHERE position IS NOT NULL;
