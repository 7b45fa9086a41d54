DROP INDEX chunks_forwarded_created;
DROP INDEX events_received_brin;
DROP TABLE event_failures;
