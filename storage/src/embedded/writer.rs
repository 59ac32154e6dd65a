//! The group-commit writer: one thread per process owns the write connection; every write request waiting when
//! it wakes goes into one transaction, and the answers are sent only after the commit is durable.
//!
//! **Savepoints only when a request fails.** One request's failure must not undo the others, which a savepoint per
//! request gives; but a savepoint copies every page the request touches into its statement journal, and the hot
//! pages (the tails of the queue, the trail and the event log) are touched by every request: about a tenth of the
//! ingress benchmark's throughput. So a batch first runs without them; if a request fails after changing rows, the
//! transaction is rolled back and the batch runs again, each request in its own savepoint (one that failed having
//! changed nothing, such as a compare-and-set that lost, leaves nothing to undo). A request is therefore a closure
//! that can run twice (`Fn`): its first run left nothing behind.
//!
//! **Pipelined sync.** With [`Durability::Full`] the connection commits with `synchronous=NORMAL` (the commit
//! is written to the WAL, not synced) and hands the batch to a flusher thread, which syncs the WAL file and only
//! then answers every batch that committed before its sync began; meanwhile the writer runs the next batch.
//! A commit in WAL mode is durable once the WAL is synced past it (recovery replays the WAL's valid commit frames),
//! so an answered request survives power loss as with `synchronous=FULL`, and the writer never waits for the disk.
//! While a sync is under way the next batch commits once it holds [`COMMIT_WHILE_SYNCING`] jobs, and otherwise
//! when the sync is done: its answers would wait for the next sync either way, and fewer, larger commits write the
//! pages every job touches fewer times.
//!
//! **Checkpoints off the writer.** Copying the WAL's pages into the database (and syncing it) took about a fifth
//! of the writer thread's time when the writer ran it after a commit (SQLite's auto-checkpoint). A checkpointer
//! thread on a connection of its own runs a `PASSIVE` checkpoint every [`CHECKPOINT_EVERY`] jobs of commits that
//! changed something, beside the writer. SQLite starts the WAL over only after a checkpoint copied all of it, which
//! one running while commits land behind it never does: at [`super::WAL_BACKSTOP_PAGES`] the writer's own
//! auto-checkpoint copies the rest (the frames since the checkpointer's last run), and the checkpointer sits a
//! request out to leave it the lock.
//! docs/architecture.md ("The embedded backend") has the argument and the crash points.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use tokio::sync::{Notify, oneshot};

use super::{Durability, SyncHook, SyncPoint};
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
    work: F,
    wakes: bool,
    result: Option<Result<R, StorageError>>,
    answer: oneshot::Sender<Result<R, StorageError>>,
}

impl<R, F> Job for TypedJob<R, F>
where
    R: Send,
    F: Fn(&Connection) -> Result<R, StorageError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        // A second run (the batch again with savepoints) replaces the first's result: that run was rolled back.
        let result = (self.work)(conn);
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

/// A committed batch: each job with why it failed, if it did, waiting to be answered.
type Committed = Vec<(Box<dyn Job>, Option<StorageError>)>;

/// A committed batch on its way to the flusher, and whether it changed anything (an idle long poll's look
/// changes nothing: it needs no sync of its own).
struct ToSync {
    done: Committed,
    changed: bool,
}

/// Where the writer sends committed batches.
enum Answers {
    /// Answered at once ([`Durability::Normal`]: the commit is not synced at all).
    Now,
    /// Answered by the flusher once a sync of the WAL covers them.
    AfterSync(mpsc::Sender<ToSync>),
}

/// What the writer thread receives.
enum Msg {
    /// A write request.
    Job(Box<dyn Job>),
    /// The flusher is done with this many batches (synced, or answered without a sync: they changed nothing).
    Synced(usize),
    /// The flusher stopped (it panicked): nothing can be answered as durable any more.
    FlusherStopped,
    /// The handle was dropped: commit what is queued and stop.
    Stop,
}

/// Handle to the writer thread. Dropping it stops the thread once queued jobs are done (and the flusher once
/// their answers are sent).
pub(super) struct Writer {
    jobs: mpsc::Sender<Msg>,
    /// Writes that wake long polls, submitted and not yet committed and announced.
    waking: Arc<AtomicUsize>,
}

