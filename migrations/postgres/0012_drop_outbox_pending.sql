-- outbox_pending (platform, delivered_at, id) served no query on PostgreSQL: the claim, the
-- thread looks and the pending counts use the partial indexes outbox_pending_priority and
-- outbox_thread_pending (WHERE delivered_at IS NULL). It cost one index entry more for every
-- notice written and for every one marked delivered, the writes of an alert storm.
-- (SQLite keeps it: its planner uses it for the claim.)
DROP INDEX IF EXISTS outbox_pending;
