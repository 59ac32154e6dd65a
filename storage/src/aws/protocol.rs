//! The protocol port on SQS FIFO and DynamoDB, in the fewest requests that keep the guarantees of
//! `docs/architecture.md` ("Guarantees and their limits"; "The protocol, step by step" walks through every crash
//! point).
//!
//! - **accept**: one conditional `PutItem` claims the key (`PENDING`); the message joins the next
//!   `SendMessageBatch` (dedup id = sha256 of the key); the `received` and `enqueued` lines join the next
//!   `BatchWriteItem`. No `ENQUEUED` mark: a redelivery that finds `PENDING` cannot tell a claim whose send landed
//!   from one whose ingress died before it, so it sends again under the original event id and the same dedup id
//!   (SQS drops the copy inside its 5-minute window; after it, the worker skips the copy as `DONE`), and writes
//!   the two lines under fixed sort keys, so however many deliveries race there is one of each.
//! - **receive**: `ReceiveMessage` of up to 10, then one `BatchGetItem` (idempotency and retry records of every
//!   message that can start) and one `BatchWriteItem` of the `started` lines. A redelivery (receive count over 1)
//!   also reads its trail (`Query`) to see whether the attempt before it stopped without an outcome.
//!   No `PROCESSING` write: SQS FIFO already keeps one message of a group in flight, and the visibility timeout
//!   is the lease.
//! - **succeed**: `DONE` (the decision) as a plain put of the record the start read, in one `BatchWriteItem`
//!   with the `succeeded` line (and the next message's `started` line, for `succeed_and_start`), shared with
//!   whatever else finishes meanwhile; an `UpdateItem` only when the start read no record. Then the delete, or,
//!   when the next message of the group runs, its delete is left to the end of the chain (with its visibility
//!   half to run; deleted at the next one's heartbeat otherwise).
//!   **retry**: the retry record (`PutItem`), the visibility, the line. **dead_letter**: `DEAD` and the
//!   dead-letter record, then the move (DLQ send with the message id as dedup id, delete), then the line.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use eventfleet_schema::{
    AuditEntry, ErrorClass, EventId, IdempotencyRecord, RetryRecord, RetryStatus, Status, Step, Timestamp,
};

use super::idempotency::{Conditional, Write, live, new_item, record, update};
use super::item::{Item, n, s, ts, ttl};
use super::retries;
use super::sqs::check_size;
use super::{AwsStore, unavailable};
use crate::protocol::{Accepted, Actor, Delivery, Failure, Protocol, Start};
use crate::{AuditLog, MessageId, OutgoingMessage, Queue, ReceivedMessage, Result, RetryRecords, StorageError};

/// What a start found for one message.
#[derive(Clone)]
pub(super) struct Found {
    record: Option<IdempotencyRecord>,
    retry: Option<RetryRecord>,
}

