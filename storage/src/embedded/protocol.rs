//! The protocol port on SQLite: every step is one writer job, so it commits whole or not at all, shares its
//! commit (and its fsync) with whatever else is waiting, and no other request or process ever sees a step half
//! done. `PENDING` therefore never reaches the file: an accepted key is `ENQUEUED` in the same commit that puts
//! its message on the queue and writes its `received` and `enqueued` lines.

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, ErrorClass, EventId, IdempotencyKey, RetryStatus, Status, Step, Timestamp};
use rusqlite::{Connection, params};

use super::queue::{
    EncodedMessage, MAIN, insert_message, move_row_to_dlq, row_for_receipt, take_off_main, try_receive,
};
use super::{EmbeddedStore, audit, idempotency, millis, retries};
use crate::protocol::{Accepted, Actor, Delivery, Failure, Protocol, Start};
use crate::{OutgoingMessage, ReceivedMessage, Result, StorageError};

/// The store's settings a job needs, copied out of the store so the job owns them.
#[derive(Clone, Copy)]
struct Settings {
    dedup_window: Duration,
    audit_ttl: Duration,
    /// Whether the accept writes the event log.
    retain: bool,
}

/// What a start needs to know of its worker, owned by the job.
#[derive(Clone)]
struct Worker {
    name: String,
    visibility: i64,
    max_attempts: u32,
    horizon: i64,
}

impl From<&Actor> for Worker {
    fn from(a: &Actor) -> Self {
        Self {
            name: a.name.clone(),
            visibility: millis(a.visibility),
            max_attempts: a.max_attempts,
            horizon: millis(a.horizon),
        }
    }
}

impl EmbeddedStore {
    fn settings(&self) -> Settings {
        Settings {
            dedup_window: self.options.dedup_window,
            audit_ttl: self.options.audit_ttl,
            retain: self.options.retention.is_some(),
        }
    }
}

fn line(conn: &Connection, entry: AuditEntry, s: Settings) -> Result<()> {
    audit::insert(conn, &entry, s.audit_ttl)
}

fn event_id_of(msg: &ReceivedMessage) -> EventId {
    msg.envelope.event_id()
}

/// The accept step: claim, enqueue, `ENQUEUED`, the two lines; or the duplicate counted and audited.
fn accept_job(
    conn: &Connection,
    message: &OutgoingMessage,
    encoded: &EncodedMessage,
    horizon: i64,
    now: i64,
    actor: &str,
    s: Settings,
) -> Result<Accepted> {
    let key = message.envelope.idempotency_key().as_str().to_owned();
    let sender = idempotency::sender_of(&key);
    let existing = idempotency::live(conn, &key, now)?;
    let fresh = existing.is_none();
    // A claim finished under its earlier event id re-encodes its message.
    let reencoded;
    let (message, encoded) = match existing {
        Some(rec) if rec.status != Status::Pending => {
            let rec = conn
                .prepare_cached(&format!(
                    "UPDATE idempotency SET duplicate_count = duplicate_count + 1, last_seen = ?2
                     WHERE {} RETURNING {}",
                    idempotency::where_key(3),
                    idempotency::COLUMNS
                ))?
                .query_row(params![key, now, sender], idempotency::record)?;
            let detail = serde_json::json!({ "status": rec.status, "duplicate_count": rec.duplicate_count });
            let at = Timestamp::from_millis(now);
            line(conn, AuditEntry::new(rec.event_id, at, Step::Duplicate, actor).with_detail(detail), s)?;
            return Ok(Accepted::Duplicate { event_id: rec.event_id, status: rec.status });
        }
        // A claim left by a build that accepted in several steps and died between them: finish it under its
        // event id (the sender retried because it never got an answer).
        Some(rec) => {
            let mut message = message.clone();
            message.envelope.set_event_id(rec.event_id);
            let encoded = EncodedMessage::encode(&message)?;
            reencoded = (message, encoded);
            (&reencoded.0, &reencoded.1)
        }
        None => (message, encoded),
    };
    let env = &message.envelope;
    let event_id = env.event_id();
    // A fresh claim is the dedup: the key had no live record, and its record now outlives any dedup entry of the
    // key's id (the horizon is at least the window), so a dedup entry would be one more random b-tree insert an
    // event for nothing (docs/architecture.md, "The embedded backend", pages an event). A claim left pending by
    // an older build may have sent its message already: that one goes through the window.
    let dedup = (!fresh || horizon < millis(s.dedup_window)).then_some(s.dedup_window);
    let message_id = insert_message(conn, MAIN, encoded, now, dedup)?;
    if s.retain && crate::event_log::kept(env) {
        super::event_log::insert(conn, env, encoded)?;
    }
    conn.prepare_cached(&idempotency::insert_or_replace("'ENQUEUED', ?2, ?3, ?3, 0, NULL, NULL, ?4", 5))?
        .execute(params![key, event_id.to_string(), now, now + horizon, sender])?;
    // Received when the ingress read it, which is never later than the store's own now (a test's paused clock
    // may lag the envelope's wall clock: the trail keeps its order either way).
    let received_at = env.received_at().min(Timestamp::from_millis(now));
    let received = AuditEntry::new(event_id, received_at, Step::Received, actor)
        .with_detail(crate::protocol::received_detail(env));
    let enqueued = AuditEntry::new(event_id, Timestamp::from_millis(now), Step::Enqueued, actor)
        .with_detail(serde_json::json!({ "message_id": message_id, "dedup_id": message.dedup_id }));
    line(conn, received, s)?;
    line(conn, enqueued, s)?;
    Ok(Accepted::New { event_id, message_id })
}

