-- Replay and counts by tenant and time (`forwarder replay`, issue 15): one range of this index
-- per page, read in (received_at, id) order, instead of walking the BRIN over every tenant's
-- rows. CONCURRENTLY, so a live table of billions of rows keeps taking writes while it is
-- built (hence no transaction: metadata.toml; and one statement only — several would run in
-- an implicit transaction). If a build is interrupted, PostgreSQL leaves an INVALID index of
-- this name: drop it (DROP INDEX CONCURRENTLY events_tenant_received) and migrate again.
CREATE INDEX CONCURRENTLY IF NOT EXISTS events_tenant_received ON events (tenant, received_at, id)