impl AwsStore {
    /// The accept's lines under fixed sort keys, so every delivery that writes them writes the same two items.
    async fn accept_lines(&self, message: &OutgoingMessage, event_id: EventId, first_seen: Timestamp, actor: &str) {
        let env = &message.envelope;
        let received = AuditEntry::new(event_id, first_seen, Step::Received, actor)
            .with_detail(crate::protocol::received_detail(env));
        let enqueued = AuditEntry::new(event_id, first_seen, Step::Enqueued, actor)
            .with_detail(serde_json::json!({ "dedup_id": message.dedup_id }));
        let table = &self.names.audit_table;
        let mut items = vec![
            (table.clone(), self.audit_item_once(&received, 0)),
            (table.clone(), self.audit_item_once(&enqueued, 1)),
        ];
        // The event log's item rides in the same batch, so retention costs no request of its own; the batch
        // writer keeps a failure of the log's table to the log's items ([`super::audit::puts`]).
        match self.event_item(message, event_id) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, %event_id, "could not keep the event in the event log"),
        }
        self.write_lines(items).await;
    }

    /// The accept's lines: an accepted event stands whether or not they land (the worker's attempt counting reads
    /// only its own lines).
    async fn write_lines(&self, items: Vec<(String, Item)>) {
        for result in self.puts.submit_all(items).await {
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "could not write an audit line"),
                None => tracing::warn!("could not write an audit line: the audit writer stopped"),
            }
        }
    }

    async fn line(&self, entry: AuditEntry) {
        if let Err(e) = self.append(vec![entry]).await {
            tracing::warn!(error = %e, "could not write an audit line");
        }
    }

    async fn send_one(&self, message: OutgoingMessage) -> Result<MessageId> {
        self.sends.submit(message).await.unwrap_or_else(|| Err(StorageError::unavailable("send batcher stopped")))
    }

    /// One `BatchGetItem` for the idempotency and retry records of `messages`.
    async fn find(&self, messages: &[&ReceivedMessage]) -> Result<Vec<Found>> {
        let now = self.now();
        let (idem, retries) = (&self.names.idempotency_table, &self.names.retries_table);
        let mut keys: Vec<HashMap<String, AttributeValue>> = Vec::new();
        let mut events: Vec<HashMap<String, AttributeValue>> = Vec::new();
        for m in messages {
            let key = HashMap::from([("key".to_owned(), s(m.envelope.idempotency_key().as_str()))]);
            if !keys.contains(&key) {
                keys.push(key);
            }
            let event = HashMap::from([("event_id".to_owned(), s(m.envelope.event_id().to_string()))]);
            if !events.contains(&event) {
                events.push(event);
            }
        }
        let invalid = |e: aws_sdk_dynamodb::error::BuildError| StorageError::Invalid(e.to_string());
        let first = HashMap::from([
            (
                idem.clone(),
                KeysAndAttributes::builder().set_keys(Some(keys)).consistent_read(true).build().map_err(invalid)?,
            ),
            (
                retries.clone(),
                KeysAndAttributes::builder().set_keys(Some(events)).consistent_read(true).build().map_err(invalid)?,
            ),
        ]);
        let dynamodb = &self.clients.dynamodb;
        let parts = super::unprocessed::until_processed("BatchGetItem", first, |pending| async move {
            let out = (dynamodb.batch_get_item())
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| unavailable("BatchGetItem", e))?;
            Ok((out.responses.unwrap_or_default(), out.unprocessed_keys.unwrap_or_default()))
        })
        .await?;
        let (mut idem_items, mut retry_items) = (Vec::new(), Vec::new());
        for mut responses in parts {
            idem_items.extend(responses.remove(idem).unwrap_or_default());
            retry_items.extend(responses.remove(retries).unwrap_or_default());
        }
        let mut records = HashMap::new();
        for item in idem_items {
            if let Some(item) = live(Some(item), now)? {
                let rec = record(&item)?;
                records.insert(rec.key.as_str().to_owned(), rec);
            }
        }
        let mut retry_records = HashMap::new();
        for item in retry_items {
            let rec = retries::record(&item)?;
            if rec.expires_at > now {
                retry_records.insert(rec.event_id, rec);
            }
        }
        Ok(messages
            .iter()
            .map(|m| Found {
                record: records.get(m.envelope.idempotency_key().as_str()).cloned(),
                retry: retry_records.get(&m.envelope.event_id()).cloned(),
            })
            .collect())
    }

    /// Whether the trail's last delivery line is a `started` one: that attempt never reached an outcome.
    /// The attempt number of that `started` line, if the trail ends in one.
    async fn stopped(&self, event_id: EventId) -> Result<Option<u32>> {
        let trail = self.history(event_id).await?;
        let last = trail.iter().rev().find(|e| {
            matches!(
                e.step,
                Step::Started
                    | Step::Succeeded
                    | Step::RetryScheduled
                    | Step::DeadLettered
                    | Step::Released
                    | Step::Deferred
                    | Step::DuplicateDeliverySkipped
                    | Step::Replayed
            )
        });
        Ok(last
            .filter(|e| e.step == Step::Started)
            .map(|e| e.detail["attempt"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(u32::MAX)))
    }

    /// A message that waited behind its group's head gets its visibility back before it starts, so that it
    /// cannot reappear to another worker while it runs (one request, only when a third of it is gone).
    async fn keep_visible(&self, msg: &ReceivedMessage, actor: &Actor) -> Result<()> {
        match self.in_flight.remaining(&msg.receipt.0) {
            Some(left) if left > actor.visibility * 2 / 3 => Ok(()),
            _ => self.change_visibility(&msg.receipt, actor.visibility).await,
        }
    }

    /// Decides one message's start. Returns the decision and, for a run, its `started` line (written by the
    /// caller with the others of its receive).
    async fn decide(&self, msg: &ReceivedMessage, found: Found, actor: &Actor) -> Result<(Start, Option<AuditEntry>)> {
        let now = self.now();
        let event_id = msg.envelope.event_id();
        match found.record.as_ref().map(|r| r.status) {
            Some(Status::Done) => {
                Queue::delete(self, &msg.receipt).await?;
                self.line(AuditEntry::new(event_id, now, Step::DuplicateDeliverySkipped, &actor.name)).await;
                return Ok((Start::Skipped, None));
            }
            // A dead-lettering cut short between DEAD and the move: finish the move (the DLQ send's dedup id is
            // the message id, so a move that did land is not doubled).
            Some(Status::Dead) => {
                let reason = found.record.and_then(|r| r.outcome).unwrap_or_else(|| "dead".into());
                self.move_to_dlq(&msg.receipt, &reason).await?;
                let detail = serde_json::json!({ "reason": reason, "finished": true });
                self.line(AuditEntry::new(event_id, now, Step::DeadLettered, &actor.name).with_detail(detail)).await;
                return Ok((Start::DeadLettered, None));
            }
            _ => {}
        }
        let replay = found.record.as_ref().is_some_and(|r| r.outcome.is_some());
        let mut attempts = found.retry.as_ref().map_or(0, |r| r.attempts);
        // Only a message received before can follow an attempt of its own; a first receive needs no read. A
        // `started` line whose attempt the retry record already counts is a retry whose own line was lost (the
        // trail is written after the record): not a second stop.
        let stopped = if msg.receive_count > 1 { self.stopped(event_id).await? } else { None };
        if stopped.is_some_and(|n| n > attempts) {
            attempts += 1;
            let error = format!("attempt {attempts} stopped without an outcome (its worker died or lost its lease)");
            let failure = Failure { attempt: attempts, error: error.clone(), class: ErrorClass::Retryable };
            self.upsert(&failure.record(msg, now)).await?;
            let detail = serde_json::json!({
                "attempt": attempts, "error": error, "class": ErrorClass::Retryable, "delay_ms": 0, "stopped": true,
            });
            self.line(AuditEntry::new(event_id, now, Step::RetryScheduled, &actor.name).with_detail(detail)).await;
            if attempts >= actor.max_attempts {
                return Ok((
                    Start::Exhausted { attempts, reason: format!("gave up after {attempts} attempts: {error}") },
                    None,
                ));
            }
        } else if attempts >= actor.max_attempts {
            return Ok((Start::Exhausted { attempts, reason: format!("gave up after {attempts} attempts") }, None));
        }
        let attempt = attempts + 1;
        self.in_flight.set_started(&msg.receipt.0, found.record.clone());
        let started = AuditEntry::new(event_id, now, Step::Started, &actor.name).with_detail(serde_json::json!({
            "attempt": attempt, "receive": msg.receive_count, "kind": msg.envelope.kind(),
        }));
        Ok((Start::Run { attempt, replay }, Some(started)))
    }

    /// Starts messages (one `BatchGetItem`, one `BatchWriteItem` of `started` lines). The lines must be stored
    /// before a handler runs: they are how the next start knows that an attempt was made.
    async fn start_all(&self, messages: &[&ReceivedMessage], actor: &Actor) -> Result<Vec<Start>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.find(messages).await?;
        let mut starts = Vec::with_capacity(messages.len());
        let mut lines = Vec::new();
        for (msg, found) in messages.iter().zip(found) {
            let (start, line) = self.decide(msg, found, actor).await?;
            starts.push(start);
            lines.extend(line);
        }
        if !lines.is_empty() {
            self.append(lines).await?;
        }
        Ok(starts)
    }

    /// `DONE` or `DEAD` with the outcome, creating the record if its claim expired meanwhile: a record that is
    /// gone, or still stored but past its expiry (DynamoDB deletes expired items lazily), starts a horizon from now.
    async fn finish_record(
        &self,
        msg: &ReceivedMessage,
        status: Status,
        outcome: &str,
        horizon: Duration,
    ) -> Result<()> {
        const KEEP: &str = "SET #s = :status, outcome = :outcome, last_seen = :now, event_id = if_not_exists(event_id, :e), \
             sender_id = if_not_exists(sender_id, :sid), first_seen = if_not_exists(first_seen, :now), duplicate_count = if_not_exists(duplicate_count, :zero), \
             expires_at = if_not_exists(expires_at, :exp), #t = if_not_exists(#t, :ttl) REMOVE lease_until";
        const FRESH: &str = "SET #s = :status, outcome = :outcome, last_seen = :now, event_id = :e, sender_id = :sid, \
             first_seen = :now, duplicate_count = :zero, expires_at = :exp, #t = :ttl REMOVE lease_until";
        let now = self.now();
        let expires = now.plus(horizon);
        let update = |expression: &str| {
            self.clients
                .dynamodb
                .update_item()
                .table_name(&self.names.idempotency_table)
                .key("key", s(msg.envelope.idempotency_key().as_str()))
                .update_expression(expression)
                .expression_attribute_names("#s", "status")
                .expression_attribute_names("#t", "ttl")
                .expression_attribute_values(":status", s(status.as_str()))
                .expression_attribute_values(":outcome", s(outcome))
                .expression_attribute_values(":now", ts(now))
                .expression_attribute_values(":e", s(msg.envelope.event_id().to_string()))
                .expression_attribute_values(":sid", s(msg.envelope.idempotency_key().sender_id()))
                .expression_attribute_values(":zero", n(0))
                .expression_attribute_values(":exp", ts(expires))
                .expression_attribute_values(":ttl", ttl(expires))
        };
        let kept =
            update(KEEP).condition_expression("attribute_not_exists(expires_at) OR expires_at > :now").send().await;
        match kept {
            Ok(_) => Ok(()),
            // Stored but expired: written as a record of this delivery, for a horizon from now.
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
                update(FRESH).send().await.map_err(|e| unavailable("UpdateItem idempotency", e))?;
                Ok(())
            }
            Err(e) => Err(unavailable("UpdateItem idempotency", e)),
        }
    }
}

