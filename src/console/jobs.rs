//! Replays started from the console run in the background (a large one at a rate takes minutes); their progress
//! page polls them here. Kept in memory: a restarted console forgets the progress, not the replay, whose every
//! step is in the audit trail.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use eventfleet_schema::Timestamp;
use eventfleet_storage::{DeadLetter, LoggedEvent, Store};
use eventfleet_workers::replay::events::{EventReplayOptions, EventReplayed, replay_events};
use eventfleet_workers::replay::{ReplayOptions, ReplayOutcome, replay};
use tokio_util::sync::CancellationToken;

/// Finished jobs kept for their pages.
const KEPT: usize = 50;

/// Events whose current state a progress page follows (the first of a large replay).
pub const FOLLOWED: usize = 50;

/// Minutes after which a progress page stops polling.
const POLL_FOR_MS: i64 = 15 * 60 * 1000;

/// Where each of the first [`FOLLOWED`] replayed events stands now: its latest trail line and its record's status.
pub async fn followed(
    store: &Store,
    ids: impl Iterator<Item = eventfleet_schema::EventId>,
) -> Result<
    Vec<(Option<eventfleet_schema::AuditEntry>, Option<eventfleet_schema::Status>)>,
    eventfleet_storage::StorageError,
> {
    let mut rows = Vec::new();
    for id in ids.take(FOLLOWED) {
        let steps = store.audit.history(id).await?;
        let record = store.idempotency.find_by_event(id).await?;
        rows.push((steps.last().cloned(), record.map(|r| r.status)));
    }
    Ok(rows)
}

/// Whether a progress page started at `started_at` should still poll.
pub fn still_polling(store: &Store, started_at: Option<Timestamp>) -> bool {
    started_at.is_none_or(|t| store.clock.now().as_millis() - t.as_millis() <= POLL_FOR_MS)
}

/// One replay.
#[derive(Debug, Default)]
pub struct Job {
    /// Who started it.
    pub by: String,
    /// When.
    pub started_at: Option<Timestamp>,
    /// Dead letters to replay.
    pub total: usize,
    /// Replayed so far.
    pub done: usize,
    /// Each one's outcome, once replayed.
    pub outcomes: Vec<ReplayOutcome>,
    /// Whether it has finished.
    pub finished: bool,
}

/// One replay of retained events.
#[derive(Debug, Default)]
pub struct EventJob {
    /// Who started it.
    pub by: String,
    /// When.
    pub started_at: Option<Timestamp>,
    /// Where to: a route, or every handler.
    pub route: Option<String>,
    /// Events to replay.
    pub total: usize,
    /// Replayed (or left alone) so far.
    pub done: usize,
    /// Each one's outcome, once the replay has finished.
    pub outcomes: Vec<EventReplayed>,
    /// Whether it has finished.
    pub finished: bool,
    /// Stops it between chunks.
    pub cancel: CancellationToken,
}

/// The jobs of this console.
#[derive(Default)]
pub struct Jobs {
    next: Mutex<u64>,
    jobs: Mutex<BTreeMap<u64, Arc<Mutex<Job>>>>,
    event_jobs: Mutex<BTreeMap<u64, Arc<Mutex<EventJob>>>>,
}

impl Jobs {
    fn number(&self) -> u64 {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        *next
    }

    /// Starts replaying retained `events` (in that order) and returns the job's number.
    pub fn start_events(&self, store: Store, events: Vec<LoggedEvent>, options: EventReplayOptions) -> u64 {
        let id = self.number();
        let cancel = CancellationToken::new();
        let job = Arc::new(Mutex::new(EventJob {
            by: options.by.clone(),
            started_at: Some(store.clock.now()),
            route: options.route.clone(),
            total: events.len(),
            cancel: cancel.clone(),
            ..EventJob::default()
        }));
        {
            let mut jobs = self.event_jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.insert(id, job.clone());
            // The oldest finished ones go; a running one keeps its page (and its Stop).
            let finished: Vec<u64> = (jobs.iter())
                .filter(|(_, j)| j.lock().unwrap_or_else(|e| e.into_inner()).finished)
                .map(|(id, _)| *id)
                .collect();
            for old in finished.into_iter().take(jobs.len().saturating_sub(KEPT)) {
                jobs.remove(&old);
            }
        }
        tokio::spawn(async move {
            let progress = job.clone();
            let (run, outcomes) = replay_events(&store, &events, &options, &cancel, |done, _| {
                progress.lock().unwrap_or_else(|e| e.into_inner()).done = done;
            })
            .await;
            let replayed = outcomes.iter().filter(|o| o.requeued_as.is_some()).count();
            tracing::info!(job = id, replay = %run.id, by = %options.by, replayed, cancelled = cancel.is_cancelled(),
                "console replay of events done");
            let mut job = job.lock().unwrap_or_else(|e| e.into_inner());
            job.done = outcomes.len();
            job.outcomes = outcomes;
            job.finished = true;
        });
        id
    }

    /// A replay of events, by number.
    pub fn get_events(&self, id: u64) -> Option<Arc<Mutex<EventJob>>> {
        self.event_jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }

    /// Starts replaying `letters` (in that order) and returns the job's number.
    pub fn start(&self, store: Store, letters: Vec<DeadLetter>, options: ReplayOptions) -> u64 {
        let id = self.number();
        let job = Arc::new(Mutex::new(Job {
            by: options.by.clone(),
            started_at: Some(store.clock.now()),
            total: letters.len(),
            ..Job::default()
        }));
        {
            let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            jobs.insert(id, job.clone());
            while jobs.len() > KEPT {
                jobs.pop_first();
            }
        }
        tokio::spawn(async move {
            let progress = job.clone();
            let outcomes = replay(&store, &letters, &options, |done, _| {
                progress.lock().unwrap_or_else(|e| e.into_inner()).done = done;
            })
            .await;
            let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
            tracing::info!(job = id, by = %options.by, replayed = outcomes.len() - failed, failed, "console replay done");
            let mut job = job.lock().unwrap_or_else(|e| e.into_inner());
            job.done = outcomes.len();
            job.outcomes = outcomes;
            job.finished = true;
        });
        id
    }

    /// A job, by number.
    pub fn get(&self, id: u64) -> Option<Arc<Mutex<Job>>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }
}
