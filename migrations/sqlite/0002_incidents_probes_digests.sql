-- Incidents: one row per episode of an alert or a failing probe. While it fires, its
-- dedup key is unique, so repeats update the same row (and the same chat message).
CREATE TABLE incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_key TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT NOT NULL,
    severity TEXT NOT NULL,
    environment TEXT,
    service TEXT,
    description TEXT,
    link TEXT,
    -- Where its message lives: [[platform, channel], …], so updates reach the same place.
    channels TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL,
    firing_count INTEGER NOT NULL DEFAULT 1,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    resolved_at INTEGER,
    acked_by TEXT,
    acked_at INTEGER,
    reminded_at INTEGER
);
CREATE UNIQUE INDEX incidents_open_key ON incidents (dedup_key) WHERE status = 'firing';
CREATE INDEX incidents_env ON incidents (environment, first_seen);

CREATE TABLE probe_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    environment TEXT,
    at INTEGER NOT NULL,
    ok BOOLEAN NOT NULL,
    status INTEGER,
    latency_ms INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX probe_results_target ON probe_results (target, at);
CREATE INDEX probe_results_env ON probe_results (environment, at);

-- Things that must happen once across replicas: a probe round, a digest firing, a budget
-- alert for a month. The first replica to insert the row does it.
CREATE TABLE claims (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at INTEGER NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);

-- The last firing each schedule has dealt with, so a restart knows what it missed.
CREATE TABLE schedule_state (
    name TEXT PRIMARY KEY,
    last_fire_at INTEGER NOT NULL
);

-- Files attached to notices (digest charts).
CREATE TABLE attachments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    name TEXT NOT NULL,
    content_type TEXT NOT NULL,
    data BLOB NOT NULL
);
