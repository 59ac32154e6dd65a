//! The queue port on SQLite, keeping the SQS FIFO rules the workers rely on.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, Timestamp};
use rusqlite::{Connection, OptionalExtension, params};

use super::{EmbeddedStore, from_json, millis, to_json};
use crate::queue::{MessageId, OutgoingMessage, Queue, QueueStats, ReceiptHandle, ReceivedMessage};
use crate::{Result, StorageError};

pub(super) const MAIN: &str = "main";
pub(super) const DLQ: &str = "dlq";

/// A message ready for the writer: encoded by the caller, so the single writer thread spends its time in SQLite
/// only.
pub(super) struct EncodedMessage {
    pub(super) group: String,
    dedup_id: String,
    pub(super) body: String,
    attributes: String,
    event_id: String,
    source: &'static str,
    kind: String,
}

impl EncodedMessage {
    pub(super) fn encode(msg: &OutgoingMessage) -> Result<Self> {
        let env = &msg.envelope;
        Ok(Self {
            group: msg.group.clone(),
            dedup_id: msg.dedup_id.as_str().to_owned(),
            body: to_json(env)?,
            attributes: to_json(&msg.attributes)?,
            event_id: env.event_id().to_string(),
            source: env.source().name(),
            kind: env.kind().as_str().to_owned(),
        })
    }
}

/// Inserts one message at the tail of its group on `queue`, honouring the dedup window; `None` when the caller's
/// own claim in this transaction already deduplicates it (a fresh accept: see `protocol::accept_job`).
pub(super) fn insert_message(
    conn: &Connection,
    queue: &str,
    msg: &EncodedMessage,
    now: i64,
    dedup_window: Option<Duration>,
) -> Result<MessageId> {
    let id = uuid::Uuid::now_v7().to_string();
    if let Some(window) = dedup_window {
        // One statement in the common case: claim the dedup id unless a live entry holds it (then read that one).
        let claimed: Option<String> = conn
            .prepare_cached(
                "INSERT INTO dedup (queue, dedup_id, message_id, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (queue, dedup_id) DO UPDATE
                     SET message_id = excluded.message_id, expires_at = excluded.expires_at
                     WHERE dedup.expires_at <= ?5
                 RETURNING message_id",
            )?
            .query_row(params![queue, msg.dedup_id, id, now + millis(window), now], |r| r.get(0))
            .optional()?;
        if claimed.is_none() {
            let existing: String = conn
                .prepare_cached("SELECT message_id FROM dedup WHERE queue = ?1 AND dedup_id = ?2")?
                .query_row(params![queue, msg.dedup_id], |r| r.get(0))?;
            return Ok(MessageId(existing));
        }
    }
    conn.prepare_cached(
        "INSERT INTO messages (queue, message_id, group_id, dedup_id, head, legacy_body, attributes, event_id, source,
                               kind, sent_at, visible_at)
         VALUES (?1, ?2, ?3, ?4,
                 NOT EXISTS (SELECT 1 FROM messages WHERE queue = ?1 AND group_id = ?3),
                 ?5, ?6, ?7, ?8, ?9, ?10, ?10)",
    )?
    .execute(params![
        queue,
        id,
        msg.group,
        msg.dedup_id,
        "",
        msg.attributes,
        msg.event_id,
        msg.source,
        msg.kind,
        now,
    ])?;
    insert_body(conn, conn.last_insert_rowid(), &msg.body)?;
    Ok(MessageId(id))
}

/// The envelope of the row `seq`, apart from it (migration 9); deleted with the row by a trigger.
fn insert_body(conn: &Connection, seq: i64, body: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO message_bodies (seq, body) VALUES (?1, ?2)")?.execute(params![seq, body])?;
    Ok(())
}

/// The rows of `messages` with their envelopes, as `m` (columns named `m.…`) and [`BODY`]. A row queued before
/// migration 9 keeps its envelope in its own `legacy_body`.
pub(super) const WITH_BODIES: &str = "messages m LEFT JOIN message_bodies b ON b.seq = m.seq";

/// A row's envelope, in [`WITH_BODIES`].
pub(super) const BODY: &str = "COALESCE(b.body, m.legacy_body)";

/// [`insert_message`] in its own savepoint: a message that fails leaves nothing behind (above all no dedup entry
/// that would swallow the sender's retry), while the rest of the batch stands.
pub(super) fn insert_message_atomically(
    conn: &Connection,
    queue: &str,
    msg: &EncodedMessage,
    now: i64,
    dedup_window: Duration,
) -> Result<MessageId> {
    conn.prepare_cached("SAVEPOINT message")?.execute([])?;
    let result = insert_message(conn, queue, msg, now, Some(dedup_window));
    if result.is_err() {
        conn.prepare_cached("ROLLBACK TO message")?.execute([])?;
    }
    conn.prepare_cached("RELEASE message")?.execute([])?;
    result
}

