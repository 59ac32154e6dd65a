//! The embedded backend: every port on one SQLite file in WAL mode.
//!
//! - All writes go through one writer thread per process that **group-commits**: it takes every request
//!   waiting, runs them inside one transaction (again with a savepoint each when one fails after changing rows,
//!   so that it leaves nothing behind) and commits once, so concurrent ingress requests share one sync
//!   ([`writer`]).
//! - Reads use a separate connection; WAL lets them run beside the writer.
//! - Several processes may open the same file: `BEGIN IMMEDIATE` plus a busy timeout serialize their writers,
//!   and long polls fall back to polling every [`EmbeddedOptions::poll_interval`] for messages sent by another
//!   process (in-process sends wake waiters at once).
//! - The FIFO rules of SQS FIFO are kept in SQL ([`queue`]): each group's oldest message is its *head*
//!   (`head = 1`, a partial index), only a visible head can be received, so one message per group is in flight
//!   and order within a group is strict.

mod alarm_threads;
mod audit;
mod dead_letters;
mod event_log;
mod expiry;
mod idempotency;
mod migrations;
mod protocol;
mod queue;
mod retries;
mod webhooks;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, config::DbConfig};
use tokio::sync::Notify;

use crate::{Clock, StorageError, Store, SystemClock};
use writer::Writer;

/// How hard a commit is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A request is answered once its commit is synced to disk: it survives power loss. The default: an
    /// acknowledged event must survive. The sync runs beside the next batch ([`writer`]).
    Full,
    /// Answered once committed, never synced by us (`synchronous=NORMAL`): survives a process crash, may lose the
    /// last commits on power loss.
    Normal,
}

/// Runs at the start of every sync of the WAL, while no batch is being written, and again once the sync is done,
/// before its requests are answered. The power-loss test copies the files at the start and keeps the copy once
/// the sync is done: what a machine that lost power from then on would find.
#[derive(Clone)]
pub struct SyncHook(pub Arc<dyn Fn(SyncPoint) + Send + Sync>);

/// Where a sync is, for a [`SyncHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPoint {
    /// About to sync; the writer is held between batches.
    Start,
    /// Synced; its requests are about to be answered.
    Done,
}

impl std::fmt::Debug for SyncHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncHook")
    }
}

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Receives after which a message moves to the DLQ on its next receive (SQS `maxReceiveCount`).
    pub max_receive_count: u32,
    /// How long a dedup id suppresses resends (SQS: 5 minutes).
    pub dedup_window: Duration,
    /// Audit entries expire after this long.
    pub audit_ttl: Duration,
    /// How often a busy long poll looks for messages sent by other processes (an idle one backs off to 1 s).
    pub poll_interval: Duration,
    /// Most requests in one group commit.
    pub max_batch: usize,
    /// Commit durability.
    pub durability: Durability,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Tests: called at the start of every sync ([`SyncHook`]).
    pub sync_hook: Option<SyncHook>,
    /// How long the event log keeps a done event (`None`: no event log).
    pub retention: Option<Duration>,
    /// WAL pages at which the checkpointer starts the WAL over with a `RESTART` checkpoint, holding every writer
    /// back for up to about a tenth of a second ([`WAL_CAP_PAGES`]; tests set it lower).
    pub wal_cap_pages: u32,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_receive_count: crate::queue::DEFAULT_MAX_RECEIVE_COUNT,
            dedup_window: Duration::from_secs(300),
            audit_ttl: Duration::from_secs(90 * 24 * 3600),
            poll_interval: Duration::from_millis(100),
            max_batch: 1024,
            durability: Durability::Full,
            clock: Arc::new(SystemClock),
            sync_hook: None,
            retention: Some(crate::event_log::DEFAULT_RETENTION),
            wal_cap_pages: WAL_CAP_PAGES,
        }
    }
}

