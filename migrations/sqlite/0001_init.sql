-- Timestamps are milliseconds since the Unix epoch (INTEGER) on both backends.
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    kind TEXT NOT NULL,
    environment TEXT,
    version TEXT,
    args TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT,
    reply_to TEXT,
    idempotency_key TEXT UNIQUE,
    concurrency_key TEXT,
    idempotent BOOLEAN NOT NULL DEFAULT FALSE,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until INTEGER,
    run_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    result TEXT,
    approvals_needed INTEGER NOT NULL DEFAULT 0,
    approval_deadline INTEGER,
    emergency TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- Process group of the running step, so a restart on the same host can stop an orphan.
    step_pgid INTEGER
);
-- At most one running job per environment, whatever the workers believe.
CREATE UNIQUE INDEX jobs_one_running_per_key ON jobs (concurrency_key) WHERE state = 'running';
-- The claim walks queued jobs oldest first. An index on (state, run_at, id) made SQLite
-- sort every queued row on each claim (a temp B-tree: the profile's B-tree scanning once
-- thousands were queued); (state, id) hands them over in order.
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_concurrency ON jobs (concurrency_key, state, id);

CREATE TABLE job_logs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);

CREATE TABLE deployments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    environment TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    health TEXT,
    migration TEXT,
    started_at INTEGER NOT NULL,
    finished_at INTEGER,
    duration_ms INTEGER
);
CREATE INDEX deployments_env ON deployments (environment, id);

CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    actor TEXT NOT NULL,
    platform TEXT NOT NULL,
    action TEXT NOT NULL,
    environment TEXT,
    job_id INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX audit_env ON audit_events (environment, id);

CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER,
    platform TEXT NOT NULL,
    channel TEXT,
    thread_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    delivered_at INTEGER,
    last_error TEXT,
    -- Claims so far: more claims than recorded failures means an earlier claim may have
    -- delivered before its process died (see the platform's reconcile step).
    sends INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claim_until INTEGER
);
CREATE INDEX outbox_pending ON outbox (platform, delivered_at, id);
CREATE INDEX outbox_job ON outbox (job_id, id);

-- The platform's id of the message that represents a thread (a job, an incident).
CREATE TABLE platform_messages (
    platform TEXT NOT NULL,
    channel TEXT NOT NULL,
    thread_key TEXT NOT NULL,
    message_ref TEXT NOT NULL,
    PRIMARY KEY (platform, channel, thread_key)
);

CREATE TABLE locks (
    environment TEXT PRIMARY KEY,
    locked_by TEXT NOT NULL,
    platform TEXT NOT NULL,
    channel TEXT,
    reason TEXT NOT NULL,
    locked_at INTEGER NOT NULL,
    reminded_at INTEGER
);

CREATE TABLE approvals (
    job_id INTEGER NOT NULL,
    approver TEXT NOT NULL,
    platform TEXT NOT NULL,
    decision TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (job_id, approver)
);

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
