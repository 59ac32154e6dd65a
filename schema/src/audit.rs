//! The `audit` table: the timeline of every event, append-only.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EventId, Timestamp};

/// A named step in an event's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Ingress verified and claimed it.
    Received,
    /// A later delivery of an accepted event was acknowledged without a second enqueue.
    Duplicate,
    /// Durably on the queue.
    Enqueued,
    /// A worker began its handler.
    Started,
    /// A delivery of an event already done was deleted without running the handler.
    DuplicateDeliverySkipped,
    /// A retryable failure; the next attempt is scheduled.
    RetryScheduled,
    /// The handler succeeded.
    Succeeded,
    /// Moved to the dead-letter queue with a reason.
    DeadLettered,
    /// An operator replayed it from the dead-letter queue.
    Replayed,
    /// A worker gave it back unstarted or unfinished (shutdown).
    Released,
    /// A worker gave it back to run later, not as a failed attempt: Slack asked it to wait (`Retry-After`), or
    /// its channel's posting pace had no slot yet. The detail says how long and why.
    Deferred,
    /// An SNS subscription was confirmed.
    SubscriptionConfirmed,
    /// An SNS unsubscribe confirmation arrived.
    UnsubscribeConfirmed,
    /// The hook's filter kept the delivery from being posted (the detail names the rule).
    Filtered,
    /// An operator deleted its dead letter for good (from the console).
    Purged,
    /// Its post was in a channel's burst digest, posted then (the detail says where).
    Digested,
    /// Its message reached one of its chats (a Teams channel, or the Slack channel beside one): the detail names
    /// the target, so a later run does not post there again.
    Sent,
}

impl Step {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Received => "received",
            Step::Duplicate => "duplicate",
            Step::Enqueued => "enqueued",
            Step::Started => "started",
            Step::DuplicateDeliverySkipped => "duplicate_delivery_skipped",
            Step::RetryScheduled => "retry_scheduled",
            Step::Succeeded => "succeeded",
            Step::DeadLettered => "dead_lettered",
            Step::Replayed => "replayed",
            Step::Released => "released",
            Step::Deferred => "deferred",
            Step::SubscriptionConfirmed => "subscription_confirmed",
            Step::UnsubscribeConfirmed => "unsubscribe_confirmed",
            Step::Filtered => "filtered",
            Step::Purged => "purged",
            Step::Digested => "digested",
            Step::Sent => "sent",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Step> {
        serde_json::from_value(serde_json::Value::String(text.to_owned())).ok()
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of an event's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AuditEntry {
    /// The event.
    pub event_id: EventId,
    /// When.
    pub at: Timestamp,
    /// What happened.
    pub step: Step,
    /// Who did it: `ingress@host`, `worker@host`, an operator's name.
    pub actor: String,
    /// Free-form detail (error text, attempt, dedup id ...). Never secrets or full bodies.
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl AuditEntry {
    /// An entry with no detail.
    pub fn new(event_id: EventId, at: Timestamp, step: Step, actor: impl Into<String>) -> Self {
        Self { event_id, at, step, actor: actor.into(), detail: serde_json::Value::Null }
    }

    /// The same entry with detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_match_serde() {
        for step in [Step::Received, Step::DuplicateDeliverySkipped, Step::RetryScheduled] {
            assert_eq!(serde_json::to_value(step).unwrap(), step.as_str());
            assert_eq!(Step::parse(step.as_str()), Some(step));
        }
        assert_eq!(Step::parse("nope"), None);
    }
}
