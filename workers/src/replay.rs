//! Operator replay of dead letters: each one's idempotency record is reset to `ENQUEUED` (so the worker that
//! receives it runs the handler instead of skipping or re-dead-lettering it), the message is moved back to the
//! tail of its group with a fresh dedup id, its retry record is reopened, and the operator is audited.
//! Dead letters are replayed in the order given (oldest first from a listing), which keeps each group's order.

use std::time::Duration;

use eventfleet_schema::{AuditEntry, EventId, RetryStatus, Status, Step};
use eventfleet_storage::{DeadLetter, MessageId, StorageError, Store};
use serde::Serialize;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Who replays (audited).
    pub by: String,
    /// Report what would be replayed, change nothing.
    pub dry_run: bool,
    /// At most this many replays per second.
    pub rate: Option<f64>,
}

/// What happened to one dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayOutcome {
    /// Its id on the DLQ.
    pub dead_letter: MessageId,
    /// The event.
    pub event_id: EventId,
    /// Its new id on the queue (`None` on a dry run or a failure).
    pub requeued_as: Option<MessageId>,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// Replays `letters` in order, calling `progress(done, total)` after each.
pub async fn replay(
    store: &Store,
    letters: &[DeadLetter],
    options: &ReplayOptions,
    mut progress: impl FnMut(usize, usize),
) -> Vec<ReplayOutcome> {
    // A rate too small to express (or not positive) means no pause rather than a panic.
    let pause = options.rate.filter(|r| *r > 0.0).and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok());
    let mut outcomes = Vec::with_capacity(letters.len());
    for (i, letter) in letters.iter().enumerate() {
        if i > 0
            && let Some(pause) = pause
        {
            tokio::time::sleep(pause).await;
        }
        let outcome = if options.dry_run {
            ReplayOutcome {
                dead_letter: letter.message_id.clone(),
                event_id: letter.envelope.event_id(),
                requeued_as: None,
                error: None,
            }
        } else {
            match replay_one(store, letter, &options.by).await {
                Ok(requeued_as) => ReplayOutcome {
                    dead_letter: letter.message_id.clone(),
                    event_id: letter.envelope.event_id(),
                    requeued_as: Some(requeued_as),
                    error: None,
                },
                Err(e) => ReplayOutcome {
                    dead_letter: letter.message_id.clone(),
                    event_id: letter.envelope.event_id(),
                    requeued_as: None,
                    error: Some(e.to_string()),
                },
            }
        };
        outcomes.push(outcome);
        progress(i + 1, letters.len());
    }
    outcomes
}

async fn replay_one(store: &Store, letter: &DeadLetter, by: &str) -> Result<MessageId, StorageError> {
    let event_id = letter.envelope.event_id();
    let key = letter.envelope.idempotency_key();
    // Reset first: a worker receiving the redriven message must find ENQUEUED, not DEAD or DONE.
    match store.idempotency.get(key).await? {
        Some(record) if matches!(record.status, Status::Dead | Status::Done) => {
            store.idempotency.transition(key, Status::Enqueued, Some(&format!("replayed by {by}"))).await?;
        }
        // Redriven by the queue after too many receives (still PROCESSING or ENQUEUED), or past its horizon:
        // the worker's `begin` takes it from there.
        _ => {}
    }
    let redriven = store.dead_letters.redrive(std::slice::from_ref(&letter.message_id)).await?;
    let requeued_as = redriven
        .into_iter()
        .next()
        .ok_or_else(|| StorageError::NotFound(format!("dead letter {}", letter.message_id)))??
        .requeued_as;
    if let Some(mut retry) = store.retries.get(event_id).await? {
        retry.status = RetryStatus::Active;
        retry.next_attempt_at = Some(store.clock.now());
        retry.updated_at = store.clock.now();
        store.retries.upsert(&retry).await?;
    }
    let entry = AuditEntry::new(event_id, store.clock.now(), Step::Replayed, by).with_detail(serde_json::json!({
        "dead_letter": letter.message_id,
        "requeued_as": requeued_as,
        "reason": letter.reason,
    }));
    if let Err(e) = store.audit.append(vec![entry]).await {
        tracing::warn!(error = %e, %event_id, "could not audit a replay");
    }
    Ok(requeued_as)
}
