//! One delivery of one message: the worker half of the protocol (docs/architecture.md, "The protocol, step by
//! step"), one store step at a time.
//!
//! The receive started the delivery (attempt number, lease, `started` line) → the handler (with a heartbeat and a
//! timeout) → then one step of [`eventfleet_storage::Protocol`]:
//! - success: `succeed` (`DONE`, delete, `succeeded`);
//! - retryable failure before the last attempt: `retry` (retry record, release, backoff, `retry_scheduled`);
//! - permanent failure or the last attempt: `dead_letter` (dead-letter record, `DEAD`, the move to the DLQ,
//!   `dead_lettered`), then the ops notice.
//!
//! The store decides what a start means (already done, a dead-lettering to finish, attempts used up), so the
//! worker has no gaps between calls to make up for.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use eventfleet_schema::ErrorClass;
use eventfleet_storage::{Actor, Delivery, Failure, ReceivedMessage, Start, StorageError, Store};
use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::WorkerConfig;
use crate::backoff::retry_delay;
use crate::digest::Folds;
use crate::handler::{HandlerContext, HandlerError};
use crate::metrics::WorkerMetrics;
use crate::registry::Registry;
use crate::slack::Egress;
use crate::wait::{Ready, Wait};

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
    /// Given back to run after the delay, not as an attempt (Slack's `Retry-After`, a channel's pace).
    Deferred(Duration),
}

/// Everything a delivery needs.
pub struct Processor {
    /// Storage.
    pub store: Store,
    /// Handlers by kind.
    pub registry: Registry,
    /// Slack egress: this process's poster of every delivery.
    pub egress: Egress,
    /// This process's folds into burst digests.
    pub folds: Arc<Folds>,
    /// Settings.
    pub config: WorkerConfig,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Who this worker is to the store's steps (its name, visibility, attempts, horizon).
    pub actor: Actor,
}

/// When a delivery's visibility was last renewed (or its steps began), for the heartbeats of its steps.
struct Renewed(std::sync::Mutex<tokio::time::Instant>);

impl Renewed {
    fn now() -> Self {
        Self(std::sync::Mutex::new(tokio::time::Instant::now()))
    }

    fn last(&self) -> tokio::time::Instant {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, at: tokio::time::Instant) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }
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
            Disposition::Deferred(_) => "deferred",
        }
    }
}

impl Processor {
    /// Runs one delivery to its end. Storage errors are returned (the message then reappears after its
    /// visibility timeout and is tried again); handler errors are dispositions.
    pub async fn process(&self, delivery: Delivery, shutdown: &CancellationToken) -> Result<Disposition, StorageError> {
        self.process_then(delivery, None, &mut crate::slot::Hold::none(), shutdown).await.map(|(d, _)| d)
    }

    /// [`Processor::process`] for a delivery with `next` received behind it in its group: a success also starts
    /// `next` in the same store step, and its start is returned with the disposition.
    pub async fn process_then(
        &self,
        delivery: Delivery,
        next: Option<&ReceivedMessage>,
        hold: &mut crate::slot::Hold,
        shutdown: &CancellationToken,
    ) -> Result<(Disposition, Option<Start>), StorageError> {
        let msg = &delivery.message;
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
        if let Some(parent) = remote_context(msg) {
            let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
        }
        let kind = env.kind().as_str().to_owned();
        let result = tracing::Instrument::instrument(self.process_in_span(delivery, next, hold, shutdown), span).await;
        match &result {
            Ok((d, _)) => self.metrics.count(&kind, d.label()),
            Err(_) => self.metrics.count(&kind, "storage_error"),
        }
        result
    }

