-- Webhook deliveries taken (`X-GitHub-Delivery`), so a replayed one changes nothing; rows
-- older than a week are pruned (GitHub redelivers for three days at most).
CREATE TABLE github_deliveries (
    delivery_id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX github_deliveries_received ON github_deliveries (received_at);

-- Continuous delivery (`[environments.X] auto_deploy`), one row per environment: the
-- branch's head as GitHub's API last answered it (with the answer's ETag, for conditional
-- polls), who pushed a head (from push events), when it may be polled next (replicas
-- claim a poll by moving next_poll_at, and a rate limit pushes it out), and the last
-- judgement of a commit (pending, failed, refused, queued, running), so a failing commit
-- is not asked about again and a refusal is audited once.
CREATE TABLE github_branches (
    environment TEXT PRIMARY KEY,
    repository TEXT NOT NULL,
    branch TEXT NOT NULL,
    etag TEXT,
    head_sha TEXT,
    head_author TEXT,
    pushed_sha TEXT,
    pusher TEXT,
    next_poll_at INTEGER NOT NULL DEFAULT 0,
    judged_sha TEXT,
    judgement TEXT,
    detail TEXT,
    updated_at INTEGER NOT NULL
);
