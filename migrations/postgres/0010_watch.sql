-- When a deploy's watch window started and until when it runs (ms): a job found interrupted
-- with this set was killed during (or after) its watch, and recovery says so.
ALTER TABLE jobs ADD COLUMN watch_until BIGINT;