/// The embedded store. Implements every port; [`EmbeddedStore::into_store`] bundles it.
pub struct EmbeddedStore {
    path: PathBuf,
    writer: Writer,
    reader: Arc<Mutex<Connection>>,
    /// The long polls' idle look ([`queue`]), apart from `reader` so that a long read never holds it up.
    poller: Mutex<Connection>,
    /// Woken after every commit so in-process long polls return at once.
    queue_changed: Arc<Notify>,
    /// The interval an idle long poll had reached when it ended, in ms: the next goes on from it.
    idle_poll_ms: AtomicU64,
    options: EmbeddedOptions,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// WAL pages (16 MB) at which the writer's own auto-checkpoint copies what the checkpointer has not, so that the
/// WAL starts over ([`writer`]).
pub(crate) const WAL_BACKSTOP_PAGES: u32 = 4000;

/// WAL pages (64 MB) at which the checkpointer starts the WAL over itself ([`writer`]). With several processes
/// writing the file, a commit of another process can land behind every checkpoint, so the WAL may never start
/// over by itself: max-rate runs with an ingress and worker processes grew it to 0.5 to 1 GB.
pub const WAL_CAP_PAGES: u32 = 16_000;

/// The file name of the store inside a data directory.
pub const DB_FILE: &str = "fleet.db";

impl EmbeddedStore {
    /// Opens (creating and migrating as needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Arc<Self>, StorageError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError::unavailable_from(format!("create {}", dir.display()), e))?;
        }
        let mut write_conn = connect(&path)?;
        migrations::migrate(&mut write_conn)?;
        let read_conn = connect(&path)?;
        let poll_conn = connect(&path)?;
        // The idle look runs on the async thread that asked: it must never wait for a lock.
        poll_conn.busy_handler(None)?;
        let queue_changed = Arc::new(Notify::new());
        // The checkpointer thread copies the WAL into the database ([`writer`]); the writer's own checkpoint
        // is a backstop.
        write_conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        let checkpoint_conn = connect(&path)?;
        // Its `RESTART` at the cap holds every writer back while it waits for their locks: only briefly.
        checkpoint_conn.busy_handler(Some(retry_briefly))?;
        let writer = Writer::spawn(
            write_conn,
            writer::Checkpointer { conn: checkpoint_conn, cap: options.wal_cap_pages },
            &path,
            options.max_batch,
            Arc::clone(&queue_changed),
            options.durability,
            options.sync_hook.clone(),
        )?;
        Ok(Arc::new(Self {
            path,
            writer,
            reader: Arc::new(Mutex::new(read_conn)),
            poller: Mutex::new(poll_conn),
            queue_changed,
            // A store opens idle: its first long poll looks with a read.
            idle_poll_ms: AtomicU64::new(queue::IDLE_POLL.as_millis() as u64),
            options,
        }))
    }

    /// Opens `<dir>/fleet.db`.
    pub fn open_dir(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Arc<Self>, StorageError> {
        Self::open(dir.as_ref().join(DB_FILE), options)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The settings it was opened with.
    pub fn options(&self) -> &EmbeddedOptions {
        &self.options
    }

    /// Every port of this store.
    pub fn into_store(self: Arc<Self>) -> Store {
        let clock = self.options.clock.clone();
        Store::of(self, clock, "embedded")
    }

    /// Runs a read on the read connection, off the async threads.
    async fn read<R, F>(&self, f: F) -> Result<R, StorageError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, StorageError> + Send + 'static,
    {
        let reader = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| StorageError::unavailable("reader connection poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(|e| StorageError::unavailable(format!("read task failed: {e}")))?
    }

    fn now(&self) -> i64 {
        self.options.clock.now().as_millis()
    }
}

fn connect(path: &Path) -> Result<Connection, StorageError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // SQLite's default busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between tries: with an ingress and
    // several workers sharing the file, a writer then idles for milliseconds behind a lock held for microseconds.
    // Retry every 100-500 µs instead, for about five seconds.
    conn.busy_handler(Some(retry_soon))?;
    plan_once(&conn)?;
    // Commits are not synced by SQLite: with `Durability::Full` the writer's flusher syncs the WAL and answers
    // only then ([`writer`]); checkpoints still sync the WAL before and the database after.
    // A write job runs in a savepoint when a batch runs again after a failure, and some jobs take one of their own
    // (a batch's sends, the start of a success's next message); SQLite keeps a savepoint's statement journal in a temporary file by default: a profile
    // under load showed the writer thread in pwrite() for it. In memory it costs no syscall.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA temp_store = MEMORY;",
    )?;
    Ok(conn)
}

