//! The idempotency port: the protocol that makes "acknowledged" mean "durably queued, handled once".

use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{EventId, IdempotencyKey, IdempotencyRecord, Status, Timestamp};

use crate::Result;

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request owns the key: a fresh `PENDING` record with the caller's event id.
    Claimed(IdempotencyRecord),
    /// The key was claimed before (its duplicate count now includes this request). `ENQUEUED` or later: answer
    /// as a duplicate; `PENDING`: the earlier attempt died or is running, so enqueue it (again) yourself.
    Existing(IdempotencyRecord),
}

impl Claim {
    /// The record either way.
    pub fn record(&self) -> &IdempotencyRecord {
        match self {
            Claim::Claimed(r) | Claim::Existing(r) => r,
        }
    }
}

/// The answer to a worker's `begin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// Now `PROCESSING` under the caller's lease: run the handler.
    Started {
        /// The lease's end.
        lease_until: Timestamp,
        /// The record went through `DONE` or `DEAD` before: an operator's replay.
        replay: bool,
        /// The record was `PROCESSING` under an expired lease: an earlier attempt stopped (its worker died or lost
        /// its lease) without recording an outcome.
        resumed: bool,
    },
    /// Already `DONE`: delete the message without running the handler.
    AlreadyDone(IdempotencyRecord),
    /// `DEAD`: finish moving it to the dead-letter queue.
    Dead(IdempotencyRecord),
    /// Another worker holds an unexpired lease: leave the message for later.
    Busy(IdempotencyRecord),
}

/// Idempotency records, one per key, following [`Status::can_become`].
#[async_trait]
pub trait Idempotency: Send + Sync {
    /// Claims a key for a new event (`PENDING`, expiring after `horizon`), or reports the existing record and
    /// counts the duplicate. A record past its expiry counts as absent. Exactly one of any number of concurrent
    /// claims of one key gets [`Claim::Claimed`].
    async fn claim(&self, key: &IdempotencyKey, event_id: EventId, horizon: Duration) -> Result<Claim>;

    /// `PENDING → ENQUEUED` once the event is durably queued. A record already `ENQUEUED` or later is left as it
    /// is (another request or a worker got there first). Returns the status after the call.
    async fn mark_enqueued(&self, key: &IdempotencyKey) -> Result<Status>;

    /// A worker's start: see [`Begin`]. A key with no record (claimed before the horizon, or never) is created
    /// `PROCESSING` for `event_id`.
    async fn begin(&self, key: &IdempotencyKey, event_id: EventId, lease: Duration) -> Result<Begin>;

    /// A strict move along the status machine (`DONE`, `DEAD`, release to `ENQUEUED`, replay to `ENQUEUED`),
    /// recording `outcome` when given. Illegal moves are [`crate::StorageError::IllegalTransition`]; a missing
    /// key is [`crate::StorageError::NotFound`].
    async fn transition(&self, key: &IdempotencyKey, to: Status, outcome: Option<&str>) -> Result<IdempotencyRecord>;

    /// `PROCESSING → DONE` with the outcome: [`Idempotency::transition`] without returning the record, so that a
    /// backend may batch it with other writes.
    async fn complete(&self, key: &IdempotencyKey, outcome: &str) -> Result<()> {
        self.transition(key, Status::Done, Some(outcome)).await.map(|_| ())
    }

    /// The record, unless absent or expired.
    async fn get(&self, key: &IdempotencyKey) -> Result<Option<IdempotencyRecord>>;

    /// The record of an event id, unless absent or expired (operators look events up either way).
    async fn find_by_event(&self, event_id: EventId) -> Result<Option<IdempotencyRecord>>;
}