impl AwsStore {
    /// Deletes the finished messages of the chain before `message`, left to its delivery, which ends other than
    /// in a success (a retry, a dead letter, a release or a deferral).
    async fn delete_left(&self, message: &ReceivedMessage) {
        let receipts = self.in_flight.take_deletes(&message.receipt.0);
        if !receipts.is_empty() {
            self.delete_done(receipts).await;
        }
    }

    /// Deletes messages whose records say `DONE`, together; one that fails is only logged: its redelivery finds
    /// `DONE` and is skipped.
    pub(in crate::aws) async fn delete_done(&self, receipts: Vec<String>) {
        for (receipt, result) in receipts.iter().zip(self.deletes.submit_all(receipts.clone()).await) {
            self.in_flight.forget(receipt);
            match result {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "could not delete a finished message; its redelivery is skipped")
                }
                None => tracing::warn!("could not delete a finished message (the delete batcher stopped)"),
            }
        }
    }
}

/// The `DONE` record of a delivery whose start read `record` (absent: its claim expired before it ran). A plain
/// put: a duplicate counted by the ingress between the start and this put is not added to the count (its
/// `duplicate` line stands in the trail).
fn done_item(
    record: Option<&IdempotencyRecord>,
    msg: &ReceivedMessage,
    outcome: &str,
    now: Timestamp,
    horizon: Duration,
) -> Item {
    let key = msg.envelope.idempotency_key();
    // The horizon runs from the first delivery; a claim that ran out while the handler ran is written as a record
    // of this delivery, for a horizon from now (as the embedded store does), not already expired.
    let mut item = match record.filter(|r| r.expires_at > now) {
        Some(r) => {
            let mut item = new_item(key, Status::Done, r.event_id, r.first_seen, None, r.expires_at);
            item.insert("duplicate_count".into(), n(r.duplicate_count));
            item.insert("last_seen".into(), ts(now));
            item
        }
        None => new_item(key, Status::Done, msg.envelope.event_id(), now, None, now.plus(horizon)),
    };
    item.insert("outcome".into(), s(outcome));
    item
}

