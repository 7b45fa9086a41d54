ALTER INDEX events_received_brin RESET (autosummarize);
ALTER TABLE event_failures DROP COLUMN attempts;
ALTER TABLE chunks DROP COLUMN last_delivered_at;
