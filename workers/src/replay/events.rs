//! Re-drive of retained events (the event log): each one's idempotency and retry records are reset as for a dead
//! letter, a copy of its envelope goes to the tail of its message group with a fresh dedup id and the [`Replay`]
//! attributes, and its trail gets a `replayed` line with the operator, the reason and the replay's id. Events go
//! in the order given (oldest first from a listing), so each group keeps its order; the event keeps its id.

use std::collections::{BTreeMap, HashSet};

use eventfleet_schema::{AuditEntry, DedupId, EventId, Step, Timestamp};
use eventfleet_storage::{LoggedEvent, MessageId, Outcome, OutgoingMessage, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Replay;

/// Messages sent per call of the store (SQS's batch limit).
const CHUNK: usize = 10;

/// How to re-drive.
#[derive(Debug, Clone, Default)]
pub struct EventReplayOptions {
    /// Who replays (audited).
    pub by: String,
    /// Why (audited).
    pub reason: Option<String>,
    /// Only this route; `None`: every handler.
    pub route: Option<String>,
    /// New messages in the chats instead of looking for the earlier ones.
    pub post_again: bool,
    /// Report what would be replayed, change nothing.
    pub dry_run: bool,
    /// At most this many events a second.
    pub rate: Option<f64>,
}

/// What happened to one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventReplayed {
    /// The event.
    pub event_id: EventId,
    /// Its message group.
    pub group: String,
    /// Its new message on the queue (`None` on a dry run, a skip or a failure).
    pub requeued_as: Option<MessageId>,
    /// Why it was left alone.
    pub skipped: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What a replay would do, for `--dry-run` and the console's preview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Preview {
    /// Events that would be replayed.
    pub count: usize,
    /// Events that would be left alone (not done yet, or on the dead-letter queue).
    pub skipped: usize,
    /// Message groups of the replayed events, with how many each.
    pub groups: BTreeMap<String, usize>,
    /// The oldest replayed event's receipt time.
    pub first: Option<Timestamp>,
    /// The newest.
    pub last: Option<Timestamp>,
}

/// Why `event` is not replayed, if it is not.
pub fn why_not(event: &LoggedEvent) -> Option<&'static str> {
    match event.outcome {
        Outcome::Pending => Some("not done yet (queued, running, or replayed already): replay it once it is done"),
        Outcome::DeadLettered => Some("dead-lettered: it waits on the dead-letter queue; use `eventfleet dlq replay`"),
        Outcome::Succeeded | Outcome::Filtered => None,
    }
}

/// The preview of replaying `events`.
pub fn preview(events: &[LoggedEvent]) -> Preview {
    let mut p = Preview::default();
    for e in events {
        if why_not(e).is_some() {
            p.skipped += 1;
            continue;
        }
        p.count += 1;
        *p.groups.entry(e.group.clone()).or_default() += 1;
        let at = e.envelope.received_at();
        p.first = Some(p.first.map_or(at, |f| f.min(at)));
        p.last = Some(p.last.map_or(at, |l| l.max(at)));
    }
    p
}

/// Replays `events` in order, calling `progress(done, total)` after each chunk; stops between chunks once
/// `cancel` fires (the rest are reported skipped). Each chunk is read again just before it is sent, so an event
/// another replay has queued meanwhile is left alone; once an event of a group fails, the group's later events
/// are left alone too (replaying them first would break its order when the failed one is tried again). Returns
/// the replay run and what happened to each event.
pub async fn replay_events(
    store: &Store,
    events: &[LoggedEvent],
    options: &EventReplayOptions,
    cancel: &CancellationToken,
    mut progress: impl FnMut(usize, usize),
) -> (Replay, Vec<EventReplayed>) {
    let replay = Replay::new(options.route.clone(), options.post_again);
    let (chunk, pause) = super::pacing(options.rate, CHUNK);
    let total = events.len();
    let mut out = Vec::with_capacity(total);
    let mut failed_groups = HashSet::new();
    for (i, events) in events.chunks(chunk).enumerate() {
        if i > 0
            && !options.dry_run
            && let Some(pause) = pause
        {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = cancel.cancelled() => {}
            }
        }
        if cancel.is_cancelled() {
            out.extend(events.iter().map(|e| skipped(e, "cancelled before its turn")));
            continue;
        }
        if options.dry_run {
            out.extend(events.iter().map(|e| match why_not(e) {
                Some(why) => skipped(e, why),
                None => skipped_none(e),
            }));
        } else {
            let ids: Vec<_> = events.iter().map(|e| e.envelope.event_id()).collect();
            match store.events.get_many(&ids).await {
                Ok(fresh) => {
                    // Gone from the log meanwhile (its window ran out): replayed from what was selected.
                    let now: Vec<LoggedEvent> =
                        fresh.into_iter().zip(events).map(|(f, e)| f.unwrap_or_else(|| e.clone())).collect();
                    out.extend(replay_chunk(store, &now, options, &replay, &mut failed_groups).await);
                }
                Err(err) => out.extend(events.iter().map(|e| {
                    failed_groups.insert(e.group.clone());
                    EventReplayed { error: Some(err.to_string()), ..skipped_none(e) }
                })),
            }
        }
        progress(out.len(), total);
    }
    (replay, out)
}

