//! The idempotency table on SQLite. The protocol's jobs ([`super::protocol`]) write it inside their own
//! transactions; this port reads it and reopens a record for a replay.

use async_trait::async_trait;
use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord, Status, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::Result;
use crate::idempotency::{Idempotency, SENDER_ID_MATCHES};

pub(super) const COLUMNS: &str =
    "key, status, event_id, first_seen, last_seen, duplicate_count, lease_until, outcome, expires_at";

/// The key's text after its last `:` ([`IdempotencyKey::sender_id`]) in SQL, of the key in `$key`: `rtrim` by
/// every character but `:` leaves the key up to its last `:`. Migration 8 wrote the `sender` column of the rows
/// before it with this; statements bind [`sender_of`] instead (below).
#[cfg(test)]
macro_rules! sender_of {
    ($key:literal) => {
        concat!("substr(", $key, ", length(rtrim(", $key, ", replace(", $key, ", ':', ''))) + 1)")
    };
}

/// The sender's id of the `key` column, as migration 8 wrote it for the rows before it.
#[cfg(test)]
pub(super) const SENDER_OF_COLUMN: &str = sender_of!("key");

/// The sender's id of a key, the first column of the table's key (migration 8; an index since 10), bound by the
/// caller: in SQL (`rtrim` by every character of the key) it took a tenth of the writer thread under load
/// (docs/benchmarks.md, "The sender's id bound, not computed in SQL").
pub(super) fn sender_of(key: &str) -> &str {
    IdempotencyKey::sender_id_of(key)
}

/// The row of the key bound as `?1`, found by the whole key index: its [`sender_of`] is bound as `?{n}`.
pub(super) fn where_key(n: usize) -> String {
    format!("sender = ?{n} AND key = ?1")
}

/// Writes the record of the key bound as `?1` (its [`sender_of`] bound as `?{n}`), replacing the row there: the
/// rest of [`COLUMNS`] are bound from `?2` in order, or given as literals.
pub(super) fn insert_or_replace(values_after_key: &str, n: usize) -> String {
    format!("INSERT OR REPLACE INTO idempotency (sender, {COLUMNS}) VALUES (?{n}, ?1, {values_after_key})")
}

pub(super) fn record(row: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
    let status: String = row.get(1)?;
    let event_id: String = row.get(2)?;
    let bad = |what: &str, text: &str| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, format!("bad {what} {text:?}").into())
    };
    Ok(IdempotencyRecord {
        key: IdempotencyKey::from_raw(row.get::<_, String>(0)?),
        status: Status::parse(&status).ok_or_else(|| bad("status", &status))?,
        event_id: EventId::parse(&event_id).ok_or_else(|| bad("event id", &event_id))?,
        first_seen: Timestamp::from_millis(row.get(3)?),
        last_seen: Timestamp::from_millis(row.get(4)?),
        duplicate_count: row.get(5)?,
        lease_until: row.get::<_, Option<i64>>(6)?.map(Timestamp::from_millis),
        outcome: row.get(7)?,
        expires_at: Timestamp::from_millis(row.get(8)?),
    })
}

/// The live (unexpired) record of a key.
pub(super) fn live(conn: &Connection, key: &str, now: i64) -> Result<Option<IdempotencyRecord>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM idempotency WHERE {} AND expires_at > ?2", where_key(3)))?
        .query_row(params![key, now, sender_of(key)], record)
        .optional()?)
}

#[async_trait]
impl Idempotency for EmbeddedStore {
    async fn reopen(&self, key: &IdempotencyKey, outcome: &str) -> Result<Option<IdempotencyRecord>> {
        let (key, outcome, now) = (key.as_str().to_owned(), outcome.to_owned(), self.now());
        self.writer
            .submit(move |conn| {
                conn.prepare_cached(&format!(
                    "UPDATE idempotency SET status = 'ENQUEUED', outcome = ?2, last_seen = ?3, lease_until = NULL
                     WHERE {} AND expires_at > ?3 AND status IN ('DONE', 'DEAD', 'PROCESSING')",
                    where_key(4)
                ))?
                .execute(params![key, outcome, now, sender_of(&key)])?;
                live(conn, &key, now)
            })
            .await
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>> {
        let key = key.as_str().to_owned();
        let now = self.now();
        self.read(move |conn| live(conn, &key, now)).await
    }

    async fn get_many(&self, keys: &[IdempotencyKey]) -> Result<Vec<Option<IdempotencyRecord>>> {
        let keys: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        let now = self.now();
        // One read job: every key's lookup on the same connection, by the key index.
        self.read(move |conn| keys.iter().map(|k| live(conn, k, now)).collect()).await
    }

    async fn find_by_event(&self, event_id: EventId) -> Result<Option<IdempotencyRecord>> {
        let now = self.now();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM idempotency WHERE event_id = ?1 AND expires_at > ?2"))?
                .query_row(params![event_id.to_string(), now], record)
                .optional()?)
        })
        .await
    }

    async fn find_by_sender_id(&self, sender_id: &str) -> Result<Vec<IdempotencyRecord>> {
        let (sender_id, now) = (sender_id.to_owned(), self.now());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM idempotency WHERE sender = ?1 AND expires_at > ?2
                 ORDER BY first_seen DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![sender_id, now, SENDER_ID_MATCHES as i64], record)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sender's id bound by the statements is the one migration 8 wrote into the rows before it, so those rows
    /// are still found by their keys: colons, none, several, empty parts, text beyond ASCII. (A key with a NUL would
    /// differ, SQLite's text functions stopping there: the senders' ids, Slack's, GitHub's and AWS's, carry none.)
    #[test]
    fn the_bound_sender_id_is_the_one_the_migration_wrote() {
        let conn = Connection::open_in_memory().unwrap();
        let keys = [
            "slack:T1:Ev1",
            "sns:arn:aws:sns:eu-west-1:123456789012:alarms:5f1c-44",
            "hook:hk_a:",
            "no-colon-at-all",
            ":leading",
            "hook:hk_a:clé-é:ünïcødé✓",
            "",
        ];
        for key in keys {
            let in_sql: String = conn
                .query_row(&format!("SELECT {}", SENDER_OF_COLUMN.replace("key", "?1")), [key], |r| r.get(0))
                .unwrap();
            assert_eq!(sender_of(key), in_sql, "key {key:?}");
        }
    }
}