/// How the writer tells long polls of a commit that may have made a message receivable.
struct Wakes {
    committed: Arc<Notify>,
    pending: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer on `conn` (the database at `db`), with a flusher when `durability` is full. `hook`
    /// (tests) runs at the start of every sync with the writer held between batches.
    pub(super) fn spawn(
        conn: Connection,
        checkpoints: Checkpointer,
        db: &Path,
        max_batch: usize,
        committed: Arc<Notify>,
        durability: Durability,
        hook: Option<SyncHook>,
    ) -> Result<Self, StorageError> {
        let (jobs, rx) = mpsc::channel::<Msg>();
        // Held by the writer for each batch and by the flusher while the hook runs: the hook sees the files
        // between commits.
        let between_batches = Arc::new(Mutex::new(()));
        let answers = match durability {
            Durability::Normal => Answers::Now,
            Durability::Full => {
                let (to_flusher, batches) = mpsc::channel::<ToSync>();
                let flusher = Flusher {
                    wal: wal_path(db),
                    file: None,
                    hook,
                    between_batches: between_batches.clone(),
                    writer: jobs.clone(),
                };
                std::thread::Builder::new()
                    .name("eventfleet-sqlite-flusher".into())
                    .spawn(move || flusher.run(batches))
                    .map_err(|e| StorageError::unavailable_from("spawn flusher thread", e))?;
                Answers::AfterSync(to_flusher)
            }
        };
        let waking = Arc::new(AtomicUsize::new(0));
        let wakes = Wakes { committed, pending: waking.clone() };
        let (ask, asked) = mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("eventfleet-sqlite-checkpointer".into())
            .spawn(move || checkpointer(checkpoints, asked))
            .map_err(|e| StorageError::unavailable_from("spawn checkpointer thread", e))?;
        std::thread::Builder::new()
            .name("eventfleet-sqlite-writer".into())
            .spawn(move || run(conn, rx, max_batch.max(1), wakes, answers, between_batches, ask))
            .map_err(|e| StorageError::unavailable_from("spawn writer thread", e))?;
        Ok(Self { jobs, waking })
    }

    /// Whether a write that wakes long polls is submitted and not yet committed: while none is, what a read sees
    /// is every such write submitted so far.
    pub(super) fn waking_pending(&self) -> bool {
        self.waking.load(Ordering::Acquire) > 0
    }

    /// Runs `work` inside the next group commit and answers once that commit is durable. Its commit wakes no
    /// long poll: for writes that cannot make a message receivable.
    pub(super) async fn submit<R, F>(&self, work: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        self.submit_job(work, false).await
    }

    /// [`Writer::submit`] for a write that may make a message receivable: its commit wakes this process's long
    /// polls.
    pub(super) async fn submit_waking<R, F>(&self, work: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        self.submit_job(work, true).await
    }

    async fn submit_job<R, F>(&self, work: F, wakes: bool) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: Fn(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        let (answer, rx) = oneshot::channel();
        let job = TypedJob { work, wakes, result: None, answer };
        if wakes {
            self.waking.fetch_add(1, Ordering::AcqRel);
        }
        if self.jobs.send(Msg::Job(Box::new(job))).is_err() {
            if wakes {
                self.waking.fetch_sub(1, Ordering::AcqRel);
            }
            return Err(StorageError::unavailable("writer thread stopped"));
        }
        rx.await.map_err(|_| StorageError::unavailable("writer thread stopped"))?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // The flusher holds a sender too, so the channel never closes by itself while the writer runs.
        let _ = self.jobs.send(Msg::Stop);
    }
}

/// While a batch is being synced, the next one commits once it holds this many jobs (or the batch cap, if lower);
/// until then it waits for the sync. Its jobs could not be answered much sooner (the sync under way does not cover
/// a commit made now, and the next one starts only after it: waiting costs them the commit's own time, which the
/// next sync would follow anyway), and one commit of many jobs writes each page they share once (the tails of the
/// queue, the trail and the event log, the indexes' right edges): under moderate load most commits held a job or
/// two and rewrote every such page for each. With this many requests waiting the batch commits at once, so a
/// writer with more in flight keeps commits and syncs overlapping.
pub(super) const COMMIT_WHILE_SYNCING: usize = 64;