#[async_trait]
impl Protocol for AwsStore {
    async fn accept(&self, mut message: OutgoingMessage, horizon: Duration, actor: &str) -> Result<Accepted> {
        // Too large for SQS: refused before anything is written for it.
        check_size(&message)?;
        let key = message.envelope.idempotency_key().clone();
        for _ in 0..3 {
            let now = self.now();
            let event_id = message.envelope.event_id();
            let claim = new_item(&key, Status::Pending, event_id, now, None, now.plus(horizon));
            // Counted as coming to the send batcher until its message is queued there (or the claim is refused).
            let coming = self.claiming.enter();
            match self.write_idempotency(Write::Put(claim), now).await? {
                Conditional::Written(_) => {
                    let sent = self.sends.submit_coming(message.clone(), coming).await;
                    let message_id = sent.unwrap_or_else(|| Err(StorageError::unavailable("send batcher stopped")))?;
                    self.accept_lines(&message, event_id, now, actor).await;
                    return Ok(Accepted::New { event_id, message_id });
                }
                Conditional::Refused(Some(_)) => {}
                // Expired between the two reads: claim again.
                Conditional::Refused(None) => continue,
            }
            drop(coming);
            let count = update(
                &key,
                "SET last_seen = :now ADD duplicate_count :one",
                "attribute_exists(#k)",
                vec![(":one", n(1))],
            );
            let rec = match self.write_idempotency(count, now).await? {
                Conditional::Written(item) => record(&item)?,
                Conditional::Refused(_) => continue,
            };
            if rec.status == Status::Pending {
                // The first delivery may have died before its send: send again under its event id (and the same
                // dedup id), and write its two lines, which land on the same items as the first delivery's.
                message.envelope.set_event_id(rec.event_id);
                self.send_one(message.clone()).await?;
                self.accept_lines(&message, rec.event_id, rec.first_seen, actor).await;
            }
            let detail = serde_json::json!({ "status": rec.status, "duplicate_count": rec.duplicate_count });
            self.line(AuditEntry::new(rec.event_id, now, Step::Duplicate, actor).with_detail(detail)).await;
            return Ok(Accepted::Duplicate { event_id: rec.event_id, status: rec.status });
        }
        Err(StorageError::unavailable(format!("accept of {key} kept racing with its expiry")))
    }