/// The start of one received message, inside the receive's transaction.
fn start_job(conn: &Connection, msg: &ReceivedMessage, w: &Worker, now: i64, s: Settings) -> Result<Start> {
    let key = msg.envelope.idempotency_key().as_str();
    let event_id = event_id_of(msg);
    let at = Timestamp::from_millis(now);
    let (seq, group, head) = row_for_receipt(conn, &msg.receipt)?;
    // Only its group's head may start: one behind a head whose lease ran out (and which another worker now runs
    // again) waits, so the group's order holds.
    if !head {
        return Ok(Start::Waiting);
    }
    let rec = idempotency::live(conn, key, now)?;
    match rec.as_ref().map(|r| r.status) {
        Some(Status::Done) => {
            take_off_main(conn, seq, &group, head)?;
            line(conn, AuditEntry::new(event_id, at, Step::DuplicateDeliverySkipped, &w.name), s)?;
            return Ok(Start::Skipped);
        }
        Some(Status::Dead) => {
            let reason = rec.and_then(|r| r.outcome).unwrap_or_else(|| "dead".into());
            let already: bool = conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM messages WHERE queue = 'dlq' AND event_id = ?1)")?
                .query_row([event_id.to_string()], |r| r.get(0))?;
            if already {
                take_off_main(conn, seq, &group, head)?;
                let detail = serde_json::json!({ "reason": "already on the dead-letter queue" });
                line(
                    conn,
                    AuditEntry::new(event_id, at, Step::DuplicateDeliverySkipped, &w.name).with_detail(detail),
                    s,
                )?;
            } else {
                move_row_to_dlq(conn, seq, &group, head, &reason, now)?;
                let detail = serde_json::json!({ "reason": reason, "finished": true });
                line(conn, AuditEntry::new(event_id, at, Step::DeadLettered, &w.name).with_detail(detail), s)?;
            }
            return Ok(Start::DeadLettered);
        }
        _ => {}
    }
    let replay = rec.as_ref().is_some_and(|r| r.outcome.is_some());
    let retry = retries::live(conn, &event_id.to_string(), now)?;
    let mut attempts = retry.as_ref().map_or(0, |r| r.attempts);
    // PROCESSING here means an earlier start never reached an outcome: its worker died or lost the message. That
    // attempt counts, so a handler that kills its worker is dead-lettered after as many attempts as one that fails.
    if rec.as_ref().is_some_and(|r| r.status == Status::Processing) {
        attempts += 1;
        let error = format!("attempt {attempts} stopped without an outcome (its worker died or lost its lease)");
        let failure = Failure { attempt: attempts, error: error.clone(), class: ErrorClass::Retryable };
        let record = failure.record(msg, Timestamp::from_millis(now));
        retries::upsert(conn, &record)?;
        let detail = serde_json::json!({
            "attempt": attempts, "error": error, "class": ErrorClass::Retryable, "delay_ms": 0, "stopped": true,
        });
        line(conn, AuditEntry::new(event_id, at, Step::RetryScheduled, &w.name).with_detail(detail), s)?;
        if attempts >= w.max_attempts {
            // Not running: the record goes back to ENQUEUED so the next start (if the dead-lettering is cut short)
            // does not count this stop again.
            set_status(conn, key, Status::Enqueued, now, None)?;
            return Ok(Start::Exhausted { attempts, reason: format!("gave up after {attempts} attempts: {error}") });
        }
    } else if attempts >= w.max_attempts {
        return Ok(Start::Exhausted { attempts, reason: format!("gave up after {attempts} attempts") });
    }
    let lease = now + w.visibility;
    // The start renews the message's visibility (one that waited behind its group's head may have little left),
    // and stores the receive it counts: a message handed out behind a head is counted when it starts, so the
    // receives of a failing head do not use up the ones behind it.
    conn.prepare_cached("UPDATE messages SET visible_at = ?2, receive_count = MAX(receive_count, ?3) WHERE seq = ?1")?
        .execute(params![seq, lease, msg.receive_count])?;
    if rec.is_some() {
        set_status(conn, key, Status::Processing, now, Some(lease))?;
    } else {
        // The claim expired before the event ran (a backlog older than the horizon): start a new record.
        conn.prepare_cached(&idempotency::insert_or_replace("'PROCESSING', ?2, ?3, ?3, 0, ?4, NULL, ?5", 6))?
            .execute(params![key, event_id.to_string(), now, lease, now + w.horizon, idempotency::sender_of(key)])?;
    }
    let attempt = attempts + 1;
    let detail = serde_json::json!({ "attempt": attempt, "receive": msg.receive_count, "kind": msg.envelope.kind() });
    line(conn, AuditEntry::new(event_id, at, Step::Started, &w.name).with_detail(detail), s)?;
    Ok(Start::Run { attempt, replay })
}

