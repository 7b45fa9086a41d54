DROP INDEX IF EXISTS event_failures_chunk_position;
ALTER TABLE event_failures DROP COLUMN IF EXISTS position;
ALTER TABLE chunks DROP COLUMN IF EXISTS delivered, DROP COLUMN IF EXISTS refused;
