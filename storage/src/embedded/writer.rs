//! The group-commit writer: one thread per process owns the write connection; every write request waiting when
//! it wakes goes into one transaction, each in its own savepoint so one request's failure does not undo the
//! others, and the answers are sent only after the commit is durable.

use std::sync::Arc;
use std::sync::mpsc;

use rusqlite::Connection;
use tokio::sync::{Notify, oneshot};

use crate::StorageError;

/// One write request.
trait Job: Send {
    /// Runs inside the open transaction; returns whether it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the waiter, given why the batch failed if it did.
    fn deliver(self: Box<Self>, batch_error: Option<&StorageError>);
    /// Whether its commit may have made a message receivable (a send, a delete that promotes a group's next
    /// message, a release): only such commits wake the long polls of this process. A receive's own commit must
    /// not, or an idle poller wakes itself forever.
    fn wakes_receivers(&self) -> bool;
}

struct TypedJob<R, F> {
    work: Option<F>,
    wakes: bool,
    result: Option<Result<R, StorageError>>,
    answer: oneshot::Sender<Result<R, StorageError>>,
}

impl<R, F> Job for TypedJob<R, F>
where
    R: Send,
    F: FnOnce(&Connection) -> Result<R, StorageError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let result = match self.work.take() {
            Some(work) => work(conn),
            None => Err(StorageError::unavailable("write job ran twice")),
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn deliver(self: Box<Self>, batch_error: Option<&StorageError>) {
        let answer = match (batch_error, self.result) {
            (Some(e), _) => Err(e.clone()),
            (None, Some(result)) => result,
            (None, None) => Err(StorageError::unavailable("write job was not run")),
        };
        // The caller may have gone away (request cancelled); the write stands either way.
        let _ = self.answer.send(answer);
    }

    fn wakes_receivers(&self) -> bool {
        self.wakes
    }
}

/// Handle to the writer thread. Dropping it stops the thread once queued jobs are done.
pub(super) struct Writer {
    jobs: mpsc::Sender<Box<dyn Job>>,
}

impl Writer {
    pub(super) fn spawn(conn: Connection, max_batch: usize, committed: Arc<Notify>) -> Result<Self, StorageError> {
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>();
        std::thread::Builder::new()
            .name("eventfleet-sqlite-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), committed))
            .map_err(|e| StorageError::unavailable_from("spawn writer thread", e))?;
        Ok(Self { jobs })
    }

    /// Runs `work` inside the next group commit and answers once that commit is durable. Its commit wakes no
    /// long poll: for writes that cannot make a message receivable.
    pub(super) async fn submit<R, F>(&self, work: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        self.submit_job(work, false).await
    }

    /// [`Writer::submit`] for a write that may make a message receivable: its commit wakes this process's long
    /// polls.
    pub(super) async fn submit_waking<R, F>(&self, work: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        self.submit_job(work, true).await
    }

    async fn submit_job<R, F>(&self, work: F, wakes: bool) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        let (answer, rx) = oneshot::channel();
        let job = TypedJob { work: Some(work), wakes, result: None, answer };
        self.jobs.send(Box::new(job)).map_err(|_| StorageError::unavailable("writer thread stopped"))?;
        rx.await.map_err(|_| StorageError::unavailable("writer thread stopped"))?
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Box<dyn Job>>, max_batch: usize, committed: Arc<Notify>) {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(max_batch);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let wake = batch.iter().any(|job| job.wakes_receivers());
        commit_batch(&conn, &mut batch);
        if wake {
            committed.notify_waiters();
        }
    }
}

/// Runs one batch in one transaction, then answers every job.
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = StorageError::from(e);
        for job in batch.drain(..) {
            job.deliver(Some(&err));
        }
        return;
    }
    let mut own_errors: Vec<Option<StorageError>> = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        if let Err(e) = run_sql(conn, "SAVEPOINT job") {
            own_errors.push(Some(e));
            continue;
        }
        let ok = job.run(conn);
        let closed = if ok {
            run_sql(conn, "RELEASE job")
        } else {
            run_sql(conn, "ROLLBACK TO job").and_then(|()| run_sql(conn, "RELEASE job"))
        };
        own_errors.push(closed.err());
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StorageError::from(e)
    });
    for (job, own_error) in batch.drain(..).zip(own_errors) {
        job.deliver(commit_error.as_ref().or(own_error.as_ref()));
    }
}

/// Runs a statement through the statement cache (savepoint statements run twice per request: parsing them each
/// time showed in profiles).
fn run_sql(conn: &Connection, sql: &str) -> Result<(), StorageError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}
