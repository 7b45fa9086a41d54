ALTER TABLE events DROP COLUMN original_occurred_at;