/// The success step: `DONE`, the message deleted (its group's next message becomes the head), the line, the retry
/// record resolved.
fn succeed_job(
    conn: &Connection,
    message: &ReceivedMessage,
    attempt: u32,
    outcome: &str,
    w: &Worker,
    now: i64,
    s: Settings,
) -> Result<bool> {
    let key = message.envelope.idempotency_key().as_str();
    let event_id = event_id_of(message);
    // The handler ran: DONE stands even if the message was meanwhile received again (its visibility ran out);
    // that delivery then finds DONE and is skipped. Returns whether the receipt was still this worker's.
    let own = match row_for_receipt(conn, &message.receipt) {
        Ok((seq, group, head)) => {
            take_off_main(conn, seq, &group, head)?;
            true
        }
        Err(StorageError::StaleReceipt) => false,
        Err(e) => return Err(e),
    };
    finish_record(conn, key, event_id, Status::Done, outcome, now, w.horizon)?;
    conn.prepare_cached(
        "UPDATE retries SET status = 'RESOLVED', next_attempt_at = NULL, updated_at = ?2
         WHERE event_id = ?1 AND status <> 'RESOLVED'",
    )?
    .execute(params![event_id.to_string(), now])?;
    let detail = crate::protocol::with_replay(serde_json::json!({ "outcome": outcome, "attempt": attempt }), message);
    line(
        conn,
        AuditEntry::new(event_id, Timestamp::from_millis(now), Step::Succeeded, &w.name).with_detail(detail),
        s,
    )?;
    Ok(own)
}

/// `DONE` or `DEAD` with its outcome; a record whose claim expired meanwhile (gone, or still stored past its
/// expiry) is written anew as this delivery's, for a horizon from now.
fn finish_record(
    conn: &Connection,
    key: &str,
    event_id: EventId,
    status: Status,
    outcome: &str,
    now: i64,
    horizon: i64,
) -> Result<()> {
    let updated = conn
        .prepare_cached(&format!(
            "UPDATE idempotency SET status = ?2, outcome = ?3, last_seen = ?4, lease_until = NULL
                 WHERE {} AND expires_at > ?4",
            idempotency::where_key(5)
        ))?
        .execute(params![key, status.as_str(), outcome, now, idempotency::sender_of(key)])?;
    if updated == 0 {
        conn.prepare_cached(&idempotency::insert_or_replace("?2, ?3, ?4, ?4, 0, NULL, ?5, ?6", 7))?.execute(
            params![
                key,
                status.as_str(),
                event_id.to_string(),
                now,
                outcome,
                now + horizon,
                idempotency::sender_of(key)
            ],
        )?;
    }
    Ok(())
}

