//! Group commit for intake: one writer per process commits the jobs that arrive while a
//! commit is in flight together, in one transaction, so a burst of commands costs one
//! fsync (SQLite) or one WAL flush (PostgreSQL) per batch rather than per command, as
//! PostgreSQL's own `commit_delay` and SQLite's WAL do for their callers.
//!
//! The promise is unchanged: each caller is answered only after the commit that holds its
//! row, so nothing is acknowledged before it is on disk. There is no timer: the writer
//! takes whatever is waiting when it is free, so a lone command on an idle system commits
//! at once. A job whose idempotency key was seen before is answered with the earlier job,
//! alone; if a batch fails for any other reason, it is rolled back and each of its jobs is
//! tried again on its own, so one bad job fails only itself.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::jobs::{Enqueued, Extra, NewJob};
use crate::store::{Db, Result, StoreError};

/// Most jobs in one transaction: a bound on how long the first of them waits.
const MAX_BATCH: usize = 256;
/// Requests waiting for the writer before callers wait to hand theirs over.
const QUEUE: usize = 4096;

struct Request {
    job: NewJob,
    extra: Arc<Extra>,
    done: oneshot::Sender<Result<Enqueued>>,
}

/// The handle callers enqueue through; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Start the writer on the current runtime. It ends when every handle is dropped.
    pub fn start(db: Db) -> GroupCommit {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(db, rx));
        GroupCommit { tx }
    }

    /// Enqueue `job` with the writes `extra` makes for it; returns once the transaction
    /// holding them has committed.
    pub async fn enqueue(&self, job: NewJob, extra: Arc<Extra>) -> Result<Enqueued> {
        let (done, answer) = oneshot::channel();
        let gone = || StoreError::Conflict("the intake writer has stopped".into());
        self.tx
            .send(Request { job, extra, done })
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
    let all: Vec<(&NewJob, &Extra)> = batch.iter().map(|r| (&r.job, &*r.extra)).collect();
    match db.enqueue_batch(&all).await {
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
        Err(e) => {
            tracing::warn!(error = %e, jobs = batch.len(), "an intake batch failed; committing its jobs one by one");
            for r in batch {
                let res = db.enqueue(&r.job, &*r.extra).await;
                if res.is_ok() {
                    crate::support::metrics::intake_batch(1);
                }
                let _ = r.done.send(res);
            }
        }
    }
}