/// Makes the oldest remaining message of a group on the main queue its head.
pub(super) fn promote_next_head(conn: &Connection, group: &str) -> Result<()> {
    conn.prepare_cached(
        "UPDATE messages SET head = 1
         WHERE seq = (SELECT MIN(seq) FROM messages WHERE queue = 'main' AND group_id = ?1)",
    )?
    .execute([group])?;
    Ok(())
}

/// Removes a message row from the main queue, keeping its group's head right.
pub(super) fn take_off_main(conn: &Connection, seq: i64, group: &str, was_head: bool) -> Result<()> {
    conn.prepare_cached("DELETE FROM messages WHERE seq = ?1")?.execute([seq])?;
    if was_head {
        promote_next_head(conn, group)?;
    }
    Ok(())
}

/// Moves a main-queue row to the DLQ with a reason (a new tail position there).
pub(super) fn move_row_to_dlq(
    conn: &Connection,
    seq: i64,
    group: &str,
    was_head: bool,
    reason: &str,
    now: i64,
) -> Result<()> {
    let moved = conn.prepare_cached(
        "INSERT INTO messages (queue, message_id, group_id, dedup_id, head, legacy_body, attributes, event_id, source,
                               kind, sent_at, visible_at, receive_count, dead_reason, dead_at)
         SELECT 'dlq', message_id || '.dlq', group_id, dedup_id, 0, legacy_body, attributes, event_id, source, kind,
                sent_at, ?2, receive_count, ?3, ?2
         FROM messages WHERE seq = ?1",
    )?
    .execute(params![seq, now, reason])?;
    // The envelope goes along (a row queued before migration 9 took its own in `legacy_body`).
    if moved == 1 {
        conn.prepare_cached(
            "INSERT INTO message_bodies (seq, body) SELECT ?2, body FROM message_bodies WHERE seq = ?1",
        )?
        .execute(params![seq, conn.last_insert_rowid()])?;
    }
    take_off_main(conn, seq, group, was_head)
}

/// The row a receipt designates, if it is still the current receipt: `(seq, group, head)`.
pub(super) fn row_for_receipt(conn: &Connection, receipt: &ReceiptHandle) -> Result<(i64, String, bool)> {
    let (seq, token) = receipt.0.split_once(':').ok_or(StorageError::StaleReceipt)?;
    let seq: i64 = seq.parse().map_err(|_| StorageError::StaleReceipt)?;
    conn.prepare_cached("SELECT group_id, head FROM messages WHERE seq = ?1 AND queue = 'main' AND receipt = ?2")?
        .query_row(params![seq, token], |r| Ok((seq, r.get::<_, String>(0)?, r.get::<_, bool>(1)?)))
        .optional()?
        .ok_or(StorageError::StaleReceipt)
}

/// A head row as read by a receive.
struct HeadRow {
    seq: i64,
    group: String,
    receive_count: u32,
    message_id: String,
    body: String,
    attributes: String,
    sent_at: i64,
    event_id: String,
}

fn head_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<HeadRow> {
    Ok(HeadRow {
        seq: r.get(0)?,
        group: r.get(1)?,
        receive_count: r.get(2)?,
        message_id: r.get(3)?,
        body: r.get(4)?,
        attributes: r.get(5)?,
        sent_at: r.get(6)?,
        event_id: r.get(7)?,
    })
}

/// Puts a row in flight until `visible_at` under a new receipt. A head's receive is counted; one handed out
/// behind its head carries the count it will have, stored only when it starts (the protocol's start step), so
/// that the receives of a failing head do not add up on the messages waiting behind it.
fn mark_received(
    conn: &Connection,
    row: HeadRow,
    envelope: Envelope,
    attributes: BTreeMap<String, String>,
    visible_at: i64,
    count: bool,
) -> Result<ReceivedMessage> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let receive_count: u32 = conn
        .prepare_cached(
            "UPDATE messages SET visible_at = ?2, receive_count = receive_count + ?4, receipt = ?3
             WHERE seq = ?1 RETURNING receive_count",
        )?
        .query_row(params![row.seq, visible_at, token, i64::from(count)], |r| r.get(0))?;
    let receive_count = if count { receive_count } else { receive_count + 1 };
    Ok(ReceivedMessage {
        message_id: MessageId(row.message_id),
        receipt: ReceiptHandle(format!("{}:{token}", row.seq)),
        envelope,
        group: row.group,
        attributes,
        receive_count,
        sent_at: Timestamp::from_millis(row.sent_at),
    })
}

