//! The dead-letter port on SQLite: DLQ rows live in `messages` with `queue = 'dlq'`.

use async_trait::async_trait;
use eventfleet_schema::{DedupId, Envelope, Timestamp};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::queue::{BODY, DLQ, EncodedMessage, MAIN, WITH_BODIES, insert_message};
use super::{EmbeddedStore, from_json};
use crate::dead_letters::{DeadLetter, DeadLetterFilter, DeadLetters, Redriven};
use crate::queue::{MessageId, OutgoingMessage};
use crate::{Result, StorageError};

const COLUMNS: &str = "m.message_id, COALESCE(b.body, m.legacy_body), m.dead_reason, m.receive_count, m.dead_at";

/// `(message_id, body, dead_reason, receive_count, dead_at)` as stored.
type RawDeadLetter = (String, String, Option<String>, u32, Option<i64>);

fn dead_letter(row: &Row<'_>) -> rusqlite::Result<RawDeadLetter> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
}

fn decode(raw: RawDeadLetter) -> Result<DeadLetter> {
    let (id, body, reason, receive_count, at) = raw;
    Ok(DeadLetter {
        message_id: MessageId(id),
        envelope: from_json::<Envelope>(&body)?,
        reason: reason.unwrap_or_default(),
        receive_count,
        dead_lettered_at: Timestamp::from_millis(at.unwrap_or(0)),
    })
}

/// DLQ rows matching the filter, oldest first. Source, kind and time filter in SQL; the reason in Rust (a
/// case-insensitive substring).
fn select(conn: &Connection, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM {WITH_BODIES}
         WHERE m.queue = 'dlq'
           AND (?1 IS NULL OR m.source = ?1) AND (?2 IS NULL OR m.kind = ?2)
           AND (?3 IS NULL OR m.dead_at >= ?3) AND (?4 IS NULL OR m.dead_at < ?4)
         ORDER BY m.seq"
    ))?;
    let rows = stmt.query_map(
        params![
            filter.source,
            filter.kind,
            filter.since.map(Timestamp::as_millis),
            filter.until.map(Timestamp::as_millis)
        ],
        dead_letter,
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, ..) = row.as_ref().map_err(|e| StorageError::unavailable(e.to_string()))?;
        let id = id.clone();
        // One undecodable dead letter must not hide the others: it is listed by `get` errors and purged by id.
        let dl = match decode(row?) {
            Ok(dl) => dl,
            Err(e) => {
                tracing::warn!(dead_letter = %id, error = %e, "skipping an undecodable dead letter");
                continue;
            }
        };
        if filter.matches(&dl) {
            out.push(dl);
            if filter.limit.is_some_and(|l| out.len() >= l) {
                break;
            }
        }
    }
    Ok(out)
}

#[async_trait]
impl DeadLetters for EmbeddedStore {
    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>> {
        let filter = filter.clone();
        self.read(move |conn| select(conn, &filter)).await
    }

    async fn get(&self, id: &MessageId) -> Result<Option<DeadLetter>> {
        let id = id.0.clone();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM {WITH_BODIES} WHERE m.queue = 'dlq' AND m.message_id = ?1"
            ))?
            .query_row([id], dead_letter)
            .optional()?
            .map(decode)
            .transpose()
        })
        .await
    }

    async fn redrive(&self, ids: &[MessageId]) -> Result<Vec<Result<Redriven>>> {
        let ids = ids.to_vec();
        let now = self.now();
        let window = self.options.dedup_window;
        self.writer
            .submit_waking(move |conn| {
                let mut out = Vec::with_capacity(ids.len());
                for id in &ids {
                    let row: Option<(i64, String, String, String)> = conn
                        .prepare_cached(&format!(
                            "SELECT m.seq, {BODY}, m.group_id, m.attributes FROM {WITH_BODIES}
                             WHERE m.queue = 'dlq' AND m.message_id = ?1"
                        ))?
                        .query_row([&id.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                        .optional()?;
                    let Some((seq, body, group, attributes)) = row else {
                        out.push(Err(StorageError::NotFound(format!("dead letter {id}"))));
                        continue;
                    };
                    let msg = OutgoingMessage {
                        envelope: from_json(&body)?,
                        group,
                        // A fresh id: the original's dedup entry may still be inside its window.
                        dedup_id: DedupId::fresh(),
                        attributes: from_json(&attributes)?,
                    };
                    let requeued_as = insert_message(conn, MAIN, &EncodedMessage::encode(&msg)?, now, Some(window))?;
                    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?.execute([seq])?;
                    out.push(Ok(Redriven { dead_letter: id.clone(), requeued_as }));
                }
                Ok(out)
            })
            .await
    }

    async fn purge(&self, filter: &DeadLetterFilter) -> Result<u64> {
        let filter = filter.clone();
        self.writer
            .submit(move |conn| {
                let doomed = select(conn, &filter)?;
                let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE queue = ?1 AND message_id = ?2")?;
                let mut n = 0;
                for dl in doomed {
                    n += stmt.execute(params![DLQ, dl.message_id.0])? as u64;
                }
                Ok(n)
            })
            .await
    }

    async fn delete(&self, ids: &[MessageId]) -> Result<u64> {
        let ids = ids.to_vec();
        self.writer
            .submit(move |conn| {
                let mut stmt = conn.prepare_cached("DELETE FROM messages WHERE queue = ?1 AND message_id = ?2")?;
                let mut n = 0;
                for id in &ids {
                    n += stmt.execute(params![DLQ, id.0])? as u64;
                }
                Ok(n)
            })
            .await
    }
}
