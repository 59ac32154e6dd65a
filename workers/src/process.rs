//! One delivery of one message: the worker half of the idempotency protocol.
//!
//! `begin` → handler (with a heartbeat and a timeout) → then one of:
//! - success: mark `DONE`, delete the message, audit `succeeded` (a crash between the two is safe: the
//!   redelivery finds `DONE` and is deleted without running the handler again);
//! - retryable failure before the last attempt: retry record, release to `ENQUEUED`, visibility set to the
//!   backoff, audit `retry_scheduled`;
//! - permanent failure or the last attempt: dead-letter record, mark `DEAD`, move to the DLQ, audit
//!   `dead_lettered` (a crash in between: the redelivery finds `DEAD` and finishes the move).

use std::time::Duration;

use eventfleet_schema::{AuditEntry, ErrorClass, RetryRecord, RetryStatus, Status, Step, Timestamp};
use eventfleet_storage::{Begin, ReceivedMessage, StorageError, Store};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::WorkerConfig;
use crate::backoff::retry_delay;
use crate::handler::{HandlerContext, HandlerError, Registry};
use crate::metrics::WorkerMetrics;

/// How long retry and dead-letter records are kept.
const RETRY_RECORD_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

/// How a delivery ended, for counters and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Handled and deleted.
    Succeeded,
    /// Already done: deleted without running the handler.
    SkippedDuplicate,
    /// Failed; scheduled again after the delay.
    RetryScheduled(Duration),
    /// Moved to the dead-letter queue.
    DeadLettered,
    /// Given back unstarted (shutdown) or left to another worker's lease.
    Released,
}

/// Everything a delivery needs.
pub struct Processor {
    /// Storage.
    pub store: Store,
    /// Handlers by kind.
    pub registry: Registry,
    /// Where Slack messages go.
    pub slack: std::sync::Arc<dyn crate::SlackSink>,
    /// Settings.
    pub config: WorkerConfig,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Where a success's last steps run (the delete, its audit line): off the group's path, and waited for by the
    /// pool's drain.
    pub finishing: TaskTracker,
}

impl Disposition {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Disposition::Succeeded => "succeeded",
            Disposition::SkippedDuplicate => "skipped_duplicate",
            Disposition::RetryScheduled(_) => "retry_scheduled",
            Disposition::DeadLettered => "dead_lettered",
            Disposition::Released => "released",
        }
    }
}

impl Processor {
    /// Processes one received message. Storage errors are returned (the message then reappears after its
    /// visibility timeout and is tried again); handler errors are dispositions.
    pub async fn process(
        &self,
        msg: ReceivedMessage,
        shutdown: &CancellationToken,
    ) -> Result<Disposition, StorageError> {
        let env = &msg.envelope;
        let span = tracing::info_span!(
            "worker.process",
            event_id = %env.event_id(),
            key_hash = %env.idempotency_key().log_hash(),
            source = env.source().name(),
            kind = %env.kind(),
            group = %msg.group,
            receive = msg.receive_count,
            attempt = tracing::field::Empty,
        );
        // Join the ingress request's trace: the handler span becomes its descendant.
        if let Some(parent) = remote_context(&msg) {
            let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
        }
        let kind = env.kind().as_str().to_owned();
        let result = tracing::Instrument::instrument(self.process_in_span(msg, shutdown), span).await;
        match &result {
            Ok(d) => self.metrics.count(&kind, d.label()),
            Err(_) => self.metrics.count(&kind, "storage_error"),
        }
        result
    }