    async fn process_in_span(
        &self,
        delivery: Delivery,
        next: Option<&ReceivedMessage>,
        hold: &mut crate::slot::Hold,
        shutdown: &CancellationToken,
    ) -> Result<(Disposition, Option<Start>), StorageError> {
        let Delivery { message: msg, start } = delivery;
        let protocol = &self.store.protocol;
        let actor = &self.actor;
        let start = match start {
            Start::Waiting if shutdown.is_cancelled() => {
                protocol.release(&msg, false, actor).await?;
                return Ok((Disposition::Released, None));
            }
            Start::Waiting => protocol.start(&msg, actor).await?,
            other => other,
        };
        let (attempt, replay) = match start {
            Start::Run { attempt, replay } => (attempt, replay),
            Start::Skipped => return Ok((Disposition::SkippedDuplicate, None)),
            Start::DeadLettered => return Ok((Disposition::DeadLettered, None)),
            Start::Exhausted { attempts, reason } => {
                tracing::Span::current().record("attempt", attempts);
                let failure = Failure { attempt: attempts, error: reason.clone(), class: ErrorClass::Retryable };
                protocol.dead_letter(&msg, &failure, &reason, actor).await?;
                self.announce_dead(&msg, attempts, &reason, ErrorClass::Retryable).await;
                return Ok((Disposition::DeadLettered, None));
            }
            // Not its group's head any more (the one before it is being run again elsewhere): give it back.
            Start::Waiting => {
                protocol.release(&msg, false, actor).await?;
                return Ok((Disposition::Released, None));
            }
        };
        tracing::Span::current().record("attempt", attempt);
        if shutdown.is_cancelled() {
            // Started but not run: given back without counting an attempt.
            protocol.release(&msg, true, actor).await?;
            return Ok((Disposition::Released, None));
        }
        if replay {
            tracing::info!("replayed by an operator");
        }
        // One heartbeat for the handler, the wait for a recording place and the success: each renewal a third of
        // the visibility after the one before, however the steps divide the time.
        let renewed = Renewed::now();
        let handled = self.run_handler(&msg, attempt, replay, &renewed).await;
        // The handler slot goes back before the outcome is recorded ([`crate::slot`]); while every place among the
        // recordings is taken (a slow store) the message keeps its visibility.
        tokio::select! {
            () = hold.handler_returned() => {}
            never = self.heartbeat(&msg, &renewed) => match never {},
        }
        match handled {
            Ok(Ready::Wait(wait)) => self.wait(&msg, attempt, wait).await.map(|d| (d, None)),
            Ok(Ready::Now(outcome)) => {
                // DONE, the delete and the line are one step; the heartbeat keeps running while it is recorded
                // so a slow store cannot let the message reappear meanwhile.
                // The next message of the group starts in the same step, unless shutdown began.
                let next = next.filter(|_| !shutdown.is_cancelled());
                let started = tokio::select! {
                    done = self.succeed(&msg, attempt, &outcome, next) => done?,
                    never = self.heartbeat(&msg, &renewed) => match never {},
                };
                let age = self.store.clock.now().since(msg.envelope.received_at());
                self.metrics.observe_age(age);
                tracing::info!(%outcome, age_ms = age.as_millis() as u64, "succeeded");
                Ok((Disposition::Succeeded, started))
            }
            Err(err) => self.fail(&msg, attempt, err).await.map(|d| (d, None)),
        }
    }

    /// Records the success after the side effect happened. A transient store error is retried a few times before
    /// giving up: giving up lets the message reappear and the handler run again.
    async fn succeed(
        &self,
        msg: &ReceivedMessage,
        attempt: u32,
        outcome: &str,
        next: Option<&ReceivedMessage>,
    ) -> Result<Option<Start>, StorageError> {
        let step = || async move {
            match next {
                Some(next) => {
                    self.store.protocol.succeed_and_start(msg, attempt, outcome, next, &self.actor).await.map(Some)
                }
                None => self.store.protocol.succeed(msg, attempt, outcome, &self.actor).await.map(|()| None),
            }
        };
        step.retry(ExponentialBuilder::default().with_min_delay(Duration::from_millis(50)).with_max_times(4))
            .sleep(tokio::time::sleep)
            .when(StorageError::is_retryable)
            .notify(|e, _| tracing::warn!(error = %e, "recording the success failed; retrying"))
            .await
    }

