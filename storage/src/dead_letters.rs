//! The dead-letter port: what operators inspect, replay and purge.

use async_trait::async_trait;
use eventfleet_schema::{Envelope, Timestamp};
use serde::{Deserialize, Serialize};

use crate::{MessageId, Result};

/// A message on the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Its id on the DLQ (what `dlq show|replay` take).
    pub message_id: MessageId,
    /// The event.
    pub envelope: Envelope,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Receives on the source queue before it was moved.
    pub receive_count: u32,
    /// When it was moved.
    pub dead_lettered_at: Timestamp,
}

/// Which dead letters to list, replay or purge. Empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Source name (`slack`, `github`, `hook`, `sns`).
    pub source: Option<String>,
    /// Exact kind.
    pub kind: Option<String>,
    /// Case-insensitive substring of the reason.
    pub error: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<Timestamp>,
    /// Dead-lettered before.
    pub until: Option<Timestamp>,
    /// At most this many, oldest first.
    pub limit: Option<usize>,
}

impl DeadLetterFilter {
    /// Whether a dead letter matches (for backends that filter after reading).
    pub fn matches(&self, dl: &DeadLetter) -> bool {
        self.source.as_deref().is_none_or(|s| dl.envelope.source().name() == s)
            && self.kind.as_deref().is_none_or(|k| dl.envelope.kind().as_str() == k)
            && self.error.as_deref().is_none_or(|e| dl.reason.to_lowercase().contains(&e.to_lowercase()))
            && self.since.is_none_or(|t| dl.dead_lettered_at >= t)
            && self.until.is_none_or(|t| dl.dead_lettered_at < t)
    }
}

/// The outcome of redriving one dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redriven {
    /// Its id on the DLQ.
    pub dead_letter: MessageId,
    /// Its new id on the source queue.
    pub requeued_as: MessageId,
}

/// The dead-letter queue.
#[async_trait]
pub trait DeadLetters: Send + Sync {
    /// Dead letters matching the filter, oldest first.
    async fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetter>>;

    /// One dead letter.
    async fn get(&self, id: &MessageId) -> Result<Option<DeadLetter>>;

    /// Moves dead letters back to the tail of their group on the source queue, in the order given, each with a
    /// fresh dedup id and a receive count of zero. An id not on the DLQ is an error for that id only.
    async fn redrive(&self, ids: &[MessageId]) -> Result<Vec<Result<Redriven>>>;

    /// Deletes the dead letters matching the filter; returns how many.
    async fn purge(&self, filter: &DeadLetterFilter) -> Result<u64>;

    /// Deletes these dead letters; ids not on the DLQ are ignored. Returns how many were deleted.
    async fn delete(&self, ids: &[MessageId]) -> Result<u64>;
}