    async fn process_in_span(
        &self,
        msg: ReceivedMessage,
        shutdown: &CancellationToken,
    ) -> Result<Disposition, StorageError> {
        let store = &self.store;
        let actor = self.config.actor.as_str();
        let event_id = msg.envelope.event_id();
        let key = msg.envelope.idempotency_key().clone();
        if shutdown.is_cancelled() {
            store.queue.change_visibility(&msg.receipt, Duration::ZERO).await?;
            return Ok(Disposition::Released);
        }
        let (replayed, resumed) = match store.idempotency.begin(&key, event_id, self.config.visibility_timeout).await? {
            // A record with an outcome went through DONE or DEAD before: a replay, whose retry record to resolve.
            Begin::Started { replay, resumed, .. } => (replay, resumed),
            Begin::AlreadyDone(_) => {
                store.queue.delete(&msg.receipt).await?;
                self.audit(AuditEntry::new(event_id, store.clock.now(), Step::DuplicateDeliverySkipped, actor)).await;
                // The success's own finishing steps may have been lost with its worker.
                if msg.receive_count > 1 {
                    resolve_retry_record(store, event_id).await;
                }
                return Ok(Disposition::SkippedDuplicate);
            }
            Begin::Dead(record) => {
                let reason = record.outcome.unwrap_or_else(|| "dead".into());
                store.queue.move_to_dlq(&msg.receipt, &reason).await?;
                return Ok(Disposition::DeadLettered);
            }
            Begin::Busy(record) => {
                let wait = record.lease_until.map_or(self.config.visibility_timeout, |l| l.since(store.clock.now()));
                store.queue.change_visibility(&msg.receipt, wait.max(Duration::from_secs(1))).await?;
                return Ok(Disposition::Released);
            }
        };
        let attempt = match self.before_handler(&msg, replayed, resumed).await {
            Ok(Ok(attempt)) => attempt,
            Ok(Err(done)) => return Ok(done),
            Err(e) => {
                // Give the lease back, so that the redelivery does not count an attempt whose handler never ran.
                if let Err(release) = store.idempotency.transition(&key, Status::Enqueued, None).await {
                    tracing::warn!(error = %release, "could not release the event after a storage error");
                }
                return Err(e);
            }
        };
        tracing::Span::current().record("attempt", attempt);
        // Written before the handler runs, so that an attempt whose worker dies still shows in the trail (a
        // duplicate Slack post is then explained by two `started` lines).
        self.audit(AuditEntry::new(event_id, store.clock.now(), Step::Started, actor).with_detail(serde_json::json!({
            "attempt": attempt,
            "receive": msg.receive_count,
            "kind": msg.envelope.kind(),
        })))
        .await;

        let outcome = self.run_handler(&msg, attempt).await;
        match outcome {
            Ok(outcome) => {
                // DONE first, with the heartbeat still running so a slow store cannot let the message reappear
                // while it is recorded. Only then the `succeeded` line: the ledger, not the audit trail, decides
                // whether the handler runs again, so a line must never claim a success the ledger lacks. (A crash
                // between the two leaves a DONE event without its line; `events show` shows the status.)
                tokio::select! {
                    done = self.mark_done(&key, &outcome) => done?,
                    never = self.heartbeat(&msg) => match never {},
                }
                let succeeded = AuditEntry::new(event_id, store.clock.now(), Step::Succeeded, actor)
                    .with_detail(serde_json::json!({ "outcome": outcome, "attempt": attempt }));
                let age = store.clock.now().since(msg.envelope.received_at());
                self.metrics.observe_age(age);
                tracing::info!(%outcome, age_ms = age.as_millis() as u64, "succeeded");
                // DONE is recorded, so the rest can wait a moment: the next message of the group starts now, and
                // the delete and the line share batches with other events'. If the delete is lost, the redelivery
                // finds DONE and is deleted without running the handler.
                let resolve = (attempt > 1 || replayed).then_some(event_id);
                let (store, receipt) = (store.clone(), msg.receipt.clone());
                self.finishing.spawn(tracing::Instrument::in_current_span(async move {
                    let (deleted, audited) = tokio::join!(store.queue.delete(&receipt), store.audit.append(vec![succeeded]));
                    if let Err(e) = deleted {
                        tracing::warn!(error = %e, %event_id, "could not delete a finished message; its redelivery is skipped");
                    }
                    if let Err(e) = audited {
                        tracing::warn!(error = %e, %event_id, "could not write an audit line");
                    }
                    if let Some(event_id) = resolve {
                        resolve_retry_record(&store, event_id).await;
                    }
                }));
                Ok(Disposition::Succeeded)
            }
            Err(err) => self.fail(&msg, attempt, err).await,
        }
    }

    /// Decides this delivery's attempt number from the retry record (`Ok(Ok(n))`), or ends the delivery before
    /// the handler (`Ok(Err(disposition))`): a dead-letter decision cut short is finished, and a stopped attempt
    /// that was the last one dead-letters the event.
    async fn before_handler(
        &self,
        msg: &ReceivedMessage,
        replayed: bool,
        resumed: bool,
    ) -> Result<Result<u32, Disposition>, StorageError> {
        let mut attempt = 1;
        if let Some(record) = self.retry_record(msg, replayed, resumed).await? {
            // A replay reopens the retry record before the redrive, so a DEAD one here means an attempt decided to
            // dead-letter and stopped before marking DEAD: finish that, with its reason.
            if record.status == RetryStatus::Dead {
                let reason = record.dead_reason.clone().unwrap_or_else(|| record.last_error.clone());
                let key = msg.envelope.idempotency_key();
                self.store.idempotency.transition(key, Status::Dead, Some(&reason)).await?;
                self.store.queue.move_to_dlq(&msg.receipt, &reason).await?;
                self.announce_dead(msg, record.attempts, &reason, record.error_class).await;
                return Ok(Err(Disposition::DeadLettered));
            }
            attempt = record.attempts.saturating_add(1);
        }
        if resumed {
            // The attempt before this one stopped without an outcome (its worker died, or lost its lease): it
            // counts, so that a handler that kills its worker is dead-lettered after the same attempts as one
            // that fails.
            let stopped = HandlerError::retryable(format!(
                "attempt {attempt} stopped without an outcome (its worker died or lost its lease)"
            ));
            if attempt >= self.config.max_attempts {
                tracing::Span::current().record("attempt", attempt);
                return self.fail(msg, attempt, stopped).await.map(Err);
            }
            self.record_stopped(msg, attempt, &stopped).await?;
            attempt += 1;
        }
        Ok(Ok(attempt))
    }

