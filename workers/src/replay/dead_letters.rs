//! Operator replay of dead letters: each one's idempotency record is reset to `ENQUEUED` (so the worker that
//! receives it runs the handler instead of skipping or re-dead-lettering it), the message is moved back to the
//! tail of its group with a fresh dedup id, its retry record is reopened, and the operator is audited.
//! Dead letters are replayed in the order given (oldest first from a listing), which keeps each group's order.

use std::time::Duration;

use eventfleet_schema::{AuditEntry, EventId, RetryStatus, Step};
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

/// Dead letters redriven per call of the store: on SQS every redrive reads the DLQ, so one read serves a chunk.
const CHUNK: usize = 50;

/// Replays `letters` in order, calling `progress(done, total)` after each chunk. With a rate, chunks hold one
/// second's worth of replays and are spaced to keep the rate.
pub async fn replay(
    store: &Store,
    letters: &[DeadLetter],
    options: &ReplayOptions,
    mut progress: impl FnMut(usize, usize),
) -> Vec<ReplayOutcome> {
    let (chunk, pause) = super::pacing(options.rate, CHUNK);
    let total = letters.len();
    let mut outcomes = Vec::with_capacity(total);
    for (i, letters) in letters.chunks(chunk).enumerate() {
        if i > 0
            && let Some(pause) = pause
        {
            tokio::time::sleep(pause).await;
        }
        if options.dry_run {
            outcomes.extend(letters.iter().map(|l| outcome(l, Ok(None))));
        } else {
            outcomes.extend(replay_chunk(store, letters, &options.by).await);
        }
        progress(outcomes.len(), total);
    }
    outcomes
}

fn outcome(letter: &DeadLetter, result: Result<Option<MessageId>, StorageError>) -> ReplayOutcome {
    let (requeued_as, error) = match result {
        Ok(requeued_as) => (requeued_as, None),
        Err(e) => (None, Some(e.to_string())),
    };
    ReplayOutcome { dead_letter: letter.message_id.clone(), event_id: letter.envelope.event_id(), requeued_as, error }
}

/// What to do with one dead letter of a chunk.
enum Prepared {
    /// Its records are reset: redrive it.
    Reset,
    /// An earlier replay sent it back already (its trail says so) but could not delete it from the DLQ: only
    /// the delete is left. Resetting again would leave the event `ENQUEUED` for good, since the send would be
    /// deduplicated or the event already handled.
    AlreadyReplayed(MessageId),
}

async fn replay_chunk(store: &Store, letters: &[DeadLetter], by: &str) -> Vec<ReplayOutcome> {
    // Reset first: a worker receiving a redriven message must find ENQUEUED, not DEAD or DONE, and a retry
    // record with a full set of attempts.
    let mut reset = Vec::with_capacity(letters.len());
    for letter in letters {
        reset.push(match earlier_replay(store, letter).await {
            Ok(Some(requeued_as)) => Ok(Prepared::AlreadyReplayed(requeued_as)),
            Ok(None) => reset_record(store, letter, by).await.map(|()| Prepared::Reset),
            Err(e) => Err(e),
        });
    }
    let ids: Vec<MessageId> = letters
        .iter()
        .zip(&reset)
        .filter(|(_, r)| matches!(r, Ok(Prepared::Reset)))
        .map(|(l, _)| l.message_id.clone())
        .collect();
    // The `replayed` lines carry the time the redrive started, before any worker can log the event's next steps.
    let at = store.clock.now();
    let mut redriven = match store.dead_letters.redrive(&ids).await {
        Ok(results) => results.into_iter(),
        Err(e) => {
            let text = e.to_string();
            return letters
                .iter()
                .zip(reset)
                .map(|(l, r)| outcome(l, r.and(Err(StorageError::unavailable(text.clone())))))
                .collect();
        }
    };
    let mut out = Vec::with_capacity(letters.len());
    for (letter, reset) in letters.iter().zip(reset) {
        let result = match reset {
            Err(e) => Err(e),
            Ok(Prepared::Reset) => match redriven.next() {
                Some(Ok(r)) => after_redrive(store, letter, r.requeued_as, by, at).await.map(Some),
                Some(Err(e)) => Err(e),
                None => Err(StorageError::NotFound(format!("dead letter {}", letter.message_id))),
            },
            Ok(Prepared::AlreadyReplayed(requeued_as)) => {
                match store.dead_letters.delete(std::slice::from_ref(&letter.message_id)).await {
                    Ok(0) => Err(StorageError::NotFound(format!(
                        "dead letter {} (already replayed as {requeued_as}; its stale copy was not found to delete)",
                        letter.message_id
                    ))),
                    Ok(_) => Ok(Some(requeued_as)),
                    Err(e) => Err(e),
                }
            }
        };
        out.push(outcome(letter, result));
    }
    out
}

/// Where an earlier replay of this very dead letter sent it, from the event's trail.
async fn earlier_replay(store: &Store, letter: &DeadLetter) -> Result<Option<MessageId>, StorageError> {
    let trail = store.audit.history(letter.envelope.event_id()).await?;
    Ok(trail.iter().rev().find_map(|e| {
        (e.step == Step::Replayed && e.detail["dead_letter"].as_str() == Some(letter.message_id.0.as_str()))
            .then(|| MessageId(e.detail["requeued_as"].as_str().unwrap_or_default().to_owned()))
    }))
}

/// Resets the event's idempotency and retry records for a replay.
async fn reset_record(store: &Store, letter: &DeadLetter, by: &str) -> Result<(), StorageError> {
    reset(store, &letter.envelope, by).await
}

/// Resets an event's idempotency and retry records for a replay of it.
pub(super) async fn reset(store: &Store, envelope: &eventfleet_schema::Envelope, by: &str) -> Result<(), StorageError> {
    // DONE, DEAD, or PROCESSING (an attempt stopped and the queue moved the message itself) become ENQUEUED, so
    // the replayed message runs; a record past its horizon is started anew by the worker.
    store.idempotency.reopen(envelope.idempotency_key(), &format!("replayed by {by}")).await?;
    if let Some(mut retry) = store.retries.get(envelope.event_id()).await? {
        retry.status = RetryStatus::Active;
        // A replay gets a full set of attempts again; the audit trail keeps the earlier ones.
        retry.attempts = 0;
        retry.next_attempt_at = Some(store.clock.now());
        retry.updated_at = store.clock.now();
        store.retries.upsert(&retry).await?;
    }
    Ok(())
}

/// Audits the replay.
async fn after_redrive(
    store: &Store,
    letter: &DeadLetter,
    requeued_as: MessageId,
    by: &str,
    at: eventfleet_schema::Timestamp,
) -> Result<MessageId, StorageError> {
    let event_id = letter.envelope.event_id();
    let entry = AuditEntry::new(event_id, at, Step::Replayed, by).with_detail(serde_json::json!({
        "dead_letter": letter.message_id,
        "requeued_as": requeued_as,
        "reason": letter.reason,
    }));
    // This line is how a later replay recognises a stale DLQ copy of this dead letter: worth a few tries.
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=3 {
        match store.audit.append(vec![entry.clone()]).await {
            Ok(()) => break,
            Err(e) if attempt < 3 => {
                tracing::warn!(error = %e, %event_id, "could not audit a replay; retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                tracing::error!(error = %e, %event_id, "could not audit a replay: if its DLQ copy stays, delete it with `dlq purge`, do not replay it again")
            }
        }
    }
    Ok(requeued_as)
}
