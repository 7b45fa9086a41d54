-- Retention deletes failure rows older than PURGE_FAILURES_OLDER_THAN, oldest first: one range
-- of this index per batch. CONCURRENTLY, like 000070.
CREATE INDEX CONCURRENTLY IF NOT EXISTS event_failures_failed_at ON event_failures (failed_at)