    /// The event's retry record, which counts its attempts (a replay resets it); a first receive has none, so
    /// needs no read. SQS's receive count is not used for attempts: it also counts receives of a message that
    /// waited, untried, behind a failing message of its group.
    async fn retry_record(
        &self,
        msg: &ReceivedMessage,
        replayed: bool,
        resumed: bool,
    ) -> Result<Option<RetryRecord>, StorageError> {
        if msg.receive_count <= 1 && !replayed && !resumed {
            return Ok(None);
        }
        self.store.retries.get(msg.envelope.event_id()).await
    }

    /// Records an attempt that stopped without an outcome, as a retryable failure.
    async fn record_stopped(
        &self,
        msg: &ReceivedMessage,
        attempt: u32,
        err: &HandlerError,
    ) -> Result<(), StorageError> {
        let now = self.store.clock.now();
        let event_id = msg.envelope.event_id();
        tracing::warn!(attempt, "the previous attempt stopped without an outcome; counted as a failure");
        self.store.retries.upsert(&failure_record(msg, attempt, err, now)).await?;
        self.audit(AuditEntry::new(event_id, now, Step::RetryScheduled, &self.config.actor).with_detail(
            serde_json::json!({ "attempt": attempt, "error": err.to_string(), "class": err.class(), "delay_ms": 0 }),
        ))
        .await;
        Ok(())
    }

