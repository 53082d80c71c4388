-- The claim skips a notice while an earlier one of its thread is undelivered. Without this
-- index that check reads every pending notice of the platform for each candidate, which is
-- quadratic in the backlog (thousands of notices waiting for one busy channel).
CREATE INDEX outbox_thread_pending ON outbox (platform, thread_key, id) WHERE delivered_at IS NULL;
