//! Versioned schema migrations, tracked in `PRAGMA user_version`. Append new steps; never edit a shipped one.

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
    // 3: operators find an event by the sender's own id, the key's text after its last ':' (the expression is
    // `idempotency::SENDER_ID`; an expression index covers the rows written before it too).
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
];

/// The schema version this build writes.
pub(super) const CURRENT: i64 = MIGRATIONS.len() as i64;

/// Brings the file to [`CURRENT`]. Runs under `BEGIN IMMEDIATE`, so processes opening the file at once migrate
/// it once. A file from a newer build is refused rather than misread.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StorageError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT {
        return Err(StorageError::Invalid(format!(
            "store schema version {version} is newer than this build ({CURRENT}); upgrade eventfleet"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))?;
    }
    tx.commit()?;
    Ok(())
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

    /// The sender-id lookup spells the indexed expression alike, so SQLite searches the index instead of
    /// scanning the table.
    #[test]
    fn the_sender_id_lookup_uses_its_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let sql = format!(
            "EXPLAIN QUERY PLAN SELECT key FROM idempotency WHERE {} = ?1 AND expires_at > ?2",
            super::super::idempotency::SENDER_ID
        );
        let plan: Vec<String> =
            conn.prepare(&sql).unwrap().query_map(["m-1", "0"], |r| r.get(3)).unwrap().map(|r| r.unwrap()).collect();
        assert!(plan.iter().any(|p| p.contains("USING INDEX idempotency_sender")), "{plan:?}");
    }

    /// A listing of the event log seeks to its range in the table's key instead of reading from the start.
    #[test]
    fn the_event_logs_range_is_a_range_of_its_key() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", super::super::event_log::RANGE);
        let plan: Vec<String> = conn
            .prepare(&sql)
            .unwrap()
            .query_map(rusqlite::params![0, "", 1], |r| r.get(3))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert!(plan.iter().any(|p| p.contains("SEARCH events USING PRIMARY KEY")), "{plan:?}");
    }

    /// The long poll's idle look probes the heads' partial index, not every queued message.
    #[test]
    fn the_idle_look_uses_the_heads_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let sql = format!("EXPLAIN QUERY PLAN {}", super::super::queue::IDLE_LOOK);
        let plan: Vec<String> =
            conn.prepare(&sql).unwrap().query_map([0], |r| r.get(3)).unwrap().map(|r| r.unwrap()).collect();
        assert!(plan.iter().any(|p| p.contains("INDEX messages_heads")), "{plan:?}");
    }
}