fn run(
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    max_batch: usize,
    wakes: Wakes,
    answers: Answers,
    between_batches: Arc<Mutex<()>>,
    checkpoints: mpsc::SyncSender<()>,
) {
    let mut next = Next::new(max_batch);
    let mut since_checkpoint = 0usize;
    let mut checkpointer_gone = false;
    while let Ok(msg) = rx.recv() {
        next.take(msg);
        while next.batch.len() < max_batch {
            match rx.try_recv() {
                Ok(msg) => next.take(msg),
                Err(_) => break,
            }
        }
        if !next.commits_now() {
            if next.stopping {
                break;
            }
            continue;
        }
        if next.flusher_stopped {
            // Committed, its requests could never be answered as durable: they fail without running, rather than
            // commit what their senders are told failed (and commit it again at every retry).
            let waking = next.batch.iter().filter(|job| job.wakes_receivers()).count();
            let failed = fail_all(&mut next.batch, &StorageError::unavailable("the flusher thread stopped"));
            wakes.pending.fetch_sub(waking, Ordering::AcqRel);
            deliver(failed, None);
            if next.stopping {
                break;
            }
            continue;
        }
        let waking = next.batch.iter().filter(|job| job.wakes_receivers()).count();
        let before = conn.total_changes();
        let done = {
            let _held = between_batches.lock().unwrap_or_else(|p| p.into_inner());
            commit_batch(&conn, &mut next.batch)
        };
        let changed = conn.total_changes() != before;
        if changed {
            since_checkpoint += done.len();
            if since_checkpoint >= CHECKPOINT_EVERY {
                since_checkpoint = 0;
                // Full: a request is waiting already. Gone: the checkpointer stopped (said once), and the writer's
                // own checkpoint at the backstop copies the WAL from now on.
                if let Err(mpsc::TrySendError::Disconnected(())) = checkpoints.try_send(())
                    && !checkpointer_gone
                {
                    checkpointer_gone = true;
                    tracing::warn!("the checkpointer thread stopped; the writer checkpoints at its backstop instead");
                }
            }
        }
        // Readers may see the commit now; a receive is itself a write, answered only once its commit (and so
        // every commit before it) is synced.
        if waking > 0 {
            wakes.committed.notify_waiters();
            wakes.pending.fetch_sub(waking, Ordering::AcqRel);
        }
        match &answers {
            Answers::Now => deliver(done, None),
            Answers::AfterSync(flusher) => match flusher.send(ToSync { done, changed }) {
                Ok(()) => next.syncing += 1,
                Err(mpsc::SendError(batch)) => {
                    deliver(batch.done, Some(&StorageError::unavailable("the flusher thread stopped")))
                }
            },
        }
        if next.stopping {
            break;
        }
    }
}

/// The writer's next batch, and what decides when it commits.
struct Next {
    batch: Vec<Box<dyn Job>>,
    /// The jobs at which it commits while a sync is under way.
    commit_at: usize,
    /// Batches handed to the flusher and not yet synced.
    syncing: usize,
    /// The handle was dropped.
    stopping: bool,
    /// The flusher stopped: batches fail without running.
    flusher_stopped: bool,
}

impl Next {
    fn new(max_batch: usize) -> Self {
        Self {
            batch: Vec::with_capacity(max_batch),
            commit_at: COMMIT_WHILE_SYNCING.min(max_batch),
            syncing: 0,
            stopping: false,
            flusher_stopped: false,
        }
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Job(job) => self.batch.push(job),
            Msg::Synced(n) => self.syncing = self.syncing.saturating_sub(n),
            Msg::FlusherStopped => self.flusher_stopped = true,
            Msg::Stop => self.stopping = true,
        }
    }

    /// Whether the batch commits now rather than after the sync under way.
    fn commits_now(&self) -> bool {
        !self.batch.is_empty()
            && (self.syncing == 0 || self.batch.len() >= self.commit_at || self.stopping || self.flusher_stopped)
    }
}

/// Jobs of commits that changed something between the checkpointer's runs: a few hundred pages a run (a job
/// writes a few pages, fewer when many share a commit), about SQLite's default of a checkpoint every 1,000 pages,
/// whatever the size of the commits; no timer (an idle process does not wake).
const CHECKPOINT_EVERY: usize = 128;

/// Copies the WAL's committed pages into the database, off the writer thread, each time the writer asks (a
/// request made while one runs waits as one). A `PASSIVE` checkpoint neither waits for the writer nor holds it up;
/// another process's checkpoint in progress makes it a no-op. Once the WAL holds [`super::WAL_BACKSTOP_PAGES`] it
/// sits the next request out: the checkpoint lock stays free for the writer's own auto-checkpoint, which copies the
/// frames since this one's last run (in one process with no commit behind it), so the next commit starts the WAL
/// over (`PASSIVE` runs back to back under heavy load could keep it from the lock for good; a `RESTART` at every
/// request would hold every writer for its wait at every request while a long read lasts). Ends with the writer.
///
/// At `cap` pages the WAL did not start over by itself: other processes' commits landed behind every checkpoint
/// (or a long read held an old snapshot). The checkpointer then runs a `RESTART` checkpoint: it takes the write
/// lock, copies the rest, syncs the WAL and the database, waits for the readers and starts the WAL over. Its
/// connection's busy handler gives up after about a tenth of a second, during which every writer waits; after one
/// that gave up (a long read, or writers that kept the lock), this process's next waits [`RESTART_BACKOFF`], so
/// a long read holds writers back for at most about a tenth of a second in every 0.35 s per process while it
/// lasts.
fn checkpointer(Checkpointer { conn, cap }: Checkpointer, asked: mpsc::Receiver<()>) {
    let cap = i64::from(cap);
    let mut sit_out = false;
    let mut restart_after: Option<std::time::Instant> = None;
    while asked.recv().is_ok() {
        if std::mem::take(&mut sit_out) {
            continue;
        }
        // The WAL's length in frames, as the checkpoint found it.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get::<_, i64>(1)) {
            Ok(frames) if frames >= cap && restart_after.is_none_or(|at| std::time::Instant::now() >= at) => {
                let restarted = restart(&conn, frames);
                restart_after = (!restarted).then(|| std::time::Instant::now() + RESTART_BACKOFF);
            }
            Ok(frames) => sit_out = frames >= i64::from(super::WAL_BACKSTOP_PAGES),
            // The writer's own checkpoint copies what this one could not.
            Err(e) => tracing::warn!(error = %e, "the checkpointer's checkpoint failed"),
        }
    }
}

