-- jobs_held gains `id`, so the "queued behind" look of a batch of new jobs (one statement,
-- its rows from jsonb_to_recordset) reads the last held job of the environment below each
-- new id from this index alone. With the key only, a plan made before the table's first
-- ANALYZE took jobs_concurrency (key, state, id) for `id < $` and filtered every parked job
-- of the environment on `held_since`: 220 ms a batch, 80,000 buffer hits, with 3,000 parked
-- (pg_stat_statements over the ingress bench). SQLite's index already holds the rowid.
DROP INDEX IF EXISTS jobs_held;
CREATE INDEX jobs_held ON jobs (concurrency_key, id) WHERE held_since IS NOT NULL;
