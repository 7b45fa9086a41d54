DROP INDEX IF EXISTS event_failures_failed_at