/// Statements are planned once per connection and kept.
fn plan_once(conn: &Connection) -> Result<(), StorageError> {
    // Every statement of this module is prepared once per connection; the default cache of 16 is smaller than
    // that set, and re-preparing (parse and plan) dominated the writer's time under load.
    conn.set_prepared_statement_cache_capacity(128);
    // SQLite plans a statement anew at its next step whenever a parameter its plan may have looked at is bound
    // again, whatever the value: since 3.47 that includes a bound `LIMIT`, so the receive's `LIMIT ?` re-prepared
    // its statement at every receive (a tenth of a protocol bench's writer). The query planner stability guarantee
    // turns that off. What it gives up here: a bound `LIMIT` in cost estimates only (the plans of 3.46 and before;
    // every `LIMIT ?` query of this module reads in an index's order but the audit query's, a read), and bound
    // values proving a partial index usable (`messages_heads` is named with literal terms); there is no `LIKE ?`
    // and no `ANALYZE` data.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

/// Tries before a busy writer gives up: about five seconds of 100-500 µs naps (a busy handler is a plain
/// function, so this is a constant rather than an option).
const BUSY_TRIES: u32 = 10_000;

/// The busy handler: a short sleep, growing from 100 to 500 µs, until the try budget is spent.
fn retry_soon(tries: i32) -> bool {
    let tries = u32::try_from(tries).unwrap_or(u32::MAX);
    if tries >= BUSY_TRIES {
        return false;
    }
    std::thread::sleep(Duration::from_micros(100 + 100 * u64::from(tries.min(4))));
    true
}

/// Tries of [`retry_briefly`]: about a tenth of a second.
const BRIEF_TRIES: u32 = 200;

/// The checkpointer's busy handler: [`retry_soon`]'s naps, for about a tenth of a second.
fn retry_briefly(tries: i32) -> bool {
    u32::try_from(tries).is_ok_and(|tries| tries < BRIEF_TRIES) && retry_soon(tries)
}

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match &e {
            rusqlite::Error::SqliteFailure(err, _) if err.code == ErrorCode::ConstraintViolation => {
                StorageError::Conflict(e.to_string())
            }
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => StorageError::Corrupt(e.to_string()),
            // Locked, busy, I/O, full disk, cannot open: the caller can only try again later.
            _ => StorageError::unavailable_from("SQLite", e),
        }
    }
}

/// Decodes a stored JSON column.
fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StorageError> {
    serde_json::from_str(text).map_err(|e| StorageError::Corrupt(e.to_string()))
}

/// Encodes a JSON column.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StorageError> {
    serde_json::to_string(value).map_err(|e| StorageError::Invalid(e.to_string()))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{StatementStatus, params};

    /// A statement with a bound `LIMIT` runs again with other values without being planned again: the receive
    /// takes its heads and their followers this way at every receive.
    #[test]
    fn a_bound_limit_does_not_plan_a_statement_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = connect(&dir.path().join("store.db")).unwrap();
        migrations::migrate(&mut conn).unwrap();
        for (n, limit) in [10, 3, 100, 10].into_iter().enumerate() {
            let now = n as i64;
            let heads =
                conn.prepare_cached(queue::HEADS).unwrap().query_map(params![now, limit], |_| Ok(())).unwrap().count();
            let followers = conn
                .prepare_cached(queue::FOLLOWERS)
                .unwrap()
                .query_map(params!["g", now, limit], |_| Ok(()))
                .unwrap()
                .count();
            assert_eq!((heads, followers), (0, 0));
        }
        for sql in [queue::HEADS, queue::FOLLOWERS] {
            assert_eq!(conn.prepare_cached(sql).unwrap().get_status(StatementStatus::RePrepare), 0, "{sql}");
        }
    }
}