    /// Records DONE after the side effect happened. A transient store error is retried a few times before giving
    /// up: giving up lets the message reappear and the handler run again.
    async fn mark_done(&self, key: &eventfleet_schema::IdempotencyKey, outcome: &str) -> Result<(), StorageError> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..4 {
            match self.store.idempotency.complete(key, outcome).await {
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "marking DONE failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other,
            }
        }
        self.store.idempotency.complete(key, outcome).await
    }

    /// Runs the handler under its timeout while a heartbeat keeps the message invisible.
    async fn run_handler(&self, msg: &ReceivedMessage, attempt: u32) -> Result<String, HandlerError> {
        let ctx = HandlerContext { store: self.store.clone(), slack: self.slack.clone(), attempt };
        let kind = msg.envelope.kind().as_str();
        let handler = self.registry.for_kind(kind);
        let span = tracing::info_span!("worker.handle", kind);
        let work = tokio::time::timeout(
            self.config.handler_timeout,
            tracing::Instrument::instrument(handler.handle(&ctx, &msg.envelope), span),
        );
        let heartbeat = self.heartbeat(msg);
        self.metrics.in_flight.inc();
        let started = std::time::Instant::now();
        let result = tokio::select! {
            result = work => result.unwrap_or_else(|_| Err(HandlerError::retryable(format!(
                "handler timed out after {} ms", self.config.handler_timeout.as_millis()
            )))),
            never = heartbeat => match never {},
        };
        self.metrics.in_flight.dec();
        self.metrics.observe_handler(kind, started.elapsed());
        result
    }

    /// Extends the message's visibility every third of the timeout, for as long as it is polled.
    async fn heartbeat(&self, msg: &ReceivedMessage) -> std::convert::Infallible {
        let every = self.config.visibility_timeout / 3;
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.store.queue.change_visibility(&msg.receipt, self.config.visibility_timeout).await {
                tracing::warn!(error = %e, event_id = %msg.envelope.event_id(), "heartbeat failed");
            }
        }
    }

    async fn fail(&self, msg: &ReceivedMessage, attempt: u32, err: HandlerError) -> Result<Disposition, StorageError> {
        let store = &self.store;
        let actor = self.config.actor.as_str();
        let event_id = msg.envelope.event_id();
        let key = msg.envelope.idempotency_key().clone();
        let now = store.clock.now();
        // At the queue's own limit the next receive would move the message without our records: finish it here.
        let last_attempt = attempt >= self.config.max_attempts || msg.receive_count >= self.config.max_receive_count;
        let mut record = failure_record(msg, attempt, &err, now);
        if let (HandlerError::Retryable { retry_after, .. }, false) = (&err, last_attempt) {
            let jittered = retry_delay(self.config.retry_base_delay, self.config.retry_max_delay, attempt);
            let delay = retry_after.map_or(jittered, |hint| jittered.max(hint));
            record.next_attempt_at = Some(now.plus(delay));
            // The release first: a stop between the two then loses this failure from the count (one attempt
            // more) rather than counting it twice (the next `begin` would also find the lease stopped).
            store.idempotency.transition(&key, Status::Enqueued, None).await?;
            store.retries.upsert(&record).await?;
            store.queue.change_visibility(&msg.receipt, delay).await?;
            self.metrics.retries.get_or_create(&WorkerMetrics::kind(msg.envelope.kind().as_str())).inc();
            tracing::info!(error = %record.last_error, delay_ms = delay.as_millis() as u64, "retry scheduled");
            let line = AuditEntry::new(event_id, now, Step::RetryScheduled, actor).with_detail(serde_json::json!({
                "attempt": attempt,
                "error": record.last_error,
                "class": ErrorClass::Retryable,
                "delay_ms": delay.as_millis() as u64,
            }));
            self.audit(line).await;
            return Ok(Disposition::RetryScheduled(delay));
        }
        let reason = match &err {
            HandlerError::Permanent(m) => m.clone(),
            HandlerError::Retryable { message, .. } => {
                format!("gave up after {attempt} attempts: {message}")
            }
        };
        record.status = RetryStatus::Dead;
        record.dead_reason = Some(reason.clone());
        store.retries.upsert(&record).await?;
        store.idempotency.transition(&key, Status::Dead, Some(&reason)).await?;
        store.queue.move_to_dlq(&msg.receipt, &reason).await?;
        self.announce_dead(msg, attempt, &reason, err.class()).await;
        Ok(Disposition::DeadLettered)
    }

    /// What follows a move to the DLQ: the metric, the ops notice and the `dead_lettered` line.
    async fn announce_dead(&self, msg: &ReceivedMessage, attempt: u32, reason: &str, class: ErrorClass) {
        let event_id = msg.envelope.event_id();
        self.metrics.dead_letters.get_or_create(&WorkerMetrics::kind(msg.envelope.kind().as_str())).inc();
        tracing::warn!(%reason, "dead-lettered");
        if let Some(notifier) = self.registry.dead_letter_notifier() {
            let notice = crate::handler::DeadLetterNotice {
                event_id: event_id.to_string(),
                kind: msg.envelope.kind().as_str().to_owned(),
                source: msg.envelope.source().name().to_owned(),
                reason: reason.to_owned(),
                attempts: attempt,
            };
            if let Err(e) = notifier.dead_lettered(&notice).await {
                tracing::warn!(error = %e, "could not send the dead-letter notice");
            }
        }
        let line = AuditEntry::new(event_id, self.store.clock.now(), Step::DeadLettered, &self.config.actor)
            .with_detail(serde_json::json!({ "attempt": attempt, "reason": reason, "class": class }));
        self.audit(line).await;
    }

    /// Audit lines never fail a delivery: the event's state lives in the idempotency record and the queue.
    async fn audit(&self, entry: AuditEntry) {
        let event_id = entry.event_id;
        if let Err(e) = self.store.audit.append(vec![entry]).await {
            tracing::warn!(error = %e, %event_id, "could not write an audit line");
        }
    }
}

/// The retry record of a failed `attempt`: active, no next attempt yet.
fn failure_record(msg: &ReceivedMessage, attempt: u32, err: &HandlerError, now: Timestamp) -> RetryRecord {
    RetryRecord {
        event_id: msg.envelope.event_id(),
        idempotency_key: msg.envelope.idempotency_key().clone(),
        attempts: attempt,
        last_error: err.to_string(),
        error_class: err.class(),
        next_attempt_at: None,
        status: RetryStatus::Active,
        dead_reason: None,
        updated_at: now,
        expires_at: now.plus(RETRY_RECORD_TTL),
    }
}

async fn resolve_retry_record(store: &Store, event_id: eventfleet_schema::EventId) {
    match store.retries.get(event_id).await {
        Ok(Some(mut record)) => {
            record.status = RetryStatus::Resolved;
            record.next_attempt_at = None;
            record.updated_at = store.clock.now();
            if let Err(e) = store.retries.upsert(&record).await {
                tracing::warn!(error = %e, %event_id, "could not resolve the retry record");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, %event_id, "could not read the retry record"),
    }
}

/// The trace context a message carries in its attributes (injected by the ingress).
fn remote_context(msg: &ReceivedMessage) -> Option<opentelemetry::Context> {
    msg.attributes.get("traceparent")?;
    let cx = opentelemetry::propagation::TextMapPropagator::extract(
        &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        &msg.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::HashMap<_, _>>(),
    );
    opentelemetry::trace::TraceContextExt::span(&cx).span_context().is_valid().then_some(cx)
}
