//! The idempotency port on SQLite. Every transition is one write inside the group commit, so concurrent claims
//! of one key (in this process or another) serialize and exactly one wins.

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord, Status, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{EmbeddedStore, millis};
use crate::idempotency::{Begin, Claim, Idempotency};
use crate::{Result, StorageError};

const COLUMNS: &str = "key, status, event_id, first_seen, last_seen, duplicate_count, lease_until, outcome, expires_at";

fn record(row: &Row<'_>) -> rusqlite::Result<IdempotencyRecord> {
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
fn live(conn: &Connection, key: &str, now: i64) -> Result<Option<IdempotencyRecord>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM idempotency WHERE key = ?1 AND expires_at > ?2"))?
        .query_row(params![key, now], record)
        .optional()?)
}

fn set_status(
    conn: &Connection,
    key: &str,
    status: Status,
    now: i64,
    lease_until: Option<i64>,
    outcome: Option<&str>,
) -> Result<IdempotencyRecord> {
    Ok(conn
        .prepare_cached(&format!(
            "UPDATE idempotency SET status = ?2, last_seen = ?3, lease_until = ?4, outcome = COALESCE(?5, outcome)
             WHERE key = ?1 RETURNING {COLUMNS}"
        ))?
        .query_row(params![key, status.as_str(), now, lease_until, outcome], record)?)
}

fn started(rec: &IdempotencyRecord) -> Begin {
    Begin::Started {
        lease_until: rec.lease_until.unwrap_or(rec.last_seen),
        replay: rec.outcome.is_some(),
        resumed: false,
    }
}

#[async_trait]
impl Idempotency for EmbeddedStore {
    async fn claim(&self, key: &IdempotencyKey, event_id: EventId, horizon: Duration) -> Result<Claim> {
        let key = key.as_str().to_owned();
        let now = self.now();
        self.writer
            .submit(move |conn| {
                if live(conn, &key, now)?.is_some() {
                    let rec = conn
                        .prepare_cached(&format!(
                            "UPDATE idempotency SET duplicate_count = duplicate_count + 1, last_seen = ?2
                             WHERE key = ?1 RETURNING {COLUMNS}"
                        ))?
                        .query_row(params![key, now], record)?;
                    return Ok(Claim::Existing(rec));
                }
                // Absent or expired: a new claim replaces whatever expired row is there.
                let rec = conn
                    .prepare_cached(&format!(
                        "INSERT OR REPLACE INTO idempotency ({COLUMNS})
                         VALUES (?1, 'PENDING', ?2, ?3, ?3, 0, NULL, NULL, ?4) RETURNING {COLUMNS}"
                    ))?
                    .query_row(params![key, event_id.to_string(), now, now + millis(horizon)], record)?;
                Ok(Claim::Claimed(rec))
            })
            .await
    }

    async fn mark_enqueued(&self, key: &IdempotencyKey) -> Result<Status> {
        let key = key.as_str().to_owned();
        let now = self.now();
        self.writer
            .submit(move |conn| {
                let rec = live(conn, &key, now)?.ok_or_else(|| StorageError::NotFound(format!("key {key}")))?;
                if rec.status != Status::Pending {
                    return Ok(rec.status);
                }
                Ok(set_status(conn, &key, Status::Enqueued, now, None, None)?.status)
            })
            .await
    }

    async fn begin(&self, key: &IdempotencyKey, event_id: EventId, lease: Duration) -> Result<Begin> {
        let key = key.as_str().to_owned();
        let now = self.now();
        // Records created here (claim expired or lost) keep the default horizon of the sources: 72 h.
        let horizon = millis(Duration::from_secs(72 * 3600));
        let lease_until = now + millis(lease);
        self.writer
            .submit(move |conn| {
                let Some(rec) = live(conn, &key, now)? else {
                    let rec = conn
                        .prepare_cached(&format!(
                            "INSERT OR REPLACE INTO idempotency ({COLUMNS})
                             VALUES (?1, 'PROCESSING', ?2, ?3, ?3, 0, ?4, NULL, ?5) RETURNING {COLUMNS}"
                        ))?
                        .query_row(params![key, event_id.to_string(), now, lease_until, now + horizon], record)?;
                    return Ok(started(&rec));
                };
                let resumed = rec.status == Status::Processing;
                match rec.status {
                    Status::Done => Ok(Begin::AlreadyDone(rec)),
                    Status::Dead => Ok(Begin::Dead(rec)),
                    Status::Processing if rec.lease_until.is_some_and(|l| l.as_millis() > now) => Ok(Begin::Busy(rec)),
                    Status::Pending | Status::Enqueued | Status::Processing => {
                        let rec = set_status(conn, &key, Status::Processing, now, Some(lease_until), None)?;
                        Ok(match started(&rec) {
                            Begin::Started { lease_until, replay, .. } => {
                                Begin::Started { lease_until, replay, resumed }
                            }
                            other => other,
                        })
                    }
                }
            })
            .await
    }

    async fn transition(&self, key: &IdempotencyKey, to: Status, outcome: Option<&str>) -> Result<IdempotencyRecord> {
        let key = key.as_str().to_owned();
        let outcome = outcome.map(str::to_owned);
        let now = self.now();
        self.writer
            .submit(move |conn| {
                let rec = live(conn, &key, now)?.ok_or_else(|| StorageError::NotFound(format!("key {key}")))?;
                if !rec.status.can_become(to) {
                    return Err(StorageError::IllegalTransition { key, from: rec.status, to });
                }
                set_status(conn, &key, to, now, None, outcome.as_deref())
            })
            .await
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>> {
        let key = key.as_str().to_owned();
        let now = self.now();
        self.read(move |conn| live(conn, &key, now)).await
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
}
