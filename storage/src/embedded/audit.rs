//! The audit port on SQLite.

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, EventId, Step, Timestamp};
use std::time::Duration;

use rusqlite::{Connection, Row, params};

use super::{EmbeddedStore, from_json, millis, to_json};
use crate::audit::{AuditLog, AuditQuery};
use crate::{Result, StorageError};

pub(super) type RawEntry = (String, i64, String, String, String);

pub(super) fn raw(row: &Row<'_>) -> rusqlite::Result<RawEntry> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

pub(super) fn decode((event_id, at, step, actor, detail): RawEntry) -> Result<AuditEntry> {
    Ok(AuditEntry {
        event_id: EventId::parse(&event_id).ok_or_else(|| StorageError::Corrupt(format!("event id {event_id}")))?,
        at: Timestamp::from_millis(at),
        step: Step::parse(&step).ok_or_else(|| StorageError::Corrupt(format!("audit step {step}")))?,
        actor,
        detail: from_json(&detail)?,
    })
}

/// Appends one line inside the caller's transaction (the protocol steps write theirs with the step's other rows).
pub(super) fn insert(conn: &Connection, e: &AuditEntry, ttl: Duration) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit (event_id, at, step, actor, detail, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.event_id.to_string(),
        e.at.as_millis(),
        e.step.as_str(),
        e.actor,
        to_json(&e.detail)?,
        e.at.as_millis() + millis(ttl)
    ])?;
    Ok(())
}

#[async_trait]
impl AuditLog for EmbeddedStore {
    async fn append(&self, entries: Vec<AuditEntry>) -> Result<()> {
        let ttl = self.options.audit_ttl;
        self.writer.submit(move |conn| entries.iter().try_for_each(|e| insert(conn, e, ttl))).await
    }

    async fn history(&self, event_id: EventId) -> Result<Vec<AuditEntry>> {
        let now = self.now();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT event_id, at, step, actor, detail FROM audit
                 WHERE event_id = ?1 AND expires_at > ?2 ORDER BY at, id",
            )?
            .query_map(params![event_id.to_string(), now], raw)?
            .map(|r| decode(r?))
            .collect()
        })
        .await
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let now = self.now();
        let q = query.clone();
        self.read(move |conn| {
            conn.prepare_cached(
                "SELECT event_id, at, step, actor, detail FROM audit
                 WHERE expires_at > ?1 AND (?2 IS NULL OR step = ?2) AND (?3 IS NULL OR at >= ?3)
                   AND (?4 IS NULL OR at < ?4)
                 ORDER BY at, id LIMIT ?5",
            )?
            .query_map(
                params![
                    now,
                    q.step.map(Step::as_str),
                    q.since.map(Timestamp::as_millis),
                    q.until.map(Timestamp::as_millis),
                    q.limit.map_or(-1, |l| l as i64)
                ],
                raw,
            )?
            .map(|r| decode(r?))
            .collect()
        })
        .await
    }
}
