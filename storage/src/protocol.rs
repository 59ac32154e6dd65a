//! The protocol port: one operation per step of the flow in docs/architecture.md, each done by the backend as one
//! unit of work.
//!
//! The ingress calls [`Protocol::accept`]; the workers [`Protocol::receive`] (which starts the deliveries it
//! returns), then [`Protocol::succeed`], [`Protocol::retry`] or [`Protocol::dead_letter`] for each, and
//! [`Protocol::release`] for what they will not run. A caller never stitches a step together from the table
//! ports, so there is no gap between calls for it to compensate for: the embedded backend does each step in one
//! writer job (one group commit), the aws backend in the fewest requests that keep the guarantees
//! (`docs/architecture.md` lists them with every crash point).

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{ErrorClass, EventId, RetryRecord, RetryStatus, Status, Timestamp};

use crate::{MessageId, OutgoingMessage, ReceivedMessage, Result};

/// The answer to [`Protocol::accept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The first delivery of its key: durably queued, its `received` and `enqueued` lines written.
    New {
        /// The event's id.
        event_id: EventId,
        /// Its message on the queue.
        message_id: MessageId,
    },
    /// A redelivery of a key accepted before: counted and audited (`duplicate`), nothing enqueued anew (or, on
    /// a backend whose earlier attempt may have died before its send, sent again under the same dedup id).
    Duplicate {
        /// The first delivery's event id.
        event_id: EventId,
        /// The record's status.
        status: Status,
    },
}

impl Accepted {
    /// The event's id either way.
    pub fn event_id(&self) -> EventId {
        match self {
            Accepted::New { event_id, .. } | Accepted::Duplicate { event_id, .. } => *event_id,
        }
    }

    /// Whether this was a redelivery.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Accepted::Duplicate { .. })
    }
}

/// Who takes a step and with what limits: a worker's identity and settings, the same for every call it makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The name in audit lines (`ingress:host:pid`, `worker:host:pid`, an operator).
    pub name: String,
    /// How long a received message stays invisible (the heartbeat renews it).
    pub visibility: Duration,
    /// Attempts before an event is dead-lettered (`EVENTFLEET_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// The idempotency horizon of a record a start has to create (its claim expired before the event ran).
    pub horizon: Duration,
}

/// What a delivery's start decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Run the handler: this is attempt `attempt`, and its `started` line is written.
    Run {
        /// 1 for the first attempt (after a replay too).
        attempt: u32,
        /// The event went through `DONE` or `DEAD` before and an operator replayed it.
        replay: bool,
    },
    /// Already `DONE`: the message was deleted and the skip audited; nothing to run.
    Skipped,
    /// Already `DEAD` (a dead-lettering cut short): the message was moved to the dead-letter queue.
    DeadLettered,
    /// The attempts are used up (the last one stopped without an outcome, its worker died): call
    /// [`Protocol::dead_letter`] without running the handler.
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// Why, for the dead letter.
        reason: String,
    },
    /// Not started: a message received behind another of its group (SQS hands out several). Start it with
    /// [`Protocol::start`] once the one before it finished, or give it back with [`Protocol::release`].
    Waiting,
}

/// A received message and what its start decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The message.
    pub message: ReceivedMessage,
    /// The decision.
    pub start: Start,
}

/// A failed attempt, as the worker classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The attempt that failed.
    pub attempt: u32,
    /// What went wrong (or, for a dead letter, the reason).
    pub error: String,
    /// Retryable or permanent.
    pub class: ErrorClass,
}

/// How long retry and dead-letter records are kept.
pub const RETRY_RECORD_TTL: Duration = Duration::from_secs(14 * 24 * 3600);

impl Failure {
    /// The retry record of this failure of `message` at `now`: active, no next attempt yet (both backends write
    /// the same shape).
    pub fn record(&self, message: &ReceivedMessage, now: Timestamp) -> RetryRecord {
        RetryRecord {
            event_id: message.envelope.event_id(),
            idempotency_key: message.envelope.idempotency_key().clone(),
            attempts: self.attempt,
            last_error: self.error.clone(),
            error_class: self.class,
            next_attempt_at: None,
            status: RetryStatus::Active,
            dead_reason: None,
            updated_at: now,
            expires_at: now.plus(RETRY_RECORD_TTL),
        }
    }
}

/// The detail of an event's `received` line, the same on every backend: its kind and source, and the schedule
/// that made a tick.
pub(crate) fn received_detail(envelope: &eventfleet_schema::Envelope) -> serde_json::Value {
    let mut detail = serde_json::json!({ "kind": envelope.kind(), "source": envelope.source().name() });
    if let eventfleet_schema::Source::Schedule { name } = envelope.source() {
        detail["schedule"] = name.as_str().into();
    }
    detail
}

