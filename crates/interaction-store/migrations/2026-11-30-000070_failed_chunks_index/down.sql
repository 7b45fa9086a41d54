DROP INDEX IF EXISTS chunks_failed_created