fn skipped(e: &LoggedEvent, why: &str) -> EventReplayed {
    EventReplayed { skipped: Some(why.to_owned()), ..skipped_none(e) }
}

fn skipped_none(e: &LoggedEvent) -> EventReplayed {
    EventReplayed {
        event_id: e.envelope.event_id(),
        group: e.group.clone(),
        requeued_as: None,
        skipped: None,
        error: None,
    }
}

async fn replay_chunk(
    store: &Store,
    events: &[LoggedEvent],
    options: &EventReplayOptions,
    replay: &Replay,
    failed_groups: &mut HashSet<String>,
) -> Vec<EventReplayed> {
    // Reset first: the worker that receives the copy must find ENQUEUED, not DONE (it would skip it).
    let mut results: Vec<EventReplayed> = Vec::with_capacity(events.len());
    let mut sending = Vec::new();
    for e in events {
        if failed_groups.contains(&e.group) {
            results.push(skipped(e, "an earlier event of its group failed to replay: left alone to keep the order"));
            continue;
        }
        if let Some(why) = why_not(e) {
            results.push(skipped(e, why));
            continue;
        }
        match super::dead_letters::reset(store, &e.envelope, &options.by).await {
            Ok(()) => {
                sending.push((results.len(), e));
                results.push(skipped_none(e));
            }
            Err(err) => {
                failed_groups.insert(e.group.clone());
                results.push(EventReplayed { error: Some(err.to_string()), ..skipped_none(e) });
            }
        }
    }
    if sending.is_empty() {
        return results;
    }
    let messages = sending
        .iter()
        .map(|(_, e)| OutgoingMessage {
            envelope: e.envelope.clone(),
            group: e.group.clone(),
            // A fresh id: the first delivery's may still be inside the dedup window.
            dedup_id: DedupId::fresh(),
            attributes: Replay { done_at: e.finished_at, ..replay.clone() }.attributes(),
        })
        .collect();
    // The `replayed` lines carry the time before the send, so a worker's next lines sort after them.
    let at = store.clock.now();
    let sent = match store.queue.send_batch(messages).await {
        Ok(sent) => sent,
        Err(err) => {
            for (i, e) in &sending {
                failed_groups.insert(e.group.clone());
                results[*i].error = Some(err.to_string());
            }
            return results;
        }
    };
    let mut lines = Vec::new();
    for ((i, e), result) in sending.iter().zip(sent) {
        match result {
            Ok(id) => {
                lines.push(AuditEntry::new(e.envelope.event_id(), at, Step::Replayed, &options.by).with_detail(
                    serde_json::json!({
                        "replay": replay.id,
                        "reason": options.reason,
                        "route": replay.route,
                        "post_again": replay.post_again,
                        "requeued_as": id,
                    }),
                ));
                results[*i].requeued_as = Some(id);
            }
            Err(err) => {
                failed_groups.insert(e.group.clone());
                results[*i].error = Some(err.to_string());
            }
        }
    }
    if let Err(err) = store.audit.append(lines).await {
        // The replay stands (the copies are queued); only its lines are missing from the trails.
        tracing::error!(error = %err, replay = %replay.id, "could not write the replayed lines");
    }
    results
}