/// A receive's heads: the oldest receivable ones, by the heads' partial index, each with its envelope.
pub(super) const HEADS: &str =
    "SELECT m.seq, m.group_id, m.receive_count, m.message_id, COALESCE(b.body, m.legacy_body), m.attributes, m.sent_at,
            m.event_id
     FROM messages m INDEXED BY messages_heads LEFT JOIN message_bodies b ON b.seq = m.seq
     WHERE m.queue = 'main' AND m.head = 1 AND m.visible_at <= ?1
     ORDER BY m.seq LIMIT ?2";

/// The messages behind a received head of a group, each with its envelope.
pub(super) const FOLLOWERS: &str =
    "SELECT m.seq, m.group_id, m.receive_count, m.message_id, COALESCE(b.body, m.legacy_body), m.attributes, m.sent_at,
            m.event_id
     FROM messages m LEFT JOIN message_bodies b ON b.seq = m.seq
     WHERE m.queue = 'main' AND m.group_id = ?1 AND m.seq > ?2 ORDER BY m.seq LIMIT ?3";

pub(super) fn try_receive(
    conn: &Connection,
    max: usize,
    visibility: Duration,
    now: i64,
    limits: ReceiveLimits,
) -> Result<Vec<ReceivedMessage>> {
    let heads: Vec<HeadRow> =
        conn.prepare_cached(HEADS)?.query_map(params![now, max as i64], head_row)?.collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(heads.len());
    for head in heads {
        if head.receive_count >= limits.max_receive_count {
            // SQS semantics: the receive after the last allowed one moves the message to the DLQ instead.
            let reason = format!("max receive count exceeded ({} receives)", head.receive_count);
            move_row_to_dlq(conn, head.seq, &head.group, true, &reason, now)?;
            record_queue_dead_letter(conn, &head.event_id, &reason, now, limits.audit_ttl)?;
            continue;
        }
        // A message that does not decode (a newer envelope version, a foreign writer) must not block every
        // receive behind it: it goes to the DLQ with the reason, and the rest flows.
        let decoded = from_json::<Envelope>(&head.body)
            .and_then(|env| from_json::<BTreeMap<String, String>>(&head.attributes).map(|attrs| (env, attrs)));
        let (envelope, attributes) = match decoded {
            Ok(parts) => parts,
            Err(e) => {
                let reason = format!("undecodable message: {e}");
                move_row_to_dlq(conn, head.seq, &head.group, true, &reason, now)?;
                record_queue_dead_letter(conn, &head.event_id, &reason, now, limits.audit_ttl)?;
                continue;
            }
        };
        out.push(mark_received(conn, head, envelope, attributes, now + millis(visibility), true)?);
    }
    // Room left: the messages behind the received heads, in group order, as SQS hands them out. The group stays
    // blocked (its head is in flight), and the caller runs them one after another, without a receive each. Only up
    // to SQS's batch, however large the receive: each waits in its group's chain holding a handler slot, with its
    // visibility running, so a larger receive takes more groups, not a longer wait behind one.
    let fill_to = max.min(crate::queue::MAX_RECEIVE);
    let heads: Vec<(i64, String)> = out.iter().map(|m| (seq_of(&m.receipt), m.group.clone())).collect();
    for (head_seq, group) in heads {
        if out.len() >= fill_to {
            break;
        }
        let followers: Vec<HeadRow> = conn
            .prepare_cached(FOLLOWERS)?
            .query_map(params![group, head_seq, (fill_to - out.len()) as i64], head_row)?
            .collect::<Result<_, _>>()?;
        for row in followers {
            // One that does not decode is left for when it is the head (which dead-letters it), and so is the
            // rest of its group behind it.
            let Ok(envelope) = from_json::<Envelope>(&row.body) else { break };
            let Ok(attributes) = from_json::<BTreeMap<String, String>>(&row.attributes) else { break };
            out.push(mark_received(conn, row, envelope, attributes, now + millis(visibility), false)?);
        }
    }
    Ok(out)
}

/// The row a receipt of this store names (its first part).
fn seq_of(receipt: &ReceiptHandle) -> i64 {
    receipt.0.split_once(':').and_then(|(seq, _)| seq.parse().ok()).unwrap_or(i64::MAX)
}

/// The longest a long poll waits between looks for other processes' sends and expired visibilities once it has
/// found nothing for a while (a message sent by another process then waits up to this long on an idle fleet).
pub(super) const IDLE_POLL: Duration = Duration::from_secs(2);

