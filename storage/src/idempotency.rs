//! The idempotency table: one record per key. The protocol steps ([`crate::Protocol`]) write it; this port reads
//! it for operators and reopens a record for a replay.

use async_trait::async_trait;
use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord};

use crate::Result;

/// At most this many records answer one [`Idempotency::find_by_sender_id`].
pub const SENDER_ID_MATCHES: usize = 20;

/// Idempotency records, one per key, following [`eventfleet_schema::Status::can_become`].
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Reopens a finished record for an operator's replay: `DONE`, `DEAD` or `PROCESSING` (an attempt that
    /// stopped, then dead-lettered by the queue) becomes `ENQUEUED` with `outcome` (who replayed), so the
    /// replayed message runs as a first attempt. Other statuses are left as they are. Returns the record after
    /// the call, `None` when the key has none (past its horizon: the replayed message starts a new one).
    async fn reopen(&self, key: &IdempotencyKey, outcome: &str) -> Result<Option<IdempotencyRecord>>;

    /// The record, unless absent or expired.
    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>>;

    /// The records of many keys at once, in the order asked (`None` where absent or expired): one batched read
    /// per hundred keys on DynamoDB instead of a round trip per key.
    async fn get_many(&self, keys: &[IdempotencyKey]) -> Result<Vec<Option<IdempotencyRecord>>>;

    /// The record of an event id, unless absent or expired (operators look events up either way).
    async fn find_by_event(&self, event_id: EventId) -> Result<Option<IdempotencyRecord>>;
    /// The live records whose key ends in this sender's own id ([`IdempotencyKey::sender_id`]: a Slack
    /// `event_id`, an `X-GitHub-Delivery`, an SNS `MessageId`), newest first, at most [`SENDER_ID_MATCHES`].
    /// Several sources may share an id, so there can be more than one.
    async fn find_by_sender_id(&self, sender_id: &str) -> Result<Vec<IdempotencyRecord>>;
}
