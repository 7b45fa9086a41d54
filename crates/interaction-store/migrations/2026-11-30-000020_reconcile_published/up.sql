-- The reconciler's claim looks for chunks `published` long ago and never finished, oldest
-- publish first. Few chunks are in that state at any time (the in-flight backlog), but during a
-- long forwarder outage there can be millions: this keeps each look a short index range scan.
-- The expression is the claim's own (`coalesce`: a published chunk without published_at must
-- still be found).
CREATE INDEX chunks_published_since ON chunks ((coalesce(published_at, created_at)))
    WHERE state = 'published';
