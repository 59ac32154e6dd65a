//! The queue port: FIFO with message groups, deduplication, visibility timeouts and receive counts, after SQS
//! FIFO.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{DedupId, Envelope, Timestamp};
use serde::{Deserialize, Serialize};

use crate::Result;

/// A queue message id, assigned by the queue.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub String);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Receives after which the queue itself moves a message to the DLQ, unless configured otherwise (SQS
/// `maxReceiveCount`): the one default of both backends, the workers and `EVENTFLEET_MAX_RECEIVE_COUNT`. Terraform's
/// redrive policy is checked against the value the binary reports.
pub const DEFAULT_MAX_RECEIVE_COUNT: u32 = 50;

/// The most messages one [`Queue::receive`] takes (SQS's limit, kept by both backends).
pub const MAX_RECEIVE: usize = 10;

/// Proof of one receive of a message; needed to delete it or change its visibility. Only the latest receipt of
/// a message is valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReceiptHandle(pub String);

/// A message to send.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The event.
    pub envelope: Envelope,
    /// FIFO message group: strict order and one message in flight per group.
    pub group: String,
    /// A resend with the same id inside the dedup window is dropped.
    pub dedup_id: DedupId,
    /// Message attributes (the W3C `traceparent`, ...).
    pub attributes: BTreeMap<String, String>,
}

impl OutgoingMessage {
    /// The first delivery of an event: its group from the envelope, its dedup id from its idempotency key, so a
    /// second ingress enqueueing the same key is harmless.
    pub fn first_delivery(envelope: Envelope) -> Self {
        Self {
            group: envelope.message_group().to_owned(),
            dedup_id: envelope.idempotency_key().dedup_id(),
            envelope,
            attributes: BTreeMap::new(),
        }
    }
}

/// A received message, invisible to other consumers until its visibility timeout runs out.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    /// The queue's id for it.
    pub message_id: MessageId,
    /// This receive's receipt.
    pub receipt: ReceiptHandle,
    /// The event.
    pub envelope: Envelope,
    /// The message group.
    pub group: String,
    /// Message attributes.
    pub attributes: BTreeMap<String, String>,
    /// How many times it has been received, this receive included.
    pub receive_count: u32,
    /// When it was sent.
    pub sent_at: Timestamp,
}

/// Depths and ages for operators and autoscaling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    /// Messages waiting (visible or delayed), not in flight.
    pub waiting: u64,
    /// Messages received and not yet deleted or expired.
    pub in_flight: u64,
    /// Age of the oldest message on the queue, in milliseconds.
    pub oldest_age_ms: Option<u64>,
    /// Messages on the dead-letter queue.
    pub dead_letters: u64,
}

/// The FIFO queue.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends messages in one batch. One result per message, in order: a batch can partly fail. A message whose
    /// dedup id was seen inside the window is accepted and dropped (its result is the first message's id).
    async fn send_batch(&self, messages: Vec<OutgoingMessage>) -> Result<Vec<Result<MessageId>>>;

    /// Receives up to `max` messages (1 to 10), hiding them for `visibility`. Waits up to `wait` for a first
    /// message (long poll). Only groups with nothing in flight give messages, oldest first; a receive may give
    /// several of one group (both backends do, when the receive has room), in group order, and the caller must finish
    /// each before it starts the next of its group.
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<ReceivedMessage>>;

    /// Deletes a received message; its group's next message becomes available.
    async fn delete(&self, receipt: &ReceiptHandle) -> Result<()>;

    /// Sets the remaining invisibility of a received message: extends it (heartbeat), schedules a retry, or
    /// releases it at once with zero.
    async fn change_visibility(&self, receipt: &ReceiptHandle, visibility: Duration) -> Result<()>;

    /// Moves a received message to the dead-letter queue with a reason.
    async fn move_to_dlq(&self, receipt: &ReceiptHandle, reason: &str) -> Result<()>;

    /// Depths and the oldest message's age.
    async fn stats(&self) -> Result<QueueStats>;
}