/// The idle look's query. The heads' partial index is named: left to itself the planner took the group index and
/// read every queued message (a 100 ms look behind a backlog of 100,000, on an async thread).
pub(super) const IDLE_LOOK: &str = "SELECT EXISTS (SELECT 1 FROM messages INDEXED BY messages_heads
    WHERE queue = 'main' AND head = 1 AND visible_at <= ?1)";

/// What a receive needs to know of the store's settings.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReceiveLimits {
    pub(super) max_receive_count: u32,
    pub(super) audit_ttl: Duration,
}

impl EmbeddedStore {
    pub(super) fn receive_limits(&self) -> ReceiveLimits {
        ReceiveLimits { max_receive_count: self.options.max_receive_count, audit_ttl: self.options.audit_ttl }
    }

    /// The long poll: runs `job` (a receive) in the writer until it returns something or `wait` is over. Between
    /// tries it sleeps until a commit of this process may have made a message receivable, or for the poll
    /// interval; a poll then only reads (is any group's head visible?), so an idle poller writes nothing and
    /// wakes nobody. Other processes' sends and expired visibilities are found by that poll. Each empty poll
    /// doubles the interval, up to [`IDLE_POLL`]: an idle process hardly wakes, a busy one looks every
    /// `poll_interval`. The interval outlives the call: the next long poll of an idle store goes on at it, and
    /// starts with a read rather than a receive in the writer.
    pub(super) async fn long_poll<T, F>(&self, wait: Duration, job: F) -> Result<Vec<T>>
    where
        T: Send + 'static,
        F: Fn(&Connection, i64) -> Result<Vec<T>> + Clone + Send + 'static,
    {
        let deadline = tokio::time::Instant::now() + wait;
        let busy = self.options.poll_interval;
        let mut interval = Duration::from_millis(self.idle_poll_ms.load(Ordering::Relaxed)).max(busy);
        // `None`: look with a read first (the store was idle when the last poll ended).
        let mut look = (interval <= busy).then_some(true);
        loop {
            // Created before looking, so a commit in between is not missed (`notify_waiters` reaches every
            // `Notified` created before it, polled or not).
            let changed = self.queue_changed.notified();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let look_now = if left.is_zero() {
                // The last look must not answer empty while a send submitted before it is on its way: one still
                // in the writer is waited for by a receive there (ordered after it); with none pending, every
                // send submitted so far has committed, and a read sees them.
                self.writer.waking_pending() || self.receivable()
            } else {
                match look {
                    Some(look) => look,
                    None => self.receivable(),
                }
            };
            if look_now {
                let now = self.now();
                let job = job.clone();
                let got = self.writer.submit(move |conn| job(conn, now)).await?;
                if !got.is_empty() || left.is_zero() {
                    let next = if got.is_empty() { interval } else { busy };
                    self.idle_poll_ms.store(next.as_millis() as u64, Ordering::Relaxed);
                    return Ok(got);
                }
            } else if left.is_zero() {
                self.idle_poll_ms.store(interval.as_millis() as u64, Ordering::Relaxed);
                return Ok(Vec::new());
            }
            let woken = tokio::select! {
                _ = changed => true,
                _ = tokio::time::sleep(left.min(interval)) => self.receivable(),
            };
            look = Some(woken);
            interval = if woken { busy } else { (interval * 2).min(IDLE_POLL.max(interval)) };
        }
    }

    /// Whether some group's head is visible now: one index probe, run here rather than on the blocking pool. On
    /// an idle store this look is most of what wakes the process, and a hop to a pool thread and back tripled the
    /// threads it woke. It never waits: while another look holds the connection, or the file is locked, or the
    /// read fails, the answer is "look", and the receive in the writer decides (and reports a real error).
    fn receivable(&self) -> bool {
        let Ok(conn) = self.poller.try_lock() else { return true };
        conn.prepare_cached(IDLE_LOOK)
            .and_then(|mut statement| statement.query_row([self.now()], |r| r.get(0)))
            .unwrap_or(true)
    }
}

