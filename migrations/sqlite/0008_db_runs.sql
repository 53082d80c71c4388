-- What Deckhand did to an environment's own database: migrations (with the schema the
-- migration set produces on a fresh database and any drift found), backups (with their
-- restore test) and restores. Staging-first for migrations and the digest's "last verified
-- backup" read from here. Never holds a database URL.
-- kind: migrate | backup | restore; ok: 1 when the run finished cleanly; schema_fp: SHA-256
-- of the fresh database's schema (the migration set); drift: '' for none, else the
-- differences by name; backup_verified: 1 once restored into a scratch database and compared.
CREATE TABLE db_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    environment TEXT NOT NULL,
    kind TEXT NOT NULL,
    job_id BIGINT,
    at BIGINT NOT NULL,
    ok INTEGER NOT NULL,
    schema_fp TEXT,
    drift TEXT,
    backup_path TEXT,
    backup_bytes BIGINT,
    backup_verified INTEGER NOT NULL DEFAULT 0,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX db_runs_env ON db_runs (environment, kind, at);