    async fn receive(&self, max: usize, wait: Duration, actor: &Actor) -> Result<Vec<Delivery>> {
        let messages = Queue::receive(self, max, actor.visibility, wait).await?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        // One read for every message of the receive. SQS hands out several messages of one group: only the first
        // of each starts now; the others keep their records for their own start, unless a message before them
        // has the same key (a copy of one event), whose record that one's outcome changes.
        let all: Vec<&ReceivedMessage> = messages.iter().collect();
        let found = self.find(&all).await?;
        let mut seen_groups = std::collections::HashSet::new();
        let mut seen_keys = std::collections::HashSet::new();
        let mut starts = Vec::with_capacity(messages.len());
        let mut lines = Vec::new();
        for (msg, found) in messages.iter().zip(found) {
            let key = msg.envelope.idempotency_key().as_str();
            let head = seen_groups.insert(msg.group.as_str());
            let repeated = !seen_keys.insert(key);
            if head {
                let (start, line) = self.decide(msg, found, actor).await?;
                starts.push(start);
                lines.extend(line);
            } else {
                if !repeated {
                    self.in_flight.prefetch(&msg.receipt.0, found);
                }
                starts.push(Start::Waiting);
            }
        }
        if !lines.is_empty() {
            self.append(lines).await?;
        }
        Ok(messages.into_iter().zip(starts).map(|(message, start)| Delivery { message, start }).collect())
    }

