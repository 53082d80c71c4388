-- A storm must not bury a P0 (see src/outbox/mod.rs):
-- `whole`: the notice carries the whole state of its thread's message (not a reply, no
--   file), so a newer whole notice of the same thread and channel makes it unnecessary.
-- `priority`: the order in which the sender takes what is due: 0 a new P0/P1 incident
--   message, 1 any other new message, 2 edits of a posted message and replies under it.
ALTER TABLE outbox ADD COLUMN whole INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
CREATE INDEX outbox_pending_priority ON outbox (platform, priority, id) WHERE delivered_at IS NULL;