/// A finishing line's detail with the operator's replay its message is a copy for, if any: the event log knows
/// from it that the replay ran, whatever the clocks say ([`crate::event_log::outcome_of`]).
pub(crate) fn with_replay(mut detail: serde_json::Value, message: &ReceivedMessage) -> serde_json::Value {
    if let Some(replay) = message.attributes.get(crate::event_log::REPLAY_ATTRIBUTE) {
        detail["replay"] = replay.as_str().into();
    }
    detail
}

/// The steps of the protocol.
#[async_trait]
pub trait Protocol: Send + Sync {
    /// Accepts a verified event: claims its key, puts the message on the queue and writes its `received` and
    /// `enqueued` lines; or, for a key accepted before, counts and audits the duplicate. Returns only once the
    /// event is durable. Racing identical deliveries make one event with one `received` and one `enqueued` line.
    async fn accept(&self, message: OutgoingMessage, horizon: Duration, actor: &str) -> Result<Accepted>;

    /// Receives up to `max` messages (1 to [`Protocol::max_receive`]), waiting up to `wait` for a first one, and
    /// starts each that can run now (see [`Start`]): the attempt number, the lease and the `started` line in the
    /// same unit of work.
    async fn receive(&self, max: usize, wait: Duration, actor: &Actor) -> Result<Vec<Delivery>>;

    /// The most messages one [`Protocol::receive`] takes: SQS's 10 by default; the embedded store takes more in
    /// one writer job, so a worker with many handler slots fills them in one commit rather than one per ten.
    fn max_receive(&self) -> usize {
        crate::queue::MAX_RECEIVE
    }

    /// Starts a message that [`Protocol::receive`] returned as [`Start::Waiting`].
    async fn start(&self, message: &ReceivedMessage, actor: &Actor) -> Result<Start>;

    /// The handler succeeded: `DONE` with its outcome, the message deleted, the `succeeded` line, the retry
    /// record (if any) resolved.
    async fn succeed(&self, message: &ReceivedMessage, attempt: u32, outcome: &str, actor: &Actor) -> Result<()>;

    /// [`Protocol::succeed`], then [`Protocol::start`] of `next`, the message received behind it in its group, as
    /// one unit of work where the backend can (the embedded store: one writer job), so that a busy group pays one
    /// commit an event rather than two. The success stands whatever the start meets; a start that could not be
    /// made here answers [`Start::Waiting`] and the caller starts `next` itself. When it answers
    /// [`Start::Run`], the caller ends `next`'s delivery with one of the steps (`succeed`, `succeed_and_start`,
    /// `retry`, `dead_letter`, `release`, `defer`): the aws backend leaves `message`'s delete to that step.
    async fn succeed_and_start(
        &self,
        message: &ReceivedMessage,
        attempt: u32,
        outcome: &str,
        next: &ReceivedMessage,
        actor: &Actor,
    ) -> Result<Start> {
        self.succeed(message, attempt, outcome, actor).await?;
        Ok(self.start(next, actor).await.unwrap_or(Start::Waiting))
    }

    /// A retryable failure before the last attempt: the retry record, the event released, the message hidden for
    /// `delay`, the `retry_scheduled` line.
    async fn retry(&self, message: &ReceivedMessage, failure: &Failure, delay: Duration, actor: &Actor) -> Result<()>;

    /// A permanent failure or the last attempt: the dead-letter record, `DEAD` with `reason`, the message moved
    /// to the dead-letter queue, the `dead_lettered` line.
    async fn dead_letter(
        &self,
        message: &ReceivedMessage,
        failure: &Failure,
        reason: &str,
        actor: &Actor,
    ) -> Result<()>;

    /// Gives a message back at once without an attempt: a started one is un-started (its `released` line
    /// says so, and the next start does not count it as a stopped attempt); a waiting one is only made visible.
    async fn release(&self, message: &ReceivedMessage, started: bool, actor: &Actor) -> Result<()>;

    /// Gives a started message back to run again after `delay`, without counting an attempt: the far end asked
    /// to wait (Slack's `Retry-After`) or the handler's pace had no room yet. The `deferred` line says how long
    /// and why; like `released`, the next start does not count it as a stopped attempt. The queue's own receive
    /// limit still counts the receive.
    async fn defer(&self, message: &ReceivedMessage, delay: Duration, reason: &str, actor: &Actor) -> Result<()>;
}