    async fn start(&self, message: &ReceivedMessage, actor: &Actor) -> Result<Start> {
        self.keep_visible(message, actor).await?;
        let Some(found) = self.in_flight.take_prefetched(&message.receipt.0) else {
            let mut starts = self.start_all(&[message], actor).await?;
            return starts.pop().ok_or_else(|| StorageError::unavailable("start decided nothing"));
        };
        let (start, line) = self.decide(message, found, actor).await?;
        if let Some(line) = line {
            self.append(vec![line]).await?;
        }
        Ok(start)
    }

    async fn succeed(&self, message: &ReceivedMessage, attempt: u32, outcome: &str, actor: &Actor) -> Result<()> {
        self.succeed_with(message, attempt, outcome, actor, Vec::new(), None).await
    }

    async fn succeed_and_start(
        &self,
        message: &ReceivedMessage,
        attempt: u32,
        outcome: &str,
        next: &ReceivedMessage,
        actor: &Actor,
    ) -> Result<Start> {
        let prefetched = self.in_flight.take_prefetched(&next.receipt.0);
        let decided = match prefetched {
            Some(found) => match self.keep_visible(next, actor).await {
                Ok(()) => self.decide(next, found, actor).await,
                Err(e) => Err(e),
            },
            None => Err(StorageError::NotFound("no records read for the next message".into())),
        };
        // The success stands whatever the start meets: without a decision, the caller starts `next` itself.
        let Ok((start, line)) = decided else {
            self.succeed(message, attempt, outcome, actor).await?;
            return Ok(Start::Waiting);
        };
        // The next message's `started` line rides in the same `BatchWriteItem` as this one's DONE and line. When
        // it runs, this one's delete waits for the end of the chain.
        let then = matches!(start, Start::Run { .. }).then_some(next);
        self.succeed_with(message, attempt, outcome, actor, line.into_iter().collect(), then).await?;
        Ok(start)
    }
    async fn retry(&self, message: &ReceivedMessage, failure: &Failure, delay: Duration, actor: &Actor) -> Result<()> {
        self.delete_left(message).await;
        let now = self.now();
        let mut record = failure.record(message, now);
        record.next_attempt_at = Some(now.plus(delay));
        self.upsert(&record).await?;
        self.change_visibility(&message.receipt, delay).await?;
        let detail = serde_json::json!({
            "attempt": failure.attempt, "error": failure.error, "class": failure.class,
            "delay_ms": delay.as_millis() as u64,
        });
        self.line(
            AuditEntry::new(message.envelope.event_id(), now, Step::RetryScheduled, &actor.name).with_detail(detail),
        )
        .await;
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        failure: &Failure,
        reason: &str,
        actor: &Actor,
    ) -> Result<()> {
        self.delete_left(message).await;
        let now = self.now();
        let mut record = failure.record(message, now);
        record.status = RetryStatus::Dead;
        record.dead_reason = Some(reason.to_owned());
        let (recorded, marked) =
            tokio::join!(self.upsert(&record), self.finish_record(message, Status::Dead, reason, actor.horizon));
        recorded?;
        marked?;
        self.move_to_dlq(&message.receipt, reason).await?;
        let detail = crate::protocol::with_replay(
            serde_json::json!({ "attempt": failure.attempt, "reason": reason, "class": failure.class }),
            message,
        );
        self.line(
            AuditEntry::new(message.envelope.event_id(), now, Step::DeadLettered, &actor.name).with_detail(detail),
        )
        .await;
        Ok(())
    }

    async fn release(&self, message: &ReceivedMessage, started: bool, actor: &Actor) -> Result<()> {
        self.delete_left(message).await;
        // The line first: a worker receiving the message the moment it is visible must find its start undone,
        // or it would count an attempt that never ran.
        if started {
            self.append(vec![AuditEntry::new(message.envelope.event_id(), self.now(), Step::Released, &actor.name)])
                .await?;
        }
        self.change_visibility(&message.receipt, Duration::ZERO).await
    }

    async fn defer(&self, message: &ReceivedMessage, delay: Duration, reason: &str, actor: &Actor) -> Result<()> {
        self.delete_left(message).await;
        // As `release`: the line first, so a start that sees the message again finds the attempt undone.
        let detail = serde_json::json!({ "delay_ms": delay.as_millis() as u64, "reason": reason });
        let line = AuditEntry::new(message.envelope.event_id(), self.now(), Step::Deferred, &actor.name);
        self.append(vec![line.with_detail(detail)]).await?;
        self.change_visibility(&message.receipt, delay).await
    }
}

