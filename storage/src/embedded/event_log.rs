//! The event log on SQLite: the `events` table, written by the accept step in its own writer job, read on the
//! read connection; an event's outcome is read from its trail's deciding lines (`audit_event` index, a few rows
//! an event).

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, Envelope, EventId, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::queue::EncodedMessage;
use super::{EmbeddedStore, audit, from_json};
use crate::event_log::{
    self, Cursor, EventLog, EventPage, EventQuery, EventSummary, LoggedEvent, MAX_PAGE, Outcome, outcome_of,
};
use crate::{Result, StorageError};

/// Rows a listing reads for one page at most: a filter that matches few events returns a short page with a
/// cursor rather than reading the whole window in one call.
const SCAN_LIMIT: usize = 50_000;
/// Rows one sweep looks at at most (on the read connection), for the ones it may delete.
const SWEEP_SCAN: usize = 20_000;

/// A listing's range: rows after the cursor (or from `since`) and received before `until`. A range of the
/// `events_at` index, so SQLite seeks to its start instead of reading the table from the beginning.
pub(super) const RANGE: &str = "SELECT received_at, event_id, source, kind, hook, group_id FROM events
     WHERE (received_at, event_id) > (?1, ?2) AND received_at < ?3
     ORDER BY received_at, event_id";

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

/// The event's outcome from the lines of its trail that decide it.
fn outcome(conn: &Connection, event_id: &str) -> Result<(Outcome, Option<String>, Option<Timestamp>)> {
    let lines = conn
        .prepare_cached(
            "SELECT event_id, at, step, actor, detail FROM audit
             WHERE event_id = ?1 AND step IN ('succeeded', 'dead_lettered', 'replayed')
             ORDER BY at, id",
        )?
        .query_map([event_id], audit::raw)?
        .map(|r| audit::decode(r?))
        .collect::<Result<Vec<AuditEntry>>>()?;
    Ok(outcome_of(&lines))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("event log: {what}"))
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
            // From the cursor, or from `since` (an empty id sorts before every id) when that is later.
            let since = query.since.map(|t| (t.as_millis(), String::new()));
            let after = query.after.map(|c| (c.received_at.as_millis(), c.event_id.to_string()));
            let (from_at, from_id) = match (after, since) {
                (Some(a), Some(s)) => a.max(s),
                (Some(a), None) => a,
                (None, Some(s)) => s,
                (None, None) => (i64::MIN, String::new()),
            };
            let until = query.until.map_or(i64::MAX, Timestamp::as_millis);
            let mut stmt = conn.prepare_cached(RANGE)?;
            let rows = stmt.query_map(params![from_at, from_id, until], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })?;
            // Every filter but the outcome (and the cursor, which the range applies), checked before the trail is read.
            let rest = EventQuery { outcome: None, after: None, ..query.clone() };
            let mut page = EventPage::default();
            let mut last_read: Option<Cursor> = None;
            for (read, row) in rows.enumerate() {
                if read >= SCAN_LIMIT {
                    // Cut short: go on after the last row read (whether or not it matched).
                    page.next = last_read;
                    break;
                }
                let (at, id, source, kind, hook, group) = row?;
                let event_id = EventId::parse(&id).ok_or_else(|| corrupt(&format!("event id {id}")))?;
                let cursor = Cursor { received_at: Timestamp::from_millis(at), event_id };
                last_read = Some(cursor);
                let summary = EventSummary {
                    event_id,
                    received_at: cursor.received_at,
                    source,
                    kind,
                    hook,
                    group,
                    outcome: Outcome::Pending,
                    outcome_detail: None,
                    finished_at: None,
                };
                if !rest.matches(&summary) {
                    continue;
                }
                let (outcome, outcome_detail, finished_at) = outcome(conn, &id)?;
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
                page.events.push(EventSummary { outcome, outcome_detail, finished_at, ..summary });
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
                let (outcome, outcome_detail, finished_at) = outcome(conn, &id)?;
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
        let Some(retention) = self.options.retention else { return Ok(0) };
        let now = self.options.clock.now();
        let cutoff = now.as_millis() - super::millis(retention);
        // The rows received before the cutoff are the candidates, oldest first; one still pending, or done after
        // the cutoff (a replay late in its window), stays. They are chosen on the read connection, so the writer
        // is held only for the deletes, and most minutes (nothing old enough) not at all.
        let doomed: Vec<(i64, String)> = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT received_at, event_id FROM events WHERE received_at < ?1
                     ORDER BY received_at, event_id LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![cutoff, SWEEP_SCAN as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let mut doomed = Vec::new();
                for row in rows {
                    let (at, id): (i64, String) = row?;
                    let (outcome, _, finished) = outcome(conn, &id)?;
                    if event_log::expired(outcome, finished, retention, now) {
                        doomed.push((at, id));
                        if doomed.len() == max {
                            break;
                        }
                    }
                }
                Ok(doomed)
            })
            .await?;
        if doomed.is_empty() {
            return Ok(0);
        }
        self.writer
            .submit(move |conn| {
                let mut stmt = conn.prepare_cached("DELETE FROM events WHERE received_at = ?1 AND event_id = ?2")?;
                let mut deleted = 0u64;
                for (at, id) in &doomed {
                    deleted += stmt.execute(params![at, id])? as u64;
                }
                Ok(deleted)
            })
            .await
    }
}