/// How long after a `RESTART` checkpoint that gave up the checkpointer tries the next.
const RESTART_BACKOFF: std::time::Duration = std::time::Duration::from_millis(250);

/// The checkpointer's connection, and the WAL's length at which it starts the WAL over itself.
pub(super) struct Checkpointer {
    /// Its own connection to the database.
    pub(super) conn: Connection,
    /// WAL pages at which it runs a `RESTART` checkpoint.
    pub(super) cap: u32,
}

/// Starts over a WAL of `frames` pages that did not start over by itself; whether it did. The database file is
/// synced by the checkpoint itself: never by a descriptor of ours, whose close would drop every POSIX lock this
/// process's SQLite connections hold on the file (and let another process delete the live WAL).
fn restart(conn: &Connection, frames: i64) -> bool {
    match conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |row| row.get::<_, i64>(0)) {
        Ok(0) => {
            tracing::debug!(frames, "the WAL was started over by a RESTART checkpoint");
            true
        }
        Ok(_) => {
            tracing::debug!(frames, "a RESTART checkpoint found the write lock or a reader busy; tried again later");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "the checkpointer's RESTART checkpoint failed");
            false
        }
    }
}

/// Answers every job of a batch (`failed`: the sync that should have covered them failed).
fn deliver(done: Committed, failed: Option<&StorageError>) {
    for (job, error) in done {
        job.deliver(failed.or(error.as_ref()));
    }
}

/// Runs one batch in one transaction; returns each job with its error, to be answered once the commit is durable.
/// The jobs run without savepoints first; when one fails after changing rows (or SQLite ended the transaction),
/// that transaction is rolled back and they run again, each in its own savepoint (a lone job needs none: rolling
/// back its transaction undoes only it).
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) -> Committed {
    // A transaction left open by a rollback that failed would fail every later `BEGIN`.
    if !conn.is_autocommit()
        && let Err(e) = rollback(conn)
    {
        return fail_all(batch, &e);
    }
    if let Some(done) = commit_without_savepoints(conn, batch) {
        return done;
    }
    commit_with_savepoints(conn, batch)
}

/// The batch in one transaction, no savepoints; `None` when it was rolled back to run again with savepoints: a job
/// failed among others after changing rows, or the transaction ended under a job.
fn commit_without_savepoints(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) -> Option<Committed> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return Some(fail_all(batch, &StorageError::from(e)));
    }
    for job in batch.iter_mut() {
        let before = conn.total_changes();
        let ok = job.run(conn);
        // SQLite rolls the whole transaction back by itself on some errors (a full disk, an I/O error), also under
        // a job that caught the error and went on: what ran after that committed statement by statement, so no
        // later job may run here.
        let ended = conn.is_autocommit();
        // A job that failed having changed no row (a compare-and-set that lost, a stale receipt) left nothing to
        // undo: a failed statement undoes itself, and only completed ones count as changes.
        if !ended && (ok || conn.total_changes() == before) {
            continue;
        }
        if !ended && let Err(e) = rollback(conn) {
            return Some(fail_all(batch, &e));
        }
        // Alone and failed, its own error is its answer: it left nothing. Otherwise the batch runs again.
        return (batch.len() == 1 && !ok && !ended).then(|| batch.drain(..).map(|job| (job, None)).collect());
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StorageError::from(e)
    });
    Some(batch.drain(..).map(|job| (job, commit_error.clone())).collect())
}

/// The batch in one transaction, each job in its own savepoint, so that one that fails leaves nothing behind and
/// the others stand. If SQLite ends the transaction under a job (a full disk), what it held is gone: every job of
/// the batch fails, and none runs after it (outside a transaction, each statement would commit alone).
fn commit_with_savepoints(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) -> Committed {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(batch, &StorageError::from(e));
    }
    let mut own_errors: Vec<Option<StorageError>> = Vec::with_capacity(batch.len());
    for job in batch.iter_mut() {
        if conn.is_autocommit() {
            return fail_all(batch, &transaction_ended());
        }
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
    if conn.is_autocommit() {
        return fail_all(batch, &transaction_ended());
    }
    let commit_error = conn.execute_batch("COMMIT").err().map(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StorageError::from(e)
    });
    batch.drain(..).zip(own_errors).map(|(job, own_error)| (job, commit_error.clone().or(own_error))).collect()
}

