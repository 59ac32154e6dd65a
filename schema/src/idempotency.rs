//! The `idempotency` table: one record per idempotency key, and the status machine it follows.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{EventId, IdempotencyKey, Timestamp};

/// Where an event is in its life. The legal moves are [`Status::can_become`].
///
/// ```text
/// PENDING ──▶ ENQUEUED ──▶ PROCESSING ──▶ DONE
///    │                     ▲   │  ▲ │      │
///    └─────────────────────┘   │  └─┘      │ (operator replay)
///                 (release) ◀──┘  ──▶ DEAD │
///    ENQUEUED ◀──────────────────────────────┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Claimed by ingress; not yet known to be on the queue.
    Pending,
    /// Durably on the queue; the sender has been (or may be) acknowledged.
    Enqueued,
    /// A worker holds it under a lease.
    Processing,
    /// Handled; further deliveries are skipped.
    Done,
    /// Dead-lettered with a reason; only an operator replay revives it.
    Dead,
}

impl Status {
    /// Every status, for exhaustive tests and docs.
    pub const ALL: [Status; 5] = [Status::Pending, Status::Enqueued, Status::Processing, Status::Done, Status::Dead];

    /// Whether `self → next` is a legal transition.
    ///
    /// - `PENDING → ENQUEUED`: ingress marks after the enqueue.
    /// - `PENDING → PROCESSING`: the ingress died between enqueue and mark; the worker's delivery proves the
    ///   enqueue.
    /// - `ENQUEUED → PROCESSING`: a worker begins.
    /// - `PROCESSING → PROCESSING`: a redelivery takes over an expired lease.
    /// - `PROCESSING → DONE | DEAD`: the handler succeeded, or failed for good.
    /// - `PROCESSING → ENQUEUED`: the worker released it (shutdown, retry scheduled).
    /// - `DONE | DEAD → ENQUEUED`: an operator replay.
    pub fn can_become(self, next: Status) -> bool {
        use Status::*;
        matches!(
            (self, next),
            (Pending, Enqueued)
                | (Pending, Processing)
                | (Enqueued, Processing)
                | (Processing, Processing)
                | (Processing, Done)
                | (Processing, Dead)
                | (Processing, Enqueued)
                | (Done, Enqueued)
                | (Dead, Enqueued)
        )
    }

    /// Whether the sender may be acknowledged as a duplicate: the event is durably queued or further along.
    pub fn is_accepted(self) -> bool {
        !matches!(self, Status::Pending)
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Enqueued => "ENQUEUED",
            Status::Processing => "PROCESSING",
            Status::Done => "DONE",
            Status::Dead => "DEAD",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of the `idempotency` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IdempotencyRecord {
    /// The key.
    pub key: IdempotencyKey,
    /// Where the event is.
    pub status: Status,
    /// The event id ingress gave the first delivery.
    pub event_id: EventId,
    /// First delivery.
    pub first_seen: Timestamp,
    /// Latest delivery or transition.
    pub last_seen: Timestamp,
    /// Deliveries after the first.
    pub duplicate_count: u32,
    /// While `PROCESSING`: until when the worker's lease holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<Timestamp>,
    /// The terminal outcome (`DONE` or `DEAD` reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// When the record expires; after it the key reads as absent (the idempotency horizon).
    pub expires_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_moves_follow_the_protocol() {
        use Status::*;
        assert!(Pending.can_become(Enqueued));
        assert!(Enqueued.can_become(Processing));
        assert!(Processing.can_become(Done));
        assert!(Dead.can_become(Enqueued));
        assert!(!Done.can_become(Processing), "a DONE event is never handled again");
        assert!(!Enqueued.can_become(Pending));
        assert!(!Pending.can_become(Done));
        assert!(!Dead.can_become(Done));
        let legal = Status::ALL
            .iter()
            .flat_map(|a| Status::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.can_become(*b))
            .count();
        assert_eq!(legal, 9);
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Status::parse("done"), None);
    }
}