fn set_status(conn: &Connection, key: &str, status: Status, now: i64, lease: Option<i64>) -> Result<()> {
    conn.prepare_cached(&format!(
        "UPDATE idempotency SET status = ?2, last_seen = ?3, lease_until = ?4 WHERE {}",
        idempotency::where_key(5)
    ))?
    .execute(params![key, status.as_str(), now, lease, idempotency::sender_of(key)])?;
    Ok(())
}

/// The most messages one protocol receive takes here: a receive is one writer job whatever its size, so a worker
/// with many handler slots fills them in one commit and one sync (a hundred heads take about a millisecond of the
/// writer).
pub const MAX_PROTOCOL_RECEIVE: usize = 100;

#[async_trait]
impl Protocol for EmbeddedStore {
    fn max_receive(&self) -> usize {
        MAX_PROTOCOL_RECEIVE
    }

    async fn accept(&self, message: OutgoingMessage, horizon: Duration, actor: &str) -> Result<Accepted> {
        // Encoded here, so the single writer thread spends its time in SQLite only.
        let encoded = EncodedMessage::encode(&message)?;
        let (now, horizon, actor, s) = (self.now(), millis(horizon), actor.to_owned(), self.settings());
        self.writer.submit_waking(move |conn| accept_job(conn, &message, &encoded, horizon, now, &actor, s)).await
    }

    async fn receive(&self, max: usize, wait: Duration, actor: &Actor) -> Result<Vec<Delivery>> {
        if max == 0 || max > MAX_PROTOCOL_RECEIVE {
            return Err(StorageError::Invalid(format!(
                "receive takes 1 to {MAX_PROTOCOL_RECEIVE} messages, not {max}"
            )));
        }
        let (limits, s, w, visibility) =
            (self.receive_limits(), self.settings(), Worker::from(actor), actor.visibility);
        self.long_poll(wait, move |conn, now| {
            let mut out = Vec::new();
            let mut groups = std::collections::HashSet::new();
            for message in try_receive(conn, max, visibility, now, limits)? {
                // The first of each group starts now; those behind it when it has finished.
                let start = if groups.insert(message.group.clone()) {
                    start_job(conn, &message, &w, now, s)?
                } else {
                    Start::Waiting
                };
                out.push(Delivery { message, start });
            }
            Ok(out)
        })
        .await
    }

    async fn start(&self, message: &ReceivedMessage, actor: &Actor) -> Result<Start> {
        let (message, w, s, now) = (message.clone(), Worker::from(actor), self.settings(), self.now());
        self.writer.submit_waking(move |conn| start_job(conn, &message, &w, now, s)).await
    }

    async fn succeed(&self, message: &ReceivedMessage, attempt: u32, outcome: &str, actor: &Actor) -> Result<()> {
        let (message, outcome, w, s, now) =
            (message.clone(), outcome.to_owned(), Worker::from(actor), self.settings(), self.now());
        self.writer
            .submit_waking(move |conn| succeed_job(conn, &message, attempt, &outcome, &w, now, s).map(|_| ()))
            .await
    }

    async fn succeed_and_start(
        &self,
        message: &ReceivedMessage,
        attempt: u32,
        outcome: &str,
        next: &ReceivedMessage,
        actor: &Actor,
    ) -> Result<Start> {
        let (message, next, outcome, w, s, now) =
            (message.clone(), next.clone(), outcome.to_owned(), Worker::from(actor), self.settings(), self.now());
        self.writer
            .submit_waking(move |conn| {
                // A message whose receipt was taken over is still someone else's head: the next one waits.
                if !succeed_job(conn, &message, attempt, &outcome, &w, now, s)? {
                    return Ok(Start::Waiting);
                }
                // The success stands whatever the start meets: a start that fails is undone alone, and the caller
                // starts that message itself (and learns why).
                conn.prepare_cached("SAVEPOINT next")?.execute([])?;
                let start = start_job(conn, &next, &w, now, s);
                if start.is_err() {
                    conn.prepare_cached("ROLLBACK TO next")?.execute([])?;
                }
                conn.prepare_cached("RELEASE next")?.execute([])?;
                Ok(start.unwrap_or(Start::Waiting))
            })
            .await
    }

