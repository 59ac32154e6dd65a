//! The retry-record port on SQLite.

use async_trait::async_trait;
use eventfleet_schema::{ErrorClass, EventId, IdempotencyKey, RetryRecord, RetryStatus, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::retries::RetryRecords;
use crate::{Result, StorageError};

const COLUMNS: &str = "event_id, idempotency_key, attempts, last_error, error_class, next_attempt_at, status, dead_reason, updated_at, expires_at";

type RawRecord = (String, String, u32, String, String, Option<i64>, String, Option<String>, i64, i64);

fn raw(r: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn decode(r: RawRecord) -> Result<RetryRecord> {
    let (event_id, key, attempts, last_error, class, next, status, dead_reason, updated, expires) = r;
    Ok(RetryRecord {
        event_id: EventId::parse(&event_id).ok_or_else(|| StorageError::Corrupt(format!("event id {event_id}")))?,
        idempotency_key: IdempotencyKey::from_raw(key),
        attempts,
        last_error,
        error_class: ErrorClass::parse(&class).ok_or_else(|| StorageError::Corrupt(format!("error class {class}")))?,
        next_attempt_at: next.map(Timestamp::from_millis),
        status: RetryStatus::parse(&status).ok_or_else(|| StorageError::Corrupt(format!("retry status {status}")))?,
        dead_reason,
        updated_at: Timestamp::from_millis(updated),
        expires_at: Timestamp::from_millis(expires),
    })
}

/// Writes a retry record inside the caller's transaction.
pub(super) fn upsert(conn: &Connection, r: &RetryRecord) -> Result<()> {
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO retries ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?
    .execute(params![
        r.event_id.to_string(),
        r.idempotency_key.as_str(),
        r.attempts,
        r.last_error,
        r.error_class.as_str(),
        r.next_attempt_at.map(Timestamp::as_millis),
        r.status.as_str(),
        r.dead_reason,
        r.updated_at.as_millis(),
        r.expires_at.as_millis()
    ])?;
    Ok(())
}

/// The live retry record of an event, inside the caller's transaction.
pub(super) fn live(conn: &Connection, event_id: &str, now: i64) -> Result<Option<RetryRecord>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM retries WHERE event_id = ?1 AND expires_at > ?2"))?
        .query_row(params![event_id, now], raw)
        .optional()?
        .map(decode)
        .transpose()
}

#[async_trait]
impl RetryRecords for EmbeddedStore {
    async fn upsert(&self, record: &RetryRecord) -> Result<()> {
        let r = record.clone();
        self.writer.submit(move |conn| upsert(conn, &r)).await
    }

    async fn get(&self, event_id: EventId) -> Result<Option<RetryRecord>> {
        let now = self.now();
        self.read(move |conn| {
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM retries WHERE event_id = ?1 AND expires_at > ?2"))?
                .query_row(params![event_id.to_string(), now], raw)
                .optional()?
                .map(decode)
                .transpose()
        })
        .await
    }

    async fn list(&self, status: Option<RetryStatus>, limit: usize) -> Result<Vec<RetryRecord>> {
        let now = self.now();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM retries WHERE expires_at > ?1 AND (?2 IS NULL OR status = ?2)
                 ORDER BY updated_at DESC LIMIT ?3"
            ))?
            .query_map(params![now, status.map(RetryStatus::as_str), limit as i64], raw)?
            .map(|r| decode(r?))
            .collect()
        })
        .await
    }
}