/// The ledger side of a dead-lettering done by the queue itself (too many receives, undecodable): what a
/// worker writes when it dead-letters, written in the same transaction so the event never looks in progress.
fn record_queue_dead_letter(
    conn: &Connection,
    event_id: &str,
    reason: &str,
    now: i64,
    audit_ttl: Duration,
) -> Result<()> {
    conn.prepare_cached(
        "UPDATE idempotency SET status = 'DEAD', outcome = ?2, last_seen = ?3, lease_until = NULL
         WHERE event_id = ?1 AND status NOT IN ('DONE', 'DEAD')",
    )?
    .execute(params![event_id, reason, now])?;
    conn.prepare_cached(
        "UPDATE retries SET status = 'DEAD', dead_reason = ?2, next_attempt_at = NULL, updated_at = ?3
         WHERE event_id = ?1",
    )?
    .execute(params![event_id, reason, now])?;
    conn.prepare_cached(
        "INSERT INTO audit (event_id, at, step, actor, detail, expires_at) VALUES (?1, ?2, 'dead_lettered', 'queue', ?3, ?4)",
    )?
    .execute(params![event_id, now, to_json(&serde_json::json!({ "reason": reason }))?, now + millis(audit_ttl)])?;
    Ok(())
}

#[async_trait]
impl Queue for EmbeddedStore {
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Result<MessageId>>> {
        let encoded: Vec<Result<EncodedMessage>> = messages.iter().map(EncodedMessage::encode).collect();
        let now = self.now();
        let window = self.options.dedup_window;
        // The job may run twice; a message its first run committed on its own (a transaction SQLite ended under
        // it) is found by its dedup id the second time, not sent again.
        self.writer
            .submit_waking(move |conn| {
                Ok(encoded
                    .iter()
                    .map(|m| match m {
                        Ok(m) => insert_message_atomically(conn, MAIN, m, now, window),
                        Err(e) => Err(e.clone()),
                    })
                    .collect())
            })
            .await
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>> {
        if max == 0 || max > crate::queue::MAX_RECEIVE {
            return Err(StorageError::Invalid(format!("receive takes 1 to 10 messages, not {max}")));
        }
        let limits = self.receive_limits();
        self.long_poll(wait, move |conn, now| try_receive(conn, max, visibility, now, limits)).await
    }

    async fn delete(&self, receipt: &ReceiptHandle) -> Result<()> {
        let receipt = receipt.clone();
        self.writer
            .submit_waking(move |conn| {
                let (seq, group, head) = row_for_receipt(conn, &receipt)?;
                take_off_main(conn, seq, &group, head)
            })
            .await
    }

    async fn change_visibility(&self, receipt: &ReceiptHandle, visibility: Duration) -> Result<()> {
        if visibility > Duration::from_secs(12 * 3600) {
            return Err(StorageError::Invalid("visibility timeout over 12 hours".into()));
        }
        let receipt = receipt.clone();
        let now = self.now();
        let visible_at = now + millis(visibility);
        let work = move |conn: &Connection| {
            let (seq, _, _) = row_for_receipt(conn, &receipt)?;
            // As SQS: only a message in flight can have its visibility changed. Once its timeout ran out it is
            // visible again, and a late heartbeat must not hide it anew.
            let in_flight: bool = conn
                .prepare_cached("SELECT visible_at > ?2 FROM messages WHERE seq = ?1")?
                .query_row(params![seq, now], |r| r.get(0))?;
            if !in_flight {
                return Err(StorageError::StaleReceipt);
            }
            conn.prepare_cached("UPDATE messages SET visible_at = ?2 WHERE seq = ?1")?
                .execute(params![seq, visible_at])?;
            Ok(())
        };
        // A release makes the message receivable at once; a heartbeat or a backoff does not.
        if visibility.is_zero() { self.writer.submit_waking(work).await } else { self.writer.submit(work).await }
    }

    async fn move_to_dlq(&self, receipt: &ReceiptHandle, reason: &str) -> Result<()> {
        let receipt = receipt.clone();
        let reason = reason.to_owned();
        let now = self.now();
        self.writer
            .submit_waking(move |conn| {
                let (seq, group, head) = row_for_receipt(conn, &receipt)?;
                move_row_to_dlq(conn, seq, &group, head, &reason, now)
            })
            .await
    }

    async fn stats(&self) -> Result<QueueStats> {
        let now = self.now();
        self.read(move |conn| {
            let (waiting, in_flight, oldest, dead): (i64, i64, Option<i64>, i64) = conn
                .prepare_cached(
                    "SELECT
                    COALESCE(SUM(queue = 'main' AND NOT (receive_count > 0 AND visible_at > ?1)), 0),
                    COALESCE(SUM(queue = 'main' AND receive_count > 0 AND visible_at > ?1), 0),
                    MIN(CASE WHEN queue = 'main' THEN sent_at END),
                    COALESCE(SUM(queue = 'dlq'), 0)
                 FROM messages",
                )?
                .query_row([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            Ok(QueueStats {
                waiting: waiting as u64,
                in_flight: in_flight as u64,
                oldest_age_ms: oldest.map(|t| (now - t).max(0) as u64),
                dead_letters: dead as u64,
            })
        })
        .await
    }
}
