//! Versioned schema migrations, tracked in `PRAGMA user_version`. Append new steps; never edit a shipped one.

use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::StorageError;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: the queue, its dedup window, and the four tables of docs/architecture.md ("Crates and ports").
    r#"
    CREATE TABLE messages (
        seq               INTEGER PRIMARY KEY AUTOINCREMENT,
        queue             TEXT    NOT NULL,              -- 'main' or 'dlq'
        message_id        TEXT    NOT NULL UNIQUE,
        group_id          TEXT    NOT NULL,
        dedup_id          TEXT    NOT NULL,
        head              INTEGER NOT NULL,              -- 1: oldest message of its group on the main queue
        body              TEXT    NOT NULL,              -- the envelope, JSON
        attributes        TEXT    NOT NULL,              -- JSON object
        event_id          TEXT    NOT NULL,
        source            TEXT    NOT NULL,
        kind              TEXT    NOT NULL,
        sent_at           INTEGER NOT NULL,
        visible_at        INTEGER NOT NULL,
        receive_count     INTEGER NOT NULL DEFAULT 0,
        receipt           TEXT,
        dead_reason       TEXT,
        dead_at           INTEGER
    );
    CREATE INDEX messages_heads ON messages (queue, seq) WHERE head = 1;
    CREATE INDEX messages_group ON messages (queue, group_id, seq);
    CREATE TABLE dedup (
        queue       TEXT    NOT NULL,
        dedup_id    TEXT    NOT NULL,
        message_id  TEXT    NOT NULL,
        expires_at  INTEGER NOT NULL,
        PRIMARY KEY (queue, dedup_id)
    ) WITHOUT ROWID;
    CREATE TABLE idempotency (
        key              TEXT    PRIMARY KEY,
        status           TEXT    NOT NULL,
        event_id         TEXT    NOT NULL,
        first_seen       INTEGER NOT NULL,
        last_seen        INTEGER NOT NULL,
        duplicate_count  INTEGER NOT NULL,
        lease_until      INTEGER,
        outcome          TEXT,
        expires_at       INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_event ON idempotency (event_id);
    CREATE TABLE audit (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id    TEXT    NOT NULL,
        at          INTEGER NOT NULL,
        step        TEXT    NOT NULL,
        actor       TEXT    NOT NULL,
        detail      TEXT    NOT NULL,
        expires_at  INTEGER NOT NULL
    );
    CREATE INDEX audit_event ON audit (event_id, id);
    CREATE INDEX audit_at ON audit (at);
    CREATE TABLE retries (
        event_id          TEXT    PRIMARY KEY,
        idempotency_key   TEXT    NOT NULL,
        attempts          INTEGER NOT NULL,
        last_error        TEXT    NOT NULL,
        error_class       TEXT    NOT NULL,
        next_attempt_at   INTEGER,
        status            TEXT    NOT NULL,
        dead_reason       TEXT,
        updated_at        INTEGER NOT NULL,
        expires_at        INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE webhooks (
        id                TEXT    PRIMARY KEY,
        name              TEXT    NOT NULL,
        channel           TEXT    NOT NULL,
        kind              TEXT    NOT NULL,
        active            INTEGER NOT NULL,
        secret            TEXT,
        invocation_count  INTEGER NOT NULL,
        created_by        TEXT    NOT NULL,
        created_at        INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: a hook's filter of GitHub deliveries (JSON of `HookFilter`; NULL posts everything).
    r#"
    ALTER TABLE webhooks ADD COLUMN filter TEXT;
    "#,
    // 3: operators find an event by the sender's own id, the key's text after its last ':' (an expression index
    // covers the rows written before it too; migration 8 replaces it by the table's key).
    r#"
    CREATE INDEX idempotency_sender ON idempotency (substr(key, length(rtrim(key, replace(key, ':', ''))) + 1));
    "#,
    // 4: alarm threads and channels' posting states (`alarm_threads`), versioned JSON documents.
    r#"
    CREATE TABLE alarm_threads (
        alarm_arn   TEXT    PRIMARY KEY,                 -- an AlarmArn, or 'channel#<channel>'
        version     INTEGER NOT NULL,
        record      TEXT    NOT NULL,                    -- JSON of AlarmThread or ChannelState
        updated_at  INTEGER NOT NULL,
        expires_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 5: a hook's group key (a JSON pointer into its payloads).
    r#"
    ALTER TABLE webhooks ADD COLUMN group_key TEXT;
    "#,
    // 6: a hook's choice of a message per GitHub delivery instead of living messages.
    r#"
    ALTER TABLE webhooks ADD COLUMN per_delivery INTEGER NOT NULL DEFAULT 0;
    "#,
    // 7: the event log: every accepted envelope, kept for the retention window after it is done. Keyed by
    // receipt time so a time range is a range of the key and appends go to the b-tree's right edge; the event id
    // index serves lookups (UUIDv7: appended at the right edge too). Outcomes are read from the trail.
    r#"
    CREATE TABLE events (
        received_at  INTEGER NOT NULL,
        event_id     TEXT    NOT NULL,
        source       TEXT    NOT NULL,
        kind         TEXT    NOT NULL,
        hook         TEXT,
        group_id     TEXT    NOT NULL,
        envelope     TEXT    NOT NULL,                   -- JSON of the Envelope
        PRIMARY KEY (received_at, event_id)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX events_id ON events (event_id);
    "#,
    // 8: fewer pages written an event (docs/benchmarks.md, "Pages an event"). The event log becomes a rowid
    // table: in a WITHOUT ROWID table a row over about 1 KB (a GitHub delivery, an SNS message) spills into an
    // overflow page of its own, one more page written an event and twice the file. The idempotency table leads
    // its key with the sender's id (`idempotency::SENDER_OF_KEY`), so the sender-id lookup is a range of
    // the primary key and migration 3's expression index, a second random insert on every accept, goes.
    r#"
    CREATE TABLE events_v8 (
        received_at  INTEGER NOT NULL,
        event_id     TEXT    NOT NULL,
        source       TEXT    NOT NULL,
        kind         TEXT    NOT NULL,
        hook         TEXT,
        group_id     TEXT    NOT NULL,
        envelope     TEXT    NOT NULL                    -- JSON of the Envelope
    );
    INSERT INTO events_v8 (received_at, event_id, source, kind, hook, group_id, envelope)
        SELECT received_at, event_id, source, kind, hook, group_id, envelope FROM events ORDER BY received_at, event_id;
    DROP TABLE events;
    ALTER TABLE events_v8 RENAME TO events;
    CREATE INDEX events_at ON events (received_at, event_id);
    CREATE UNIQUE INDEX events_id ON events (event_id);
    CREATE TABLE idempotency_v8 (
        sender           TEXT    NOT NULL,               -- the key's text after its last ':'
        key              TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        event_id         TEXT    NOT NULL,
        first_seen       INTEGER NOT NULL,
        last_seen        INTEGER NOT NULL,
        duplicate_count  INTEGER NOT NULL,
        lease_until      INTEGER,
        outcome          TEXT,
        expires_at       INTEGER NOT NULL,
        PRIMARY KEY (sender, key)
    ) WITHOUT ROWID;
    INSERT INTO idempotency_v8
        SELECT substr(key, length(rtrim(key, replace(key, ':', ''))) + 1), key, status, event_id, first_seen,
               last_seen, duplicate_count, lease_until, outcome, expires_at
        FROM idempotency;
    DROP TABLE idempotency;
    ALTER TABLE idempotency_v8 RENAME TO idempotency;
    CREATE INDEX idempotency_event ON idempotency (event_id);
    "#,
    // 9: a message's envelope apart from its row (docs/benchmarks.md, "Handler slots held by the handler only;
    // envelopes apart from the queue's rows"). A row is rewritten by every step (received, its visibility renewed,
    // the next head promoted) and SQLite rewrites a whole record to change one column: with the envelope (about
    // 1 KB for a hook payload) a page held three rows, and each step dirtied a page of its own. The envelope is
    // written once and deleted with its row (the trigger). A row queued before keeps its envelope in its own
    // column, renamed so that a process of an older build still running fails on the queue's statements rather
    // than read rows written since as empty (and dead-letter them).
    r#"
    ALTER TABLE messages RENAME COLUMN body TO legacy_body;  -- '' in rows written since migration 9
    CREATE TABLE message_bodies (
        seq   INTEGER PRIMARY KEY,                       -- the seq of its row in messages
        body  TEXT    NOT NULL                           -- the envelope, JSON
    );
    CREATE TRIGGER messages_body_gone AFTER DELETE ON messages
    BEGIN
        DELETE FROM message_bodies WHERE seq = old.seq;
    END;
    "#,
    // 10: idempotency records in claim order (docs/benchmarks.md, "Idempotency records in claim order"). Keyed by
    // (sender, key), a record sat wherever its sender's id sorts, and most senders' ids are random (UUIDs, a body's
    // digest): its claim, its start and its success each rewrote a page of their own. In a rowid table a record is
    // written where it was claimed, next to the records claimed with it, which are started and finished about
    // together; only the key's index entry, written once, lands at random.
    r#"
    CREATE TABLE idempotency_v10 (
        sender           TEXT    NOT NULL,               -- the key's text after its last ':'
        key              TEXT    NOT NULL,
        status           TEXT    NOT NULL,
        event_id         TEXT    NOT NULL,
        first_seen       INTEGER NOT NULL,
        last_seen        INTEGER NOT NULL,
        duplicate_count  INTEGER NOT NULL,
        lease_until      INTEGER,
        outcome          TEXT,
        expires_at       INTEGER NOT NULL
    );
    INSERT INTO idempotency_v10
        SELECT sender, key, status, event_id, first_seen, last_seen, duplicate_count, lease_until, outcome, expires_at
        FROM idempotency ORDER BY first_seen;
    DROP TABLE idempotency;
    ALTER TABLE idempotency_v10 RENAME TO idempotency;
    CREATE UNIQUE INDEX idempotency_key ON idempotency (sender, key);
    CREATE INDEX idempotency_event ON idempotency (event_id);
    "#,
];

/// The schema version this build writes.
pub(super) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// How long an opening process waits for another one's migration: migration 8 rewrites two tables, about 30 s
/// for half a million rows each.
const MIGRATION_WAIT: Duration = Duration::from_secs(30 * 60);

/// Brings the file to [`CURRENT`]. Runs under `BEGIN IMMEDIATE`, so processes opening the file at once migrate
/// it once: the others wait for the lock (beyond the busy handler's few seconds: a migration may take minutes),
/// then find the file current. A file from a newer build is refused rather than misread.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let version = |conn: &Connection| -> Result<i64, StorageError> {
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > CURRENT {
            return Err(StorageError::Invalid(format!(
                "store schema version {version} is newer than this build ({CURRENT}); upgrade eventfleet"
            )));
        }
        Ok(version)
    };
    // A current file needs no lock: a process opening it while another writes (or migrates) never waits here.
    if version(conn)? == CURRENT {
        return Ok(());
    }
    // A rewrite sorts a whole table (migration 10 by claim time): on disk, as SQLite does by default, not in the
    // memory the store's connections otherwise keep temporary data in (`connect`), which would hold the table.
    let temp_store: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA temp_store = FILE")?;
    let migrated = migrate_locked(conn, version);
    conn.execute_batch(&format!("PRAGMA temp_store = {temp_store}"))?;
    migrated
}

fn migrate_locked(
    conn: &mut Connection,
    version: impl Fn(&Connection) -> Result<i64, StorageError>,
) -> Result<(), StorageError> {
    let deadline = Instant::now() + MIGRATION_WAIT;
    loop {
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                tracing::warn!("waiting for the store's write lock: another process is writing or migrating it");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let migrated = version(conn).and_then(|from| {
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            tracing::info!(version = i + 1, "migrating the store's schema");
            conn.execute_batch(sql)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
        }
        Ok(from)
    });
    match migrated {
        Ok(from) => {
            conn.execute_batch("COMMIT")?;
            if from > 0 {
                // A rewrite of whole tables grew the WAL to their size; give the disk back now rather than keep a
                // file that large for the life of the process (a checkpoint busy with readers just leaves it).
                let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            }
            Ok(())
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_file() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        migrate(&mut conn).unwrap();
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(v, CURRENT);
        conn.execute_batch(&format!("PRAGMA user_version = {}", CURRENT + 1)).unwrap();
        assert!(matches!(migrate(&mut conn), Err(StorageError::Invalid(_))));
    }

    /// An in-memory store as a build of schema `version` left it.
    fn at_version(version: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..version] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(&format!("PRAGMA user_version = {version}")).unwrap();
        conn
    }

    /// The plan of `sql` (its `detail` lines) on a fresh store, planned as the store's connections plan.
    fn plan(sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        let mut conn = Connection::open_in_memory().unwrap();
        super::super::plan_once(&conn).unwrap();
        migrate(&mut conn).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {sql}");
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map(params, |r| r.get::<_, String>(3)).unwrap().map(|r| r.unwrap()).collect()
    }

    /// A key's record and a sender id's records are found by the key's index (the sender's id, then the key), not
    /// by scanning the table.
    #[test]
    fn a_key_and_a_sender_id_are_found_by_the_key_s_index() {
        let by_key = plan(
            &format!(
                "SELECT status FROM idempotency WHERE {} AND expires_at > ?2",
                super::super::idempotency::where_key(3)
            ),
            ["slack:T1:Ev1", "0", "Ev1"],
        );
        assert!(by_key.iter().any(|p| p.contains("USING INDEX idempotency_key (sender=? AND key=?)")), "{by_key:?}");
        let by_sender = plan("SELECT status FROM idempotency WHERE sender = ?1 AND expires_at > ?2", ["Ev1", "0"]);
        assert!(by_sender.iter().any(|p| p.contains("USING INDEX idempotency_key (sender=?)")), "{by_sender:?}");
    }

    /// A store at version 7 keeps every record and logged event through migration 8; each record's sender id is
    /// the text after its key's last ':' (the whole key when it has none), as `IdempotencyKey::sender_id` says.
    #[test]
    fn migration_8_keeps_the_records_and_the_event_log() {
        let mut conn = at_version(7);
        let keys = ["slack:T1:Ev1", "hook:hk_a:deploy:42", "plain"];
        for (i, key) in keys.iter().enumerate() {
            conn.execute(
                "INSERT INTO idempotency (key, status, event_id, first_seen, last_seen, duplicate_count, expires_at)
                 VALUES (?1, 'DONE', ?2, 1, 1, 0, 99)",
                rusqlite::params![key, format!("e{i}")],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO events (received_at, event_id, source, kind, hook, group_id, envelope)
                 VALUES (?1, ?2, 'hook', 'hook.payload', NULL, 'g', '{}')",
                rusqlite::params![10 - i as i64, format!("e{i}")],
            )
            .unwrap();
        }
        migrate(&mut conn).unwrap();
        let senders: Vec<(String, String)> = conn
            .prepare("SELECT key, sender FROM idempotency ORDER BY key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let mut expected: Vec<(String, String)> = keys
            .iter()
            .map(|k| (k.to_string(), eventfleet_schema::IdempotencyKey::from_raw(k.to_string()).sender_id().to_owned()))
            .collect();
        expected.sort();
        assert_eq!(senders, expected);
        let ids: Vec<&str> = expected.iter().map(|(_, sender)| sender.as_str()).collect();
        assert_eq!(ids, ["42", "plain", "Ev1"]);
        let logged: Vec<String> = conn
            .prepare(super::super::event_log::RANGE)
            .unwrap()
            .query_map(rusqlite::params![0, "", 100], |r| r.get(1))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(logged, ["e2", "e1", "e0"], "oldest first");
        // The SQL spelling of a sender id agrees with the one the rows were migrated with.
        let again: String = conn
            .query_row(
                &format!(
                    "SELECT {} FROM idempotency WHERE key = 'hook:hk_a:deploy:42'",
                    super::super::idempotency::SENDER_OF_COLUMN
                ),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(again, "42");
    }

    /// A listing of the event log seeks to its range in the `events_at` index instead of reading from the start.
    #[test]
    fn the_event_logs_range_is_a_range_of_its_index() {
        let plan = plan(super::super::event_log::RANGE, rusqlite::params![0, "", 1]);
        assert!(plan.iter().any(|p| p.contains("SEARCH events USING INDEX events_at")), "{plan:?}");
    }

    /// A receive reads its heads by the heads' partial index and each envelope by its row's seq; so does the look
    /// behind a head, by the group index.
    #[test]
    fn a_receive_reads_heads_by_their_index_and_envelopes_by_seq() {
        let heads = plan(super::super::queue::HEADS, rusqlite::params![0, 10]);
        assert!(heads.iter().any(|p| p.contains("INDEX messages_heads")), "{heads:?}");
        assert!(heads.iter().any(|p| p.contains("SEARCH b USING INTEGER PRIMARY KEY")), "{heads:?}");
        let followers = plan(super::super::queue::FOLLOWERS, rusqlite::params!["g", 0, 10]);
        assert!(followers.iter().any(|p| p.contains("INDEX messages_group")), "{followers:?}");
        assert!(followers.iter().any(|p| p.contains("SEARCH b USING INTEGER PRIMARY KEY")), "{followers:?}");
    }

    /// A store at version 8 keeps every queued and dead-lettered message through migration 9, each read from its
    /// own row; a statement of the build before fails on it rather than read a row written since as empty; a row
    /// deleted takes its envelope apart with it.
    #[test]
    fn migration_9_keeps_the_queued_envelopes_and_fails_the_older_builds_statements() {
        let mut conn = at_version(8);
        let insert = |conn: &Connection, queue: &str, id: &str, column: &str| {
            conn.execute(
                &format!(
                    "INSERT INTO messages (queue, message_id, group_id, dedup_id, head, {column}, attributes, event_id,
                                           source, kind, sent_at, visible_at)
                     VALUES (?1, ?2, 'g', ?2, ?1 = 'main', ?3, '{{}}', ?2, 'hook', 'hook.payload', 0, 0)"
                ),
                rusqlite::params![queue, id, format!("envelope of {id}")],
            )
        };
        for (queue, id) in [("main", "m1"), ("dlq", "d1")] {
            insert(&conn, queue, id, "body").unwrap();
        }
        migrate(&mut conn).unwrap();
        let err = insert(&conn, "main", "old", "body").unwrap_err().to_string();
        assert!(err.contains("body"), "the build before's insert fails: {err}");
        insert(&conn, "main", "m2", "legacy_body").unwrap();
        conn.execute(
            "INSERT INTO message_bodies (seq, body) VALUES (last_insert_rowid(), 'envelope of m2, apart')",
            [],
        )
        .unwrap();
        let rows = |conn: &Connection| -> Vec<(String, String)> {
            conn.prepare(&format!(
                "SELECT m.message_id, {} FROM {} ORDER BY m.seq",
                super::super::queue::BODY,
                super::super::queue::WITH_BODIES
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
        };
        let pairs = |rows: &[(&str, &str)]| -> Vec<(String, String)> {
            rows.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
        };
        assert_eq!(
            rows(&conn),
            pairs(&[("m1", "envelope of m1"), ("d1", "envelope of d1"), ("m2", "envelope of m2, apart")])
        );
        conn.execute("DELETE FROM messages WHERE message_id = 'm2'", []).unwrap();
        let bodies: i64 = conn.query_row("SELECT COUNT(*) FROM message_bodies", [], |r| r.get(0)).unwrap();
        assert_eq!(bodies, 0, "the deleted row's envelope went with it");
        assert_eq!(rows(&conn), pairs(&[("m1", "envelope of m1"), ("d1", "envelope of d1")]));
    }

    /// A store at version 9 keeps every record through migration 10, laid out in claim order; a key is still one
    /// record (a second claim of it replaces the first), and the build before's statements still run on the table.
    #[test]
    fn migration_10_keeps_the_records_in_claim_order() {
        let mut conn = at_version(9);
        for (sender, first_seen) in [("ffff", 1), ("0000", 3), ("8888", 2)] {
            conn.execute(
                "INSERT INTO idempotency (sender, key, status, event_id, first_seen, last_seen, duplicate_count,
                                          expires_at)
                 VALUES (?1, 'github:hk_a:' || ?1, 'DONE', 'e-' || ?1, ?2, ?2, 0, 99)",
                rusqlite::params![sender, first_seen],
            )
            .unwrap();
        }
        conn.execute_batch("PRAGMA temp_store = MEMORY").unwrap();
        migrate(&mut conn).unwrap();
        let temp_store: i64 = conn.query_row("PRAGMA temp_store", [], |r| r.get(0)).unwrap();
        assert_eq!(temp_store, 2, "the connection's own setting again after the migration's sort on disk");
        let senders = |conn: &Connection| -> Vec<String> {
            conn.prepare("SELECT sender FROM idempotency ORDER BY rowid")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(|r| r.unwrap())
                .collect()
        };
        assert_eq!(senders(&conn), ["ffff", "8888", "0000"], "claim order, not the senders' order");
        // The build before writes a claim as `INSERT OR REPLACE` by the whole key, its sender's id in SQL: one
        // record a key still.
        conn.execute(
            &format!(
                "INSERT OR REPLACE INTO idempotency (sender, key, status, event_id, first_seen, last_seen,
                                                     duplicate_count, expires_at)
                 VALUES ({}, ?1, 'ENQUEUED', 'e-again', 4, 4, 0, 99)",
                super::super::idempotency::SENDER_OF_COLUMN.replace("key", "?1")
            ),
            ["github:hk_a:8888"],
        )
        .unwrap();
        assert_eq!(senders(&conn), ["ffff", "0000", "8888"], "the new claim at the end");
        let (count, event): (i64, String) = conn
            .query_row(
                "SELECT COUNT(*), MAX(event_id) FROM idempotency WHERE sender = '8888' AND key = 'github:hk_a:8888'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((count, event.as_str()), (1, "e-again"));
    }

    /// The long poll's idle look probes the heads' partial index, not every queued message.
    #[test]
    fn the_idle_look_uses_the_heads_index() {
        let plan = plan(super::super::queue::IDLE_LOOK, [0]);
        assert!(plan.iter().any(|p| p.contains("INDEX messages_heads")), "{plan:?}");
    }
}
