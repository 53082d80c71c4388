-- Timestamps are milliseconds since the Unix epoch (BIGINT) on both backends.
CREATE TABLE jobs (
    id BIGSERIAL PRIMARY KEY,
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
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    run_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    result TEXT,
    approvals_needed BIGINT NOT NULL DEFAULT 0,
    approval_deadline BIGINT,
    emergency TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    -- Process group of the running step, so a restart on the same host can stop an orphan.
    step_pgid BIGINT
);
-- At most one running job per environment, whatever the workers believe.
CREATE UNIQUE INDEX jobs_one_running_per_key ON jobs (concurrency_key) WHERE state = 'running';
-- The claim walks queued jobs oldest first. An index on (state, run_at, id) made SQLite
-- sort every queued row on each claim (a temp B-tree: the profile's B-tree scanning once
-- thousands were queued); (state, id) hands them over in order.
CREATE INDEX jobs_state_id ON jobs (state, id);
CREATE INDEX jobs_concurrency ON jobs (concurrency_key, state, id);

CREATE TABLE job_logs (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL,
    step TEXT NOT NULL,
    stream TEXT NOT NULL,
    line TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, id);

CREATE TABLE deployments (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT NOT NULL,
    environment TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    status TEXT NOT NULL,
    verified BOOLEAN NOT NULL DEFAULT FALSE,
    health TEXT,
    migration TEXT,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    duration_ms BIGINT
);
CREATE INDEX deployments_env ON deployments (environment, id);

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    platform TEXT NOT NULL,
    action TEXT NOT NULL,
    environment TEXT,
    job_id BIGINT,
    detail TEXT NOT NULL
);
CREATE INDEX audit_env ON audit_events (environment, id);

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    job_id BIGINT,
    platform TEXT NOT NULL,
    channel TEXT,
    thread_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    delivered_at BIGINT,
    last_error TEXT,
    -- Claims so far: more claims than recorded failures means an earlier claim may have
    -- delivered before its process died (see the platform's reconcile step).
    sends BIGINT NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claim_until BIGINT
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
    locked_at BIGINT NOT NULL,
    reminded_at BIGINT
);

CREATE TABLE approvals (
    job_id BIGINT NOT NULL,
    approver TEXT NOT NULL,
    platform TEXT NOT NULL,
    decision TEXT NOT NULL,
    at BIGINT NOT NULL,
    PRIMARY KEY (job_id, approver)
);

CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);
