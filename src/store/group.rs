//! Group commit: one writer per process commits the new jobs and alert updates that arrive
//! while a commit is in flight together, in one transaction, so a burst of commands or
//! webhooks costs one fsync (SQLite) or one WAL flush (PostgreSQL) per batch rather than
//! per request, as PostgreSQL's own `commit_delay` and SQLite's WAL do for their callers.
//!
//! The promise is unchanged: each caller is answered only after the commit that holds its
//! rows, so nothing is acknowledged before it is on disk. There is no timer: the writer
//! takes whatever is waiting when it is free, so a lone command on an idle system commits
//! at once. A job whose idempotency key was seen before is answered with the earlier job,
//! alone; a guarded update that finds its row moved writes nothing, alone; if a batch
//! fails for any other reason, it is rolled back and each of its requests is tried again
//! on its own, so one bad request fails only itself.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::time::now_ms;
use crate::on_db;
use crate::store::jobs::{Enqueued, Extra, NewJob, PG_CHANNEL};
use crate::store::{Db, Result, StoreError, Write, exec_write, many};

/// Most requests in one transaction: a bound on how long the first of them waits.
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before callers wait to hand theirs over.
const QUEUE: usize = 4096;

/// One request of a batch.
pub enum Item<'a> {
    /// A new job and the writes recorded with it.
    Job(&'a NewJob, &'a Extra),
    /// Writes; when `guarded`, the first is an update that must match a row, else none of
    /// them is written (see [`Db::apply_if_first`]).
    Writes { writes: &'a [Write], guarded: bool },
}

/// What one request did.
pub enum Done {
    Job(Enqueued),
    /// Whether the writes went in (always, unless guarded).
    Applied(bool),
}

/// Each backend's text of a statement of `store::many`, made once.
struct Sql {
    pg: std::sync::LazyLock<String>,
    sqlite: std::sync::LazyLock<String>,
}

impl Sql {
    fn of(&self, db: &Db) -> &str {
        match db {
            Db::Postgres(_) => &self.pg,
            Db::Sqlite(_) => &self.sqlite,
        }
    }
}

macro_rules! sql_of {
    ($f:path) => {
        Sql {
            pg: std::sync::LazyLock::new(|| $f(true)),
            sqlite: std::sync::LazyLock::new(|| $f(false)),
        }
    };
}

static INSERT_JOBS: Sql = sql_of!(many::insert_jobs_sql);
static BEHIND: Sql = sql_of!(many::behind_sql);
static INSERT_NOTICES: Sql = sql_of!(many::insert_notices_sql);
static INSERT_AUDITS: Sql = sql_of!(many::insert_audits_sql);

fn job_of<'a>(item: &Item<'a>) -> (&'a NewJob, &'a Extra) {
    match item {
        Item::Job(job, extra) => (*job, *extra),
        Item::Writes { .. } => unreachable!("a job item"),
    }
}