/// Every job of the batch, failed with `err`.
fn fail_all(batch: &mut Vec<Box<dyn Job>>, err: &StorageError) -> Committed {
    batch.drain(..).map(|job| (job, Some(err.clone()))).collect()
}

/// SQLite ended the batch's transaction (a full disk): what it held is gone.
fn transaction_ended() -> StorageError {
    let err = StorageError::unavailable("SQLite ended the batch's transaction under a request");
    tracing::error!(error = %err, "the batch's requests fail");
    err
}

/// Rolls the open transaction back; an error if it is still open after (the connection cannot write until it is not).
fn rollback(conn: &Connection) -> Result<(), StorageError> {
    let result = conn.execute_batch("ROLLBACK");
    if conn.is_autocommit() {
        return Ok(());
    }
    let e = result.err().map_or_else(|| "still in a transaction".to_owned(), |e| e.to_string());
    tracing::error!(error = %e, "the writer could not roll a batch back; its requests fail");
    Err(StorageError::unavailable(format!("SQLite rollback failed: {e}")))
}

/// The WAL file of the database at `db` (SQLite's name for it).
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The flusher: syncs the WAL and answers the batches the sync covers.
struct Flusher {
    wal: PathBuf,
    /// The WAL file as opened, reopened when SQLite made a new one (the last connection of a process that closed
    /// removes it; the next write creates it again).
    file: Option<File>,
    hook: Option<SyncHook>,
    between_batches: Arc<Mutex<()>>,
    /// Told after each sync how many batches it covered: the next batch waits for it (see
    /// [`COMMIT_WHILE_SYNCING`]).
    writer: mpsc::Sender<Msg>,
}

impl Drop for Flusher {
    /// Also when the thread panics: no batch waits for a sync that will never come, and the writer fails every
    /// request from then on.
    fn drop(&mut self) {
        let _ = self.writer.send(Msg::FlusherStopped);
    }
}

impl Flusher {
    fn run(mut self, batches: mpsc::Receiver<ToSync>) {
        while let Ok(first) = batches.recv() {
            // Every batch received here committed before this sync begins: the sync covers them all.
            let mut covered = vec![first];
            covered.extend(batches.try_iter());
            // Batches that changed nothing are answered without a sync: every batch before them was synced and
            // answered first (this thread takes them in order), so what they read is on disk.
            // The writer hears first that these are done: a batch committed from now on is not covered by this
            // sync whenever it is answered, and a sender answered next may be waiting to send again.
            let count = covered.len();
            if !covered.iter().any(|batch| batch.changed) {
                let _ = self.writer.send(Msg::Synced(count));
                for batch in covered {
                    deliver(batch.done, None);
                }
                continue;
            }
            if let Some(hook) = &self.hook {
                let _held = self.between_batches.lock().unwrap_or_else(|p| p.into_inner());
                (hook.0)(SyncPoint::Start);
            }
            let synced = self.sync();
            match (&synced, &self.hook) {
                (Err(e), _) => {
                    tracing::error!(error = %e, "syncing the WAL failed: the requests it covered are answered with an error");
                }
                (Ok(()), Some(hook)) => (hook.0)(SyncPoint::Done),
                (Ok(()), None) => {}
            }
            let _ = self.writer.send(Msg::Synced(count));
            for batch in covered {
                deliver(batch.done, synced.as_ref().err());
            }
        }
    }

    /// Syncs the WAL file's data (its size included) to disk; the first time a WAL file is seen, its directory
    /// entry too (SQLite syncs neither with `synchronous=NORMAL`).
    fn sync(&mut self) -> Result<(), StorageError> {
        let io =
            |what: &str, e: std::io::Error| StorageError::unavailable_from(format!("{what} {}", self.wal.display()), e);
        let current = match std::fs::metadata(&self.wal) {
            Ok(current) => current,
            // No WAL file: SQLite checkpointed it into the database and removed it, syncing the database first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("stat", e)),
        };
        let same = match &self.file {
            Some(file) => {
                use std::os::unix::fs::MetadataExt;
                file.metadata().map(|open| open.ino() == current.ino() && open.dev() == current.dev()).unwrap_or(false)
            }
            None => false,
        };
        if !same {
            let file = File::open(&self.wal).map_err(|e| io("open", e))?;
            if let Some(dir) = self.wal.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("sync the directory of", e))?;
            }
            self.file = Some(file);
        }
        match &self.file {
            Some(file) => file.sync_data().map_err(|e| io("sync", e)),
            None => Ok(()),
        }
    }
}

