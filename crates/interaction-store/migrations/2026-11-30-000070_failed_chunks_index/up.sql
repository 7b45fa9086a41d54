-- Retention deletes the rows of failed chunks whose day was dropped and whose failure rows
-- have expired (PURGE_FAILURES_OLDER_THAN), oldest first: one range of this index per batch.
-- Few chunks fail, so it stays small. CONCURRENTLY, so a live chunks table keeps taking writes
-- while it is built (hence no transaction, and one statement; an interrupted build leaves an
-- INVALID index: DROP INDEX CONCURRENTLY chunks_failed_created, then migrate again).
CREATE INDEX CONCURRENTLY IF NOT EXISTS chunks_failed_created ON chunks (created_at) WHERE state = 'failed'