impl Db {
    /// Run `items` in one transaction; see the module's comment. The jobs that carry an
    /// idempotency key (every command from a platform) go in together, a few statements
    /// for all of them (`store::many`); the rest, and the writes, one by one in order.
    pub async fn commit_batch(&self, items: &[Item<'_>]) -> Result<Vec<Done>> {
        let now = now_ms();
        let keyed: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, it)| matches!(it, Item::Job(j, _) if j.idempotency_key.is_some()))
            .map(|(i, _)| i)
            .collect();
        on_db!(self, p => {
            let mut tx = p.begin().await?;
            let mut out: Vec<Option<Done>> = items.iter().map(|_| None).collect();
            if keyed.len() > 1 {
                // The first request of each key is inserted; a repeat of it in the same
                // batch (a platform's retry) is answered with that job, as it would be
                // one batch later.
                let key = |i: usize| job_of(&items[i]).0.idempotency_key.as_deref().unwrap_or_default();
                let mut seen = std::collections::HashSet::new();
                let firsts: Vec<usize> = keyed.iter().copied().filter(|&i| seen.insert(key(i))).collect();
                let inserted: Vec<(i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(INSERT_JOBS.of(self)))
                    .bind(now)
                    .bind(many::job_rows(firsts.iter().map(|&i| job_of(&items[i]).0)))
                    .fetch_all(&mut *tx)
                    .await?;
                let ids: std::collections::HashMap<String, i64> =
                    inserted.into_iter().map(|(id, k)| (k, id)).collect();
                let taken: Vec<&str> = firsts.iter().map(|&i| key(i)).filter(|k| !ids.contains_key(*k)).collect();
                let mut earlier: std::collections::HashMap<String, (i64, String)> = Default::default();
                for k in taken {
                    let (id, state): (i64, String) =
                        sqlx::query_as("SELECT id, state FROM jobs WHERE idempotency_key = $1")
                            .bind(k)
                            .fetch_one(&mut *tx)
                            .await?;
                    earlier.insert(k.to_owned(), (id, state));
                }
                let waiting: Vec<(i64, &str)> = firsts
                    .iter()
                    .filter_map(|&i| {
                        let job = job_of(&items[i]).0;
                        Some((*ids.get(key(i))?, job.concurrency_key.as_deref()?))
                    })
                    .collect();
                let behind: std::collections::HashMap<i64, Option<i64>> = if waiting.is_empty() {
                    Default::default()
                } else {
                    sqlx::query_as::<_, (i64, Option<i64>)>(sqlx::AssertSqlSafe(BEHIND.of(self)))
                        .bind(many::behind_rows(&waiting))
                        .fetch_all(&mut *tx)
                        .await?
                        .into_iter()
                        .collect()
                };
                let mut writes = Vec::new();
                let mut answered = std::collections::HashSet::new();
                for &i in &keyed {
                    let (job, extra) = job_of(&items[i]);
                    let k = key(i);
                    let done = match (ids.get(k), answered.insert(k)) {
                        (Some(&id), true) => {
                            let behind = behind.get(&id).copied().flatten();
                            writes.extend(extra(id, behind));
                            Enqueued { id, created: true, behind, state: job.state.clone() }
                        }
                        (Some(&id), false) => Enqueued { id, created: false, behind: None, state: job.state.clone() },
                        (None, _) => {
                            let (id, state) = earlier.get(k).cloned().ok_or_else(|| {
                                StoreError::Conflict("a job's idempotency key was taken and is gone".into())
                            })?;
                            Enqueued { id, created: false, behind: None, state }
                        }
                    };
                    out[i] = Some(Done::Job(done));
                }
                // The notices and audit events of all of them, one statement per table; a
                // thread's second notice in the batch after its first (it follows up).
                let mut threads = std::collections::HashSet::new();
                let (mut notices, mut audits, mut rest) = (Vec::new(), Vec::new(), Vec::new());
                for w in &writes {
                    match w {
                        Write::Notice(n) if threads.insert((&n.platform, &n.channel, &n.thread_key)) => notices.push(n),
                        Write::Audit(a) => audits.push(a),
                        w => rest.push(w),
                    }
                }
                if !notices.is_empty() {
                    sqlx::query(sqlx::AssertSqlSafe(INSERT_NOTICES.of(self)))
                        .bind(many::notice_rows(notices.into_iter()))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                if !audits.is_empty() {
                    sqlx::query(sqlx::AssertSqlSafe(INSERT_AUDITS.of(self)))
                        .bind(many::audit_rows(audits.into_iter()))
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                for w in rest {
                    exec_write!(self, tx, w)?;
                }
            }
            for (item, slot) in items.iter().zip(out.iter_mut()) {
                if slot.is_some() {
                    continue;
                }
                let (job, extra) = match item {
                    Item::Writes { writes, guarded } => {
                        let mut applied = true;
                        for (i, w) in writes.iter().enumerate() {
                            let n = exec_write!(self, tx, w)?;
                            if i == 0 && *guarded && n == 0 {
                                applied = false;
                                break;
                            }
                        }
                        *slot = Some(Done::Applied(applied));
                        continue;
                    }
                    Item::Job(job, extra) => (job, extra),
                };
                let inserted: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO jobs (command, kind, environment, version, args, state, requested_by, platform, \
                     channel, reply_to, idempotency_key, concurrency_key, idempotent, approvals_needed, \
                     approval_deadline, emergency, run_at, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17) \
                     ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
                )
                .bind(&job.command)
                .bind(&job.kind)
                .bind(&job.environment)
                .bind(&job.version)
                .bind(&job.args)
                .bind(&job.state)
                .bind(&job.requested_by)
                .bind(&job.platform)
                .bind(&job.channel)
                .bind(&job.reply_to)
                .bind(&job.idempotency_key)
                .bind(&job.concurrency_key)
                .bind(job.idempotent)
                .bind(job.approvals_needed)
                .bind(job.approval_deadline)
                .bind(&job.emergency)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = inserted else {
                    let (id, state): (i64, String) =
                        sqlx::query_as("SELECT id, state FROM jobs WHERE idempotency_key = $1")
                            .bind(&job.idempotency_key)
                            .fetch_one(&mut *tx)
                            .await?;
                    *slot = Some(Done::Job(Enqueued { id, created: false, behind: None, state }));
                    continue;
                };
                let behind: Option<i64> = match &job.concurrency_key {
                    Some(k) => sqlx::query_scalar(
                        // One part per state, each a search of `jobs_concurrency` (key, state,
                        // id) for its last entry below `id`, whatever the plan: `state IN (…)`
                        // let a plan made while the table was empty walk the key's whole
                        // history (every parked job of the environment) on each insert.
                        "SELECT MAX(x) FROM (SELECT MAX(id) AS x FROM jobs WHERE concurrency_key = $1 \
                         AND state = 'queued' AND id < $2 UNION ALL \
                         SELECT MAX(id) FROM jobs WHERE concurrency_key = $1 AND state = 'running' \
                         AND id < $2 UNION ALL \
                         SELECT MAX(id) FROM jobs WHERE concurrency_key = $1 AND id < $2 \
                         AND held_since IS NOT NULL) m",
                    )
                    .bind(k)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?,
                    None => None,
                };
                for w in extra(id, behind) {
                    exec_write!(self, tx, &w)?;
                }
                *slot = Some(Done::Job(Enqueued { id, created: true, behind, state: job.state.clone() }));
            }
            // Workers are woken for what they can run: not for jobs waiting for approval.
            let out: Vec<Done> = out.into_iter().map(|d| d.expect("every item answered")).collect();
            let new_job = out.iter().any(
                |d| matches!(d, Done::Job(e) if e.created && e.state == crate::store::jobs::state::QUEUED),
            );
            if matches!(self, Db::Postgres(_)) && new_job {
                sqlx::query(sqlx::AssertSqlSafe(format!("NOTIFY {PG_CHANNEL}"))).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(out)
        })
    }
}

enum Work {
    Job(Box<NewJob>, Arc<Extra>),
    Writes(Vec<Write>, bool),
}

struct Request {
    work: Work,
    done: oneshot::Sender<Result<Done>>,
}

impl Request {
    fn item(&self) -> Item<'_> {
        match &self.work {
            Work::Job(job, extra) => Item::Job(job, &**extra),
            Work::Writes(writes, guarded) => Item::Writes {
                writes,
                guarded: *guarded,
            },
        }
    }
}