    /// Runs the handler under its timeout while a heartbeat keeps the message invisible.
    async fn run_handler(
        &self,
        msg: &ReceivedMessage,
        attempt: u32,
        replayed: bool,
        renewed: &Renewed,
    ) -> Result<Ready<String>, HandlerError> {
        // A dead letter replayed runs as attempt 1 but may have posted before it failed: it looks first too.
        let replay =
            crate::replay::Replay::of(&msg.attributes).or_else(|| replayed.then(crate::replay::Replay::dead_letter));
        let ctx = HandlerContext {
            store: self.store.clone(),
            attempt,
            receive: msg.receive_count,
            poster: self.egress.poster(attempt).replaying(replay.clone()),
            folds: self.folds.clone(),
            channel: None,
            replay,
        };
        let kind = msg.envelope.kind().as_str();
        let span = tracing::info_span!("worker.handle", kind);
        // A handler that panics fails its attempt like any other error (retried, then dead-lettered): the panic
        // must not end the chain it runs in, which would leave the group's later messages held until they time out.
        let handled = std::panic::AssertUnwindSafe(self.registry.handle(&ctx, &msg.envelope)).catch_unwind();
        let handled = async move {
            handled.await.unwrap_or_else(|panic| {
                Err(HandlerError::retryable(format!("handler panicked: {}", panic_text(&*panic))))
            })
        };
        let work = tokio::time::timeout(self.config.handler_timeout, tracing::Instrument::instrument(handled, span));
        let heartbeat = self.heartbeat(msg, renewed);
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

    /// Extends the message's visibility a third of the timeout after its last renewal (`renewed`, shared by the
    /// heartbeats of one delivery's steps), for as long as it is polled.
    async fn heartbeat(&self, msg: &ReceivedMessage, renewed: &Renewed) -> std::convert::Infallible {
        let every = self.config.visibility_timeout / 3;
        loop {
            tokio::time::sleep_until(renewed.last() + every).await;
            if let Err(e) = self.store.queue.change_visibility(&msg.receipt, self.config.visibility_timeout).await {
                tracing::warn!(error = %e, event_id = %msg.envelope.event_id(), "heartbeat failed");
            }
            renewed.set(tokio::time::Instant::now());
        }
    }

    /// A handler that has to wait: the event is deferred (hidden for the wait, no attempt counted), unless the
    /// queue's receive limit is reached, where waiting again would let the queue move it without our records.
    async fn wait(&self, msg: &ReceivedMessage, attempt: u32, wait: Wait) -> Result<Disposition, StorageError> {
        if msg.receive_count >= self.config.max_receive_count {
            let reason =
                format!("deferred until the queue's receive limit ({} receives): {}", msg.receive_count, wait.reason);
            let failure = Failure { attempt, error: reason.clone(), class: ErrorClass::Retryable };
            self.store.protocol.dead_letter(msg, &failure, &reason, &self.actor).await?;
            self.announce_dead(msg, attempt, &reason, ErrorClass::Retryable).await;
            return Ok(Disposition::DeadLettered);
        }
        // SQS holds a message for 12 h at most; a wait longer than a few minutes is a pause worth rereading.
        let delay = wait.wait.min(MAX_DEFERRAL);
        self.store.protocol.defer(msg, delay, &wait.reason, &self.actor).await?;
        tracing::info!(reason = %wait.reason, delay_ms = delay.as_millis() as u64, "deferred");
        Ok(Disposition::Deferred(delay))
    }

    /// A failed attempt: retried after a backoff, or dead-lettered when it is permanent or the last one.
    async fn fail(&self, msg: &ReceivedMessage, attempt: u32, err: HandlerError) -> Result<Disposition, StorageError> {
        // At the queue's own limit the next receive would move the message without our records: finish it here.
        let last_receive = msg.receive_count >= self.config.max_receive_count;
        let last_attempt = attempt >= self.config.max_attempts || last_receive;
        let failure = Failure { attempt, error: err.to_string(), class: err.class() };
        if let (HandlerError::Retryable { retry_after, .. }, false) = (&err, last_attempt) {
            let jittered = retry_delay(self.config.retry_base_delay, self.config.retry_max_delay, attempt);
            let delay = retry_after.map_or(jittered, |hint| jittered.max(hint));
            self.store.protocol.retry(msg, &failure, delay, &self.actor).await?;
            self.metrics.retries.get_or_create(&WorkerMetrics::kind(msg.envelope.kind().as_str())).inc();
            tracing::info!(error = %failure.error, delay_ms = delay.as_millis() as u64, "retry scheduled");
            return Ok(Disposition::RetryScheduled(delay));
        }
        let reason = match &err {
            HandlerError::Permanent(m) => m.clone(),
            HandlerError::Retryable { message, .. } => format!("gave up after {attempt} attempts: {message}"),
        };
        self.store.protocol.dead_letter(msg, &failure, &reason, &self.actor).await?;
        self.announce_dead(msg, attempt, &reason, err.class()).await;
        Ok(Disposition::DeadLettered)
    }

    /// What follows a dead-lettering: the metric and the ops notice.
    async fn announce_dead(&self, msg: &ReceivedMessage, attempt: u32, reason: &str, class: ErrorClass) {
        let event_id = msg.envelope.event_id();
        self.metrics.dead_letters.get_or_create(&WorkerMetrics::kind(msg.envelope.kind().as_str())).inc();
        tracing::warn!(%reason, class = class.as_str(), "dead-lettered");
        if let Some(notifier) = self.registry.dead_letter_notifier() {
            let notice = crate::registry::DeadLetterNotice {
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
    }
}

/// The longest a deferral hides a message.
const MAX_DEFERRAL: Duration = Duration::from_secs(15 * 60);

/// The trace context a message carries in its attributes (injected by the ingress).
fn remote_context(msg: &ReceivedMessage) -> Option<opentelemetry::Context> {
    msg.attributes.get("traceparent")?;
    let cx = opentelemetry::propagation::TextMapPropagator::extract(
        &opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        &msg.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<std::collections::HashMap<_, _>>(),
    );
    opentelemetry::trace::TraceContextExt::span(&cx).span_context().is_valid().then_some(cx)
}

/// What a panic said, when it said it with a string (as `panic!` and `expect` do).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
