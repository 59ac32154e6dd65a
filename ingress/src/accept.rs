//! The idempotency protocol of DESIGN.md: **never acknowledge what is not durable**.
//!
//! claim (`PENDING`) → enqueue → mark `ENQUEUED` → 2xx. A request that finds its key `ENQUEUED` or later is a
//! duplicate: acknowledged, audited, not enqueued. A request that finds it `PENDING` (an earlier attempt died
//! between claim and mark, or is still running) enqueues it itself under the original event id; the queue's
//! dedup id (sha256 of the key) makes the double send harmless. Any backend failure is a 503, so the sender
//! retries.

use std::collections::BTreeMap;

use eventfleet_schema::{AuditEntry, Envelope, EnvelopeV1, EventId, Step};
use eventfleet_storage::{Claim, OutgoingMessage};

use crate::{ApiError, AppState};

/// The answer to an accepted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Accepted {
    /// The event's id (the first delivery's, for duplicates).
    pub event_id: EventId,
    /// Whether this request was a redelivery of an event already queued.
    pub duplicate: bool,
}

/// Runs the protocol for one verified event, within the configured backend budget.
pub async fn accept(
    state: &AppState,
    envelope: EnvelopeV1,
    attributes: BTreeMap<String, String>,
) -> Result<Accepted, ApiError> {
    let budget = state.config.backend_budget;
    match tokio::time::timeout(budget, accept_unbounded(state, envelope, attributes)).await {
        Ok(result) => result,
        // Whatever was written stands: a PENDING claim is finished by the sender's retry.
        Err(_) => Err(ApiError::Unavailable(format!(
            "the event store did not answer within {} ms; retry later",
            budget.as_millis()
        ))),
    }
}

async fn accept_unbounded(
    state: &AppState,
    mut envelope: EnvelopeV1,
    attributes: BTreeMap<String, String>,
) -> Result<Accepted, ApiError> {
    let store = &state.store;
    let actor = state.config.actor.as_str();
    let key = envelope.idempotency_key.clone();
    let claim = store.idempotency.claim(&key, envelope.event_id, state.config.idempotency_horizon).await?;
    let received = AuditEntry::new(envelope.event_id, envelope.received_at, Step::Received, actor)
        .with_detail(serde_json::json!({ "kind": envelope.kind, "source": envelope.source.name() }));
    let mut trail = vec![received];
    match claim {
        Claim::Claimed(_) => {}
        Claim::Existing(record) if record.status.is_accepted() => {
            let entry = AuditEntry::new(record.event_id, store.clock.now(), Step::Duplicate, actor)
                .with_detail(serde_json::json!({ "status": record.status, "duplicate_count": record.duplicate_count }));
            // The duplicate is acknowledged whether or not its audit line lands: the event itself is safe.
            if let Err(e) = store.audit.append(vec![entry]).await {
                tracing::warn!(error = %e, event_id = %record.event_id, "could not audit a duplicate");
            }
            return Ok(Accepted { event_id: record.event_id, duplicate: true });
        }
        Claim::Existing(record) => {
            // PENDING: finish the earlier attempt under its event id. Its `received` line was written then.
            envelope.event_id = record.event_id;
            trail.clear();
        }
    }
    let event_id = envelope.event_id;
    let message = OutgoingMessage { attributes, ..OutgoingMessage::first_delivery(Envelope::V1(envelope)) };
    let dedup_id = message.dedup_id.clone();
    let mut sent = store.queue.send_batch(vec![message]).await?;
    let message_id =
        sent.pop().ok_or_else(|| ApiError::Internal("queue answered no result for one message".into()))??;
    store.idempotency.mark_enqueued(&key).await?;
    trail.push(
        AuditEntry::new(event_id, store.clock.now(), Step::Enqueued, actor)
            .with_detail(serde_json::json!({ "message_id": message_id, "dedup_id": dedup_id })),
    );
    if let Err(e) = store.audit.append(trail).await {
        tracing::warn!(error = %e, %event_id, "could not audit an accepted event");
    }
    Ok(Accepted { event_id, duplicate: false })
}