/// The handle callers write through; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    lanes: Arc<[mpsc::Sender<Request>]>,
    next: Arc<std::sync::atomic::AtomicUsize>,
}

impl GroupCommit {
    /// Start `lanes` writers on the current runtime, side by side, each committing its own
    /// batches on its own connection of `db` (best a pool of its own, holding `lanes`
    /// connections plus one for retries, so that no writer waits for a connection behind
    /// background work). They end when every handle is dropped. One writer waits for the database on every statement of a batch, and on
    /// PostgreSQL those round trips, not the server, were the limit of intake (≈ 5 per
    /// command); several lanes overlap them. The repeats of one idempotency key (a
    /// platform's retry of one request) take the same lane, so two batches never wait for
    /// each other's key. Order is kept where anyone can see it: a command sent after
    /// another's answer is written after it, whatever their lanes; two commands in flight
    /// at once are in no order, in one process as across replicas. SQLite has one writer
    /// at a time whatever the lanes: use one there.
    pub fn start(db: Db, lanes: usize) -> GroupCommit {
        let lanes: Vec<_> = (0..lanes.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tokio::spawn(writer(db.clone(), rx));
                tx
            })
            .collect();
        GroupCommit {
            lanes: lanes.into(),
            next: Arc::default(),
        }
    }

    fn lane(&self, work: &Work) -> &mpsc::Sender<Request> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let n = self.lanes.len();
        let key = match work {
            Work::Job(job, _) => job.idempotency_key.as_ref(),
            Work::Writes(..) => None,
        };
        let i = match key {
            // A fixed hasher: the same key takes the same lane for the process's life.
            Some(k) => BuildHasherDefault::<DefaultHasher>::default().hash_one(k) as usize % n,
            None => self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n,
        };
        &self.lanes[i]
    }

    /// Enqueue `job` with the writes `extra` makes for it; returns once the transaction
    /// holding them has committed.
    pub async fn enqueue(&self, job: NewJob, extra: Arc<Extra>) -> Result<Enqueued> {
        match self.send(Work::Job(Box::new(job), extra)).await? {
            Done::Job(e) => Ok(e),
            Done::Applied(_) => unreachable!("a job's answer"),
        }
    }

    /// [`Db::apply_if_first`] through the writer: whether the writes went in.
    pub async fn apply_if_first(&self, writes: Vec<Write>) -> Result<bool> {
        match self.send(Work::Writes(writes, true)).await? {
            Done::Applied(b) => Ok(b),
            Done::Job(_) => unreachable!("a write's answer"),
        }
    }

    /// [`Db::apply`] through the writer (the ids it returns are not kept).
    pub async fn apply(&self, writes: Vec<Write>) -> Result<()> {
        self.send(Work::Writes(writes, false)).await.map(|_| ())
    }

    async fn send(&self, work: Work) -> Result<Done> {
        let (done, answer) = oneshot::channel();
        let gone = || StoreError::Conflict("the intake writer has stopped".into());
        self.lane(&work)
            .send(Request { work, done })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

async fn writer(db: Db, mut rx: mpsc::Receiver<Request>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit(&db, std::mem::take(&mut batch)).await;
    }
}

async fn commit(db: &Db, batch: Vec<Request>) {
    let items: Vec<Item> = batch.iter().map(Request::item).collect();
    let res = db.commit_batch(&items).await;
    drop(items);
    match res {
        Ok(results) => {
            crate::support::metrics::intake_batch(results.len());
            for (r, res) in batch.into_iter().zip(results) {
                let _ = r.done.send(Ok(res));
            }
        }
        Err(e) if batch.len() == 1 => {
            // Alone: its own error, nothing to retry.
            let r = batch.into_iter().next().expect("one request");
            let _ = r.done.send(Err(e));
        }
        Err(e) if e.is_outage() => {
            // The database is unreachable: one by one would only wait as long again each.
            tracing::warn!(error = %e, requests = batch.len(), "a group commit failed");
            let why = e.to_string();
            for r in batch {
                let _ = r.done.send(Err(StoreError::Unavailable(why.clone())));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, requests = batch.len(), "a group commit failed; committing its requests one by one");
            for r in batch {
                let res = db.commit_batch(&[r.item()]).await.map(|mut d| d.remove(0));
                if res.is_ok() {
                    crate::support::metrics::intake_batch(1);
                }
                let _ = r.done.send(res);
            }
        }
    }
}
