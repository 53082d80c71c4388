-- The GitHub Deployments jobs open (one per deploy or rollback a job runs, by deploy_key
-- `12` or `12:rollback`): the commit, and GitHub's id once the outbox has created it, so
-- the statuses that follow, after a restart too, know where to go. A row without a
-- deployment_id after its create was delivered is one GitHub never accepted.
CREATE TABLE github_deployments (
    deploy_key TEXT PRIMARY KEY,
    job_id BIGINT NOT NULL,
    repository TEXT NOT NULL,
    environment TEXT NOT NULL,
    version TEXT NOT NULL,
    sha TEXT,
    deployment_id BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX github_deployments_job ON github_deployments (job_id);
CREATE INDEX github_deployments_env ON github_deployments (environment, version);