/// Runs a statement through the statement cache (a batch run again with savepoints runs two per request:
/// parsing them each time showed in profiles).
fn run_sql(conn: &Connection, sql: &str) -> Result<(), StorageError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    type Answer = Result<(), StorageError>;
    type TestJob = Box<dyn Fn(&Connection) -> Answer + Send>;

    /// A writer on a fresh file with one table, `t (x INTEGER NOT NULL)`.
    fn writer(dir: &Path) -> Writer {
        writer_with_hook(dir, 64, None)
    }

    /// [`writer`] with batches of at most `max_batch` and a hook at every sync.
    fn writer_with_hook(dir: &Path, max_batch: usize, hook: Option<SyncHook>) -> Writer {
        let db = dir.join("fleet.db");
        let conn = super::super::connect(&db).unwrap();
        conn.execute_batch("CREATE TABLE t (x INTEGER NOT NULL)").unwrap();
        let checkpoints = Checkpointer { conn: super::super::connect(&db).unwrap(), cap: 16_000 };
        Writer::spawn(conn, checkpoints, &db, max_batch, Arc::new(Notify::new()), Durability::Full, hook).unwrap()
    }

    fn rows(dir: &Path) -> Vec<i64> {
        let conn = Connection::open(dir.join("fleet.db")).unwrap();
        let mut stmt = conn.prepare("SELECT x FROM t ORDER BY x").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
    }

    async fn wait_until(done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "timed out");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Runs `jobs` as one batch, in order, and returns their answers: the writer is held inside a job of its own
    /// while each is submitted and polled once (which queues it), then let go.
    async fn one_batch(writer: &Writer, jobs: Vec<TestJob>) -> Vec<Answer> {
        let (release, gate) = mpsc::channel::<()>();
        let entered = Arc::new(AtomicBool::new(false));
        let e = entered.clone();
        let mut held = Box::pin(writer.submit(move |_| {
            e.store(true, Ordering::Release);
            // Returns once the sender is dropped.
            let _ = gate.recv();
            Ok(())
        }));
        let mut answers: Vec<Pin<Box<dyn Future<Output = Answer> + Send + '_>>> = Vec::new();
        std::future::poll_fn(|cx| {
            assert!(held.as_mut().poll(cx).is_pending());
            std::task::Poll::Ready(())
        })
        .await;
        wait_until(|| entered.load(Ordering::Acquire)).await;
        for job in jobs {
            let mut answer = Box::pin(writer.submit_waking(job));
            std::future::poll_fn(|cx| {
                assert!(answer.as_mut().poll(cx).is_pending(), "answered while the writer is held");
                std::task::Poll::Ready(())
            })
            .await;
            answers.push(answer);
        }
        drop(release);
        held.await.unwrap();
        let mut out = Vec::new();
        for answer in answers {
            out.push(answer.await);
        }
        out
    }

    /// `INSERT x` (failing after its write when `fail`), counting its runs.
    fn insert(x: i64, fail: bool, runs: &Arc<AtomicUsize>) -> TestJob {
        let runs = runs.clone();
        Box::new(move |conn| {
            runs.fetch_add(1, Ordering::AcqRel);
            conn.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
            if fail { Err(StorageError::Conflict(format!("job {x} failed after its write"))) } else { Ok(()) }
        })
    }

    /// A job counted in `runs` that runs `first` the first time and `again` after.
    fn twice(runs: &Arc<AtomicUsize>, first: fn(&Connection) -> Answer, again: fn(&Connection) -> Answer) -> TestJob {
        let runs = runs.clone();
        Box::new(move |conn| if runs.fetch_add(1, Ordering::AcqRel) == 0 { first(conn) } else { again(conn) })
    }

    /// Three run counters, and what they read after.
    fn counters() -> [Arc<AtomicUsize>; 3] {
        Default::default()
    }

    fn counts(runs: &[Arc<AtomicUsize>; 3]) -> [usize; 3] {
        runs.each_ref().map(|r| r.load(Ordering::Acquire))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_fails_leaves_nothing_and_the_others_of_its_batch_stand() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = counters();
        let jobs = vec![insert(1, false, &runs[0]), insert(2, true, &runs[1]), insert(3, false, &runs[2])];
        let answers = one_batch(&writer, jobs).await;
        assert!(answers[0].is_ok() && answers[2].is_ok());
        assert!(matches!(answers[1], Err(StorageError::Conflict(_))));
        assert_eq!(rows(dir.path()), vec![1, 3], "the failed job's write is gone, the others' stand");
        // The batch ran without savepoints, was rolled back at the failure, and ran again with them.
        assert_eq!(counts(&runs), [2, 2, 1], "the jobs up to the failure ran twice, the one after it once");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_fails_before_changing_anything_costs_its_batch_no_second_run() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = counters();
        // As a compare-and-set that lost: an update that matched no row, then the error.
        let lost = twice(&runs[1], cas_lost, cas_lost);
        let answers = one_batch(&writer, vec![insert(1, false, &runs[0]), lost, insert(3, false, &runs[2])]).await;
        assert!(matches!(answers[1], Err(StorageError::Conflict(_))));
        assert_eq!(rows(dir.path()), vec![1, 3]);
        assert_eq!(counts(&runs), [1, 1, 1], "nothing to undo: the batch went on");
    }

    fn cas_lost(conn: &Connection) -> Answer {
        conn.execute("UPDATE t SET x = 20 WHERE x = 2", [])?;
        Err(StorageError::Conflict("changed since".into()))
    }

    /// A statement that fails (here on its second row) undoes itself and counts no change: the batch goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_statement_that_fails_part_way_leaves_nothing_and_costs_no_second_run() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = counters();
        let part_way = |conn: &Connection| {
            conn.execute("INSERT INTO t (x) VALUES (5), (NULL)", []).map(|_| ()).map_err(Into::into)
        };
        let failing = twice(&runs[1], part_way, part_way);
        let answers = one_batch(&writer, vec![insert(1, false, &runs[0]), failing, insert(3, false, &runs[2])]).await;
        assert!(matches!(answers[1], Err(StorageError::Conflict(_))), "a constraint: {:?}", answers[1]);
        assert_eq!(rows(dir.path()), vec![1, 3], "the statement's first row went with it");
        assert_eq!(counts(&runs), [1, 1, 1]);
    }

    /// SQLite ends the transaction by itself on some errors (a full disk), also under a job that caught the error
    /// and answered `Ok`: no later job of the batch may then run outside a transaction.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_that_ends_under_a_job_runs_the_batch_again() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = counters();
        // Its first run ends the transaction, as SQLite does on a full disk, and carries on.
        let ending = twice(&runs[1], end_transaction, |conn| {
            Ok(conn.execute("INSERT INTO t (x) VALUES (2)", []).map(|_| ())?)
        });
        let answers = one_batch(&writer, vec![insert(1, false, &runs[0]), ending, insert(3, false, &runs[2])]).await;
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        assert_eq!(rows(dir.path()), vec![1, 2, 3], "each job committed once, in the batch run again");
        assert_eq!(counts(&runs), [2, 2, 1], "the job after the end never ran outside a transaction");
    }

    fn end_transaction(conn: &Connection) -> Answer {
        conn.execute_batch("ROLLBACK")?;
        Ok(())
    }

    /// SQLite ends the transaction again in the batch's second run: every request fails, and none after it runs.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transaction_that_ends_in_the_second_run_fails_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = counters();
        // The first run fails after a write (the batch runs again); the second ends the transaction.
        let failing = |conn: &Connection| -> Answer {
            conn.execute("INSERT INTO t (x) VALUES (2)", [])?;
            Err(StorageError::Conflict("first run".into()))
        };
        let ending = twice(&runs[1], failing, end_transaction);
        let answers = one_batch(&writer, vec![insert(1, false, &runs[0]), ending, insert(3, false, &runs[2])]).await;
        assert!(answers.iter().all(|a| matches!(a, Err(StorageError::Unavailable { .. }))), "{answers:?}");
        assert_eq!(rows(dir.path()), Vec::<i64>::new(), "nothing committed statement by statement");
        // The first run stopped at the failure; the second at the end.
        assert_eq!(counts(&runs), [2, 2, 0], "the job after the end never ran");
        // The writer goes on.
        writer.submit_waking(insert(4, false, &runs[0])).await.unwrap();
        assert_eq!(rows(dir.path()), vec![4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_without_a_failure_runs_each_job_once() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = counters();
        let jobs = vec![insert(1, false, &runs[0]), insert(2, false, &runs[1]), insert(3, false, &runs[2])];
        assert!(one_batch(&writer, jobs).await.iter().all(Result::is_ok));
        assert_eq!(rows(dir.path()), vec![1, 2, 3]);
        assert_eq!(counts(&runs), [1, 1, 1], "no job ran twice");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_job_that_fails_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let writer = writer(dir.path());
        let runs = Arc::default();
        assert!(writer.submit_waking(insert(7, true, &runs)).await.is_err());
        assert_eq!(rows(dir.path()), Vec::<i64>::new());
        assert_eq!(runs.load(Ordering::Acquire), 1, "alone, its rollback is all it needs");
        writer.submit_waking(insert(8, false, &runs)).await.unwrap();
        assert_eq!(rows(dir.path()), vec![8], "the writer goes on after it");
    }

    /// Jobs that arrive while a sync is under way wait for it and commit together, and once there are
    /// [`COMMIT_WHILE_SYNCING`] of them they commit without waiting (one commit: the WAL grows by what one commit
    /// of the table's page writes).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_that_arrive_during_a_sync_commit_together() {
        let dir = tempfile::tempdir().unwrap();
        // The first sync is held once done, before its batch is answered, until `release` is dropped.
        let (release, held) = mpsc::channel::<()>();
        let held = Mutex::new(held);
        let holding = Arc::new(AtomicBool::new(false));
        let h = holding.clone();
        let hook = SyncHook(Arc::new(move |point| {
            if point == SyncPoint::Done && !h.swap(true, Ordering::AcqRel) {
                let _ = held.lock().unwrap().recv();
            }
        }));
        // Batches far larger than the threshold: the commit below comes from the threshold, not a full batch.
        let writer = Arc::new(writer_with_hook(dir.path(), 1024, Some(hook)));
        let wal = wal_path(&dir.path().join("fleet.db"));
        let wal_len = || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        let runs = Arc::default();

        let empty = wal_len();
        let first = tokio::spawn({
            let (writer, job) = (writer.clone(), insert(0, false, &runs));
            async move { writer.submit(job).await }
        });
        wait_until(|| holding.load(Ordering::Acquire)).await;
        let one_commit = wal_len() - empty;
        assert!(one_commit > 0);

        let answers: Vec<_> = (1..=COMMIT_WHILE_SYNCING as i64)
            .map(|x| {
                let (writer, job) = (writer.clone(), insert(x, false, &runs));
                tokio::spawn(async move { writer.submit(job).await })
            })
            .collect();
        wait_until(|| rows(dir.path()).len() == 1 + COMMIT_WHILE_SYNCING).await;
        assert_eq!(wal_len() - empty, 2 * one_commit, "the jobs behind the held sync committed as one");
        assert!(!first.is_finished(), "answered before its sync was done");

        drop(release);
        first.await.unwrap().unwrap();
        for answer in answers {
            answer.await.unwrap().unwrap();
        }
        assert_eq!(runs.load(Ordering::Acquire), 1 + COMMIT_WHILE_SYNCING);
    }

    /// The rule behind it: a batch commits at once when no sync is under way, when it is large enough, or when the
    /// writer stops; otherwise it waits for the sync.
    #[test]
    fn a_batch_waits_for_the_sync_under_way_unless_it_is_large() {
        let runs = Arc::default();
        let next = |jobs: usize, syncing: usize, stopping: bool| Next {
            batch: (0..jobs).map(|x| Box::new(test_job(insert(x as i64, false, &runs))) as Box<dyn Job>).collect(),
            syncing,
            stopping,
            ..Next::new(1024)
        };
        assert!(next(1, 0, false).commits_now());
        assert!(!next(1, 1, false).commits_now());
        assert!(!next(COMMIT_WHILE_SYNCING - 1, 2, false).commits_now());
        assert!(next(COMMIT_WHILE_SYNCING, 1, false).commits_now());
        assert!(next(1, 1, true).commits_now());
        assert!(!next(0, 0, false).commits_now());
        assert!(!next(0, 0, true).commits_now());
        assert!(Next { flusher_stopped: true, ..next(1, 1, false) }.commits_now(), "it fails at once");
        // A batch cap below the threshold is the threshold.
        assert_eq!((Next::new(1024).commit_at, Next::new(8).commit_at), (COMMIT_WHILE_SYNCING, 8));
    }

    /// A queued job of `work`, its answer dropped.
    fn test_job(work: TestJob) -> TypedJob<(), TestJob> {
        TypedJob { work, wakes: false, result: None, answer: oneshot::channel().0 }
    }

    /// A flusher that stops (here its hook panics) leaves no batch waiting for its sync: the next request is
    /// answered with an error instead of never.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flusher_that_stops_leaves_no_batch_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let hook = SyncHook(Arc::new(|point| {
            if point == SyncPoint::Done {
                panic!("the flusher stops");
            }
        }));
        let writer = writer_with_hook(dir.path(), 1024, Some(hook));
        let runs = Arc::default();
        assert!(writer.submit(insert(1, false, &runs)).await.is_err(), "its sync never finished");
        let next = tokio::time::timeout(Duration::from_secs(10), writer.submit(insert(2, false, &runs))).await;
        assert!(matches!(next, Ok(Err(StorageError::Unavailable { .. }))), "{next:?}");
        // Failed without running: nothing its sender was told failed is committed.
        assert_eq!(runs.load(Ordering::Acquire), 1);
        assert_eq!(rows(dir.path()), vec![1]);
    }
}