impl AwsStore {
    /// The success step, with more lines to write in the same batch (the next message's `started` line), and the
    /// message after it in its group's chain when that one runs next (`then`): the delete is left to it.
    async fn succeed_with(
        &self,
        message: &ReceivedMessage,
        attempt: u32,
        outcome: &str,
        actor: &Actor,
        extra: Vec<AuditEntry>,
        then: Option<&ReceivedMessage>,
    ) -> Result<()> {
        let now = self.now();
        let event_id = message.envelope.event_id();
        let detail =
            crate::protocol::with_replay(serde_json::json!({ "outcome": outcome, "attempt": attempt }), message);
        let succeeded = AuditEntry::new(event_id, now, Step::Succeeded, &actor.name).with_detail(detail);
        let recorded: Result<bool> = async {
            // A retry record to resolve exists after a failed attempt, or when a replay reopened it.
            let mut resolve = attempt > 1;
            match self.in_flight.started(&message.receipt.0) {
                // The start read the record: DONE is a plain put of it, and shares one `BatchWriteItem` with its line
                // and with whatever else finishes meanwhile.
                Some(record) => {
                    resolve |= record.as_ref().is_some_and(|r| r.outcome.is_some());
                    let done = done_item(record.as_ref(), message, outcome, now, actor.horizon);
                    let mut items = vec![
                        (self.names.idempotency_table.clone(), done),
                        (self.names.audit_table.clone(), self.audit_item(&succeeded)),
                    ];
                    items.extend(extra.iter().map(|e| (self.names.audit_table.clone(), self.audit_item(e))));
                    let mut results = self.puts.submit_all(items).await.into_iter();
                    results.next().flatten().unwrap_or_else(|| Err(StorageError::unavailable("put writer stopped")))?;
                    match results.next().flatten() {
                        Some(Ok(())) => {}
                        Some(Err(e)) => tracing::warn!(error = %e, %event_id, "could not write the succeeded line"),
                        None => tracing::warn!(%event_id, "could not write the succeeded line: the put writer stopped"),
                    }
                    // The next message's start needs its line stored before its handler runs.
                    for result in results {
                        result.unwrap_or_else(|| Err(StorageError::unavailable("put writer stopped")))?;
                    }
                }
                None => {
                    resolve |= message.receive_count > 1;
                    self.finish_record(message, Status::Done, outcome, actor.horizon).await?;
                    self.line(succeeded).await;
                    if !extra.is_empty() {
                        self.append(extra).await?;
                    }
                }
            }
            Ok(resolve)
        }
        .await;
        // The deletes left to this one are of messages already `DONE`: they go whatever became of this step.
        let resolve = match recorded {
            Ok(resolve) => resolve,
            Err(e) => {
                self.delete_left(message).await;
                return Err(e);
            }
        };
        // DONE is the decision; a lost delete costs a redelivery that finds DONE and is skipped. SQS hands out
        // none of a group's messages while one of them is in flight, so a chain's done messages wait for the last
        // one's delete at no cost to the group, and go with it in one `DeleteMessageBatch`.
        // Left only while its visibility has half its time to run: a renewal of the next one's visibility (its
        // heartbeat, every third of it) deletes what was left to it (`Queue::change_visibility`), so a left receipt
        // normally deletes before it runs out; one that does not (a success step slower than the margin) fails,
        // and its message comes back to be skipped as `DONE`.
        let now_due = match then {
            Some(next) => self.in_flight.leave_delete(&message.receipt.0, &next.receipt.0, actor.visibility / 2),
            None => {
                let mut receipts = vec![message.receipt.0.clone()];
                receipts.append(&mut self.in_flight.take_deletes(&message.receipt.0));
                receipts
            }
        };
        if !now_due.is_empty() {
            self.delete_done(now_due).await;
        }
        if resolve {
            self.resolve_retry(event_id).await;
        }
        Ok(())
    }
}
