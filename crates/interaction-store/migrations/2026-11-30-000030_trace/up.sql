-- "Where is event X?" (issue 12). Two facts the trace shows that nothing recorded yet, both
-- written by the statement that already records every outcome (`record_outcome`): no
-- statement, index or row is added per event, and ADD COLUMN without a default rewrites
-- nothing, however large the tables.
--
-- `last_delivered_at`: when positions of the chunk were last newly recorded delivered. For a
-- chunk delivered in one go (the usual case) it is when each of its events was delivered;
-- for one delivered in parts it is an upper bound for the earlier parts. NULL until then,
-- and on chunks finished before this migration (their `forwarded_at` stands in).
ALTER TABLE chunks ADD COLUMN last_delivered_at TIMESTAMPTZ;

-- `attempts`: delivery rounds the event went through before it was refused (1: refused at
-- its first delivery; each trip through a retry queue adds one). NULL when unknown.
ALTER TABLE event_failures ADD COLUMN attempts INTEGER;

-- A BRIN index only narrows a scan over block ranges it has summarized; ranges filled since
-- the last VACUUM are read whole by every query that uses it. On an insert-only table
-- autovacuum comes by after ~20 % of the table was inserted (autovacuum_vacuum_insert_scale_factor):
-- on 100 million events, the newest 20 million would be read by every subscriber trace (and
-- replay). With autosummarize, each range is queued for summarizing as soon as inserts move
-- past it: work for an autovacuum worker, and for inserts one request per range of 128
-- pages filled (about 10,000 events), nothing per event.
ALTER INDEX events_received_brin SET (autosummarize = on);
