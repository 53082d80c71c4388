-- The status pages: a job list per environment and state (running and queued jobs on `/`,
-- the last migration's backup), the audit log by person, and commands by name (the audit
-- page's command filter).
CREATE INDEX jobs_env_state ON jobs (environment, state, id);
CREATE INDEX jobs_command ON jobs (command, id);
CREATE INDEX audit_actor ON audit_events (actor, id);
-- Uptime by environment and day reads only this index (no row lookups).
CREATE INDEX probe_results_env_ok ON probe_results (environment, at, ok);
