-- A step's process group may outlive the process that ran it (kill -9 of the server). The
-- job then holds its environment (held_since, ms) until the group is confirmed gone on its
-- host, its step timeout has passed (seen from another host), or an admin releases it.
-- step_host: where the group lives; step_leader: "BOOT_ID:START_TICKS" of its leader, so a
-- reused pid is not mistaken for it; step_deadline: when the step's timeout and kill grace
-- are over (ms).
ALTER TABLE jobs ADD COLUMN step_host TEXT;
ALTER TABLE jobs ADD COLUMN step_leader TEXT;
ALTER TABLE jobs ADD COLUMN step_deadline BIGINT;
ALTER TABLE jobs ADD COLUMN held_since BIGINT;
-- The claim skips environments with a held job.
CREATE INDEX jobs_held ON jobs (concurrency_key) WHERE held_since IS NOT NULL;