    async fn retry(&self, message: &ReceivedMessage, failure: &Failure, delay: Duration, actor: &Actor) -> Result<()> {
        let (message, failure, name, s, now) =
            (message.clone(), failure.clone(), actor.name.clone(), self.settings(), self.now());
        let delay_ms = millis(delay);
        self.writer
            .submit(move |conn| {
                let (seq, _, _) = row_for_receipt(conn, &message.receipt)?;
                conn.prepare_cached("UPDATE messages SET visible_at = ?2 WHERE seq = ?1")?
                    .execute(params![seq, now + delay_ms])?;
                set_status_if_processing(conn, message.envelope.idempotency_key(), now)?;
                let mut record = failure.record(&message, Timestamp::from_millis(now));
                record.next_attempt_at = Some(Timestamp::from_millis(now + delay_ms));
                retries::upsert(conn, &record)?;
                let detail = serde_json::json!({
                    "attempt": failure.attempt, "error": failure.error, "class": failure.class, "delay_ms": delay_ms,
                });
                let at = Timestamp::from_millis(now);
                line(
                    conn,
                    AuditEntry::new(event_id_of(&message), at, Step::RetryScheduled, &name).with_detail(detail),
                    s,
                )
            })
            .await
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        failure: &Failure,
        reason: &str,
        actor: &Actor,
    ) -> Result<()> {
        let (message, failure, reason, w, s, now) =
            (message.clone(), failure.clone(), reason.to_owned(), Worker::from(actor), self.settings(), self.now());
        let name = w.name.clone();
        self.writer
            .submit_waking(move |conn| {
                let (seq, group, head) = row_for_receipt(conn, &message.receipt)?;
                let mut record = failure.record(&message, Timestamp::from_millis(now));
                record.status = RetryStatus::Dead;
                record.dead_reason = Some(reason.clone());
                retries::upsert(conn, &record)?;
                let key = message.envelope.idempotency_key().as_str();
                finish_record(conn, key, event_id_of(&message), Status::Dead, &reason, now, w.horizon)?;
                move_row_to_dlq(conn, seq, &group, head, &reason, now)?;
                let detail = crate::protocol::with_replay(
                    serde_json::json!({ "attempt": failure.attempt, "reason": reason, "class": failure.class }),
                    &message,
                );
                let at = Timestamp::from_millis(now);
                line(conn, AuditEntry::new(event_id_of(&message), at, Step::DeadLettered, &name).with_detail(detail), s)
            })
            .await
    }

    async fn release(&self, message: &ReceivedMessage, started: bool, actor: &Actor) -> Result<()> {
        let (message, name, s, now) = (message.clone(), actor.name.clone(), self.settings(), self.now());
        self.writer
            .submit_waking(move |conn| {
                let (seq, _, _) = row_for_receipt(conn, &message.receipt)?;
                conn.prepare_cached("UPDATE messages SET visible_at = ?2 WHERE seq = ?1")?
                    .execute(params![seq, now])?;
                if started {
                    set_status_if_processing(conn, message.envelope.idempotency_key(), now)?;
                    let at = Timestamp::from_millis(now);
                    line(conn, AuditEntry::new(event_id_of(&message), at, Step::Released, &name), s)?;
                }
                Ok(())
            })
            .await
    }

    async fn defer(&self, message: &ReceivedMessage, delay: Duration, reason: &str, actor: &Actor) -> Result<()> {
        let (message, name, s, now) = (message.clone(), actor.name.clone(), self.settings(), self.now());
        let detail = serde_json::json!({ "delay_ms": delay.as_millis() as u64, "reason": reason });
        let visible_at = now.saturating_add(super::millis(delay));
        self.writer
            .submit_waking(move |conn| {
                let (seq, _, _) = row_for_receipt(conn, &message.receipt)?;
                conn.prepare_cached("UPDATE messages SET visible_at = ?2 WHERE seq = ?1")?
                    .execute(params![seq, visible_at])?;
                set_status_if_processing(conn, message.envelope.idempotency_key(), now)?;
                let entry = AuditEntry::new(event_id_of(&message), Timestamp::from_millis(now), Step::Deferred, &name);
                line(conn, entry.with_detail(detail.clone()), s)?;
                Ok(())
            })
            .await
    }
}

fn set_status_if_processing(conn: &Connection, key: &IdempotencyKey, now: i64) -> Result<()> {
    conn.prepare_cached(&format!(
        "UPDATE idempotency SET status = 'ENQUEUED', last_seen = ?2, lease_until = NULL
         WHERE {} AND status = 'PROCESSING'",
        idempotency::where_key(3)
    ))?
    .execute(params![key.as_str(), now, key.sender_id()])?;
    Ok(())
}
