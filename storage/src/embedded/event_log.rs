//! The event log on SQLite: the `events` table, written by the accept step in its own writer job, read on the
//! read connection; an event's outcome is its trail's deciding line (`audit_event` index, a few rows an event).

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, Envelope, EventId, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::queue::EncodedMessage;
use super::{EmbeddedStore, audit, from_json};
use crate::event_log::{
    self, Cursor, EventLog, EventPage, EventQuery, EventSummary, LoggedEvent, MAX_PAGE, outcome_of,
};
use crate::{Result, StorageError};

/// Rows a listing reads for one page at most: a filter that matches few events returns a short page with a
/// cursor rather than scanning the whole window in one call.
const SCAN_LIMIT: usize = 50_000;

/// The accept's row (inside its writer job). A claim finished under its first event id writes nothing twice.
pub(super) fn insert(conn: &Connection, env: &Envelope, encoded: &EncodedMessage) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO events (received_at, event_id, source, kind, hook, group_id, envelope)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        env.received_at().as_millis(),
        env.event_id().to_string(),
        env.source().name(),
        env.kind().as_str(),
        env.source().hook_id().map(|h| h.as_str().to_owned()),
        encoded.group,
        encoded.body,
    ])?;
    Ok(())
}

/// The line of the event's trail that decides its outcome.
fn deciding_line(conn: &Connection, event_id: &str) -> Result<Option<AuditEntry>> {
    conn.prepare_cached(
        "SELECT event_id, at, step, actor, detail FROM audit
         WHERE event_id = ?1 AND step IN ('succeeded', 'dead_lettered', 'replayed')
         ORDER BY at DESC, id DESC LIMIT 1",
    )?
    .query_row([event_id], audit::raw)
    .optional()?
    .map(audit::decode)
    .transpose()
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("event log: {what}"))
}

impl EmbeddedStore {
    fn retention_ms(&self) -> Option<i64> {
        self.options.retention.map(super::millis)
    }
}

#[async_trait]
impl EventLog for EmbeddedStore {
    fn retention(&self) -> Option<std::time::Duration> {
        self.options.retention
    }

    async fn events(&self, query: &EventQuery) -> Result<EventPage> {
        let Some(retention) = self.options.retention else { return Ok(EventPage::default()) };
        let query = query.clone();
        let limit = query.limit.clamp(1, MAX_PAGE);
        let now = self.options.clock.now();
        self.read(move |conn| {
            let (after_at, after_id) = match &query.after {
                Some(c) => (c.received_at.as_millis(), c.event_id.to_string()),
                None => (i64::MIN, String::new()),
            };
            let mut stmt = conn.prepare_cached(
                "SELECT received_at, event_id, source, kind, hook, group_id FROM events
                 WHERE (received_at, event_id) > (?1, ?2)
                   AND (?3 IS NULL OR received_at >= ?3) AND (?4 IS NULL OR received_at < ?4)
                   AND (?5 IS NULL OR source = ?5) AND (?6 IS NULL OR hook = ?6)
                 ORDER BY received_at, event_id",
            )?;
            let rows = stmt.query_map(
                params![
                    after_at,
                    after_id,
                    query.since.map(Timestamp::as_millis),
                    query.until.map(Timestamp::as_millis),
                    query.source,
                    query.hook
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                    ))
                },
            )?;
            let mut page = EventPage::default();
            for (scanned, row) in rows.enumerate() {
                let (at, id, source, kind, hook, group) = row?;
                let event_id = EventId::parse(&id).ok_or_else(|| corrupt(&format!("event id {id}")))?;
                let cursor = Cursor { received_at: Timestamp::from_millis(at), event_id };
                if scanned >= SCAN_LIMIT {
                    page.next = Some(cursor);
                    break;
                }
                if query.kind.as_deref().is_some_and(|k| !event_log::glob_match(k, &kind)) {
                    continue;
                }
                let (outcome, outcome_detail, finished_at) = outcome_of(deciding_line(conn, &id)?.as_ref());
                if event_log::expired(outcome, finished_at, retention, now)
                    || query.outcome.is_some_and(|o| o != outcome)
                {
                    continue;
                }
                if page.events.len() == limit {
                    // One more matches: there is a next page, from the last one returned.
                    page.next = page.events.last().map(Cursor::from);
                    break;
                }
                page.events.push(EventSummary {
                    event_id,
                    received_at: cursor.received_at,
                    source,
                    kind,
                    hook,
                    group,
                    outcome,
                    outcome_detail,
                    finished_at,
                });
            }
            Ok(page)
        })
        .await
    }

    async fn get_many(&self, ids: &[EventId]) -> Result<Vec<Option<LoggedEvent>>> {
        let Some(retention) = self.options.retention else { return Ok(vec![None; ids.len()]) };
        let ids = ids.to_vec();
        let now = self.options.clock.now();
        self.read(move |conn| {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let id = id.to_string();
                let row: Option<(String, String)> = conn
                    .prepare_cached("SELECT envelope, group_id FROM events WHERE event_id = ?1")?
                    .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let Some((envelope, group)) = row else {
                    out.push(None);
                    continue;
                };
                let (outcome, outcome_detail, finished_at) = outcome_of(deciding_line(conn, &id)?.as_ref());
                if event_log::expired(outcome, finished_at, retention, now) {
                    out.push(None);
                    continue;
                }
                out.push(Some(LoggedEvent {
                    envelope: from_json(&envelope)?,
                    group,
                    outcome,
                    outcome_detail,
                    finished_at,
                }));
            }
            Ok(out)
        })
        .await
    }

    async fn sweep(&self, max: usize) -> Result<u64> {
        let Some(retention) = self.retention_ms() else { return Ok(0) };
        let cutoff = self.now() - retention;
        // Most minutes nothing is old enough: a read says so without a writer job (and its sync).
        let due: bool = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached("SELECT EXISTS (SELECT 1 FROM events WHERE received_at < ?1)")?
                    .query_row([cutoff], |r| r.get(0))?)
            })
            .await?;
        if !due {
            return Ok(0);
        }
        // The oldest rows received before the cutoff are the candidates; one still pending (or done after the
        // cutoff) stays. Candidates are read beyond `max` so that a few stuck events do not stop the sweep.
        self.writer
            .submit(move |conn| {
                let candidates: Vec<(i64, String)> = conn
                    .prepare_cached(
                        "SELECT received_at, event_id FROM events WHERE received_at < ?1
                         ORDER BY received_at, event_id LIMIT ?2",
                    )?
                    .query_map(params![cutoff, (max * 4) as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                let mut deleted = 0u64;
                for (at, id) in candidates {
                    if deleted as usize >= max {
                        break;
                    }
                    let (outcome, _, finished) = outcome_of(deciding_line(conn, &id)?.as_ref());
                    if outcome.is_done() && finished.is_some_and(|f| f.as_millis() <= cutoff) {
                        deleted += conn
                            .prepare_cached("DELETE FROM events WHERE received_at = ?1 AND event_id = ?2")?
                            .execute(params![at, id])? as u64;
                    }
                }
                Ok(deleted)
            })
            .await
    }
}
