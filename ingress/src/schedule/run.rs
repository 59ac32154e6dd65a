//! The schedule loops: sleep to the next tick, accept it, repeat; and what happens to ticks nobody ran.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use eventfleet_schema::{
    Body, EnvelopeV1, EventId, IdempotencyKey, IdempotencyRecord, Source, Status, Timestamp, Verification,
    VerificationMethod,
};
use eventfleet_storage::{StorageError, Store};
use tokio_util::sync::CancellationToken;

use super::file::{Action, CatchUp, Schedule};
use crate::AppState;
use crate::accept::{Accepted, accept};

/// How late a running process still accepts a tick as itself (a slow store, a busy machine). A tick later than
/// this (the process was suspended, the store down for longer) is missed, and its schedule's `catch_up` decides.
pub const GRACE: Duration = Duration::from_secs(60);

/// How many ticks back a catch-up (and `eventfleet schedules list`) looks for the last tick on record. Beyond
/// it, and beyond the idempotency horizon (whose records have expired), a schedule reads as new.
pub const LOOK_BACK: usize = 1_000;

/// Ticks looked up per read of the look-back (one `BatchGetItem` on DynamoDB).
const LOOK_BACK_BATCH: usize = 100;

/// The most ticks one late wake-up counts as missed (a per-second schedule suspended for a day).
const MAX_LATE: usize = 100_000;

/// A tick's time as it appears in keys and bodies: RFC 3339 UTC to the second.
pub fn tick_label(tick: DateTime<Utc>) -> String {
    tick.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The last tick of a schedule that has an event, and the ticks after it that have none.
#[derive(Debug, Clone)]
pub struct LookBack {
    /// The newest tick with an event, if one was found.
    pub last: Option<LastTick>,
    /// The ticks newer than it without one, newest first.
    pub missed: Vec<DateTime<Utc>>,
}

/// A tick and its event's idempotency record.
#[derive(Debug, Clone)]
pub struct LastTick {
    /// The tick.
    pub tick: DateTime<Utc>,
    /// Its record (event id, status, outcome).
    pub record: IdempotencyRecord,
}

/// Looks for the newest tick at or before `at` that has an event, at most `limit` ticks and `horizon` back.
pub async fn look_back(
    store: &Store,
    schedule: &Schedule,
    at: DateTime<Utc>,
    limit: usize,
    horizon: Duration,
) -> Result<LookBack, StorageError> {
    let oldest = at - chrono::Duration::from_std(horizon).unwrap_or(chrono::Duration::MAX);
    let ticks: Vec<DateTime<Utc>> =
        schedule.ticks_back_from(at).take(limit).take_while(|tick| *tick >= oldest).collect();
    let mut missed = Vec::new();
    // A batch of keys per read: a new schedule looks back all `limit` ticks, one round trip each would take
    // tens of seconds on DynamoDB.
    for chunk in ticks.chunks(LOOK_BACK_BATCH) {
        let keys: Vec<IdempotencyKey> =
            chunk.iter().map(|tick| IdempotencyKey::schedule(&schedule.name, &tick_label(*tick))).collect();
        for (tick, record) in chunk.iter().zip(store.idempotency.get_many(&keys).await?) {
            if let Some(record) = record {
                return Ok(LookBack { last: Some(LastTick { tick: *tick, record }), missed });
            }
            missed.push(*tick);
        }
    }
    Ok(LookBack { last: None, missed })
}

/// Runs every schedule until `shutdown`.
pub async fn run(state: AppState, schedules: Vec<Schedule>, shutdown: CancellationToken) {
    let mut loops = tokio::task::JoinSet::new();
    for schedule in schedules {
        loops.spawn(run_one(state.clone(), schedule, shutdown.clone()));
    }
    while loops.join_next().await.is_some() {}
}

fn now(state: &AppState) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(state.store.clock.now().as_millis()).unwrap_or_default()
}

/// What one accept is for.
struct Tick {
    at: DateTime<Utc>,
    /// Ticks this event stands for besides its own (a catch-up), and the oldest of them.
    missed: Option<(usize, DateTime<Utc>)>,
}

async fn run_one(state: AppState, schedule: Schedule, shutdown: CancellationToken) {
    let started = now(&state);
    tracing::info!(schedule = %schedule.name, cron = %schedule.expression, timezone = %schedule.timezone,
        next = ?schedule.next_after(started).map(tick_label), "schedule running");
    if !resume(&state, &schedule, started, &shutdown).await {
        return;
    }
    let mut after = started;
    loop {
        let Some(tick) = schedule.next_after(after) else {
            tracing::warn!(schedule = %schedule.name, "no later tick: the schedule stops");
            return;
        };
        if !sleep_until(&state, tick, &shutdown).await {
            return;
        }
        let late = late_ticks(&schedule, tick, now(&state));
        let (event, newest) = match late.first() {
            None => (Tick { at: tick, missed: None }, tick),
            Some(&oldest) => {
                let newest = *late.last().unwrap_or(&oldest);
                let count = late.len();
                state.metrics.count_ticks(&schedule.name, "missed", count as u64);
                tracing::warn!(schedule = %schedule.name, missed = count, first = %tick_label(oldest),
                    catch_up = ?schedule.catch_up, "ticks later than the grace period: missed");
                if schedule.catch_up == CatchUp::Skip {
                    after = newest;
                    continue;
                }
                // One catch-up event, on the newest missed tick's key (so every process makes the same one).
                (Tick { at: newest, missed: Some((count, oldest)) }, newest)
            }
        };
        if accept_tick(&state, &schedule, &event, &shutdown).await.is_none() {
            return;
        }
        after = newest;
    }
}

/// The ticks from `tick` on that are already later than [`GRACE`] at `now`, oldest first.
fn late_ticks(schedule: &Schedule, tick: DateTime<Utc>, now: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let cutoff = now - chrono::Duration::from_std(GRACE).unwrap_or_default();
    let mut late = Vec::new();
    let mut next = Some(tick);
    while let Some(t) = next {
        if t >= cutoff || late.len() >= MAX_LATE {
            break;
        }
        late.push(t);
        next = schedule.next_after(t);
    }
    late
}

/// At start-up: finishes the last tick on record if its accept may have been cut short (a `PENDING` record:
/// there is no sender to retry a tick, so the scheduler does; an accept of a key already queued is only a
/// duplicate), then, with `catch_up = "once"`, makes one event for the ticks since it. False at shutdown.
async fn resume(state: &AppState, schedule: &Schedule, started: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
    let horizon = state.config.idempotency_horizon;
    let mut delay = Duration::from_millis(200);
    let found = loop {
        match look_back(&state.store, schedule, started, LOOK_BACK, horizon).await {
            Ok(found) => break found,
            Err(e) => {
                tracing::warn!(schedule = %schedule.name, error = %e, "could not read the last tick; retrying");
                if !pause(&mut delay, shutdown).await {
                    return false;
                }
            }
        }
    };
    let Some(last) = &found.last else {
        tracing::info!(schedule = %schedule.name, looked_back = found.missed.len(),
            "no earlier tick on record: nothing to resume or catch up");
        return true;
    };
    if last.record.status == Status::Pending {
        let tick = Tick { at: last.tick, missed: None };
        if accept_tick(state, schedule, &tick, shutdown).await.is_none() {
            return false;
        }
    }
    match (schedule.catch_up, found.missed.first(), found.missed.last()) {
        (CatchUp::Once, Some(&newest), Some(&oldest)) => {
            tracing::info!(schedule = %schedule.name, missed = found.missed.len(), last = %tick_label(last.tick),
                "catching up once for the ticks missed since the last one");
            let tick = Tick { at: newest, missed: Some((found.missed.len(), oldest)) };
            accept_tick(state, schedule, &tick, shutdown).await.is_some()
        }
        _ => true,
    }
}

/// Sleeps until the clock reads `tick`; false at shutdown. Re-reads the clock after each sleep: the timer runs
/// on the monotonic clock, the ticks on the wall clock.
async fn sleep_until(state: &AppState, tick: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
    loop {
        let wait = (tick - now(state)).to_std().unwrap_or_default();
        if wait.is_zero() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return false,
        }
    }
}

/// Waits `delay` (doubling it up to 5 s); false at shutdown.
async fn pause(delay: &mut Duration, shutdown: &CancellationToken) -> bool {
    let wait = *delay;
    *delay = (*delay * 2).min(Duration::from_secs(5));
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Accepts one tick, retrying a failed accept until it is durable (a tick is never dropped for a store hiccup);
/// `None` at shutdown.
async fn accept_tick(
    state: &AppState,
    schedule: &Schedule,
    tick: &Tick,
    shutdown: &CancellationToken,
) -> Option<Accepted> {
    let label = tick_label(tick.at);
    let span = tracing::info_span!("schedule.tick", schedule = %schedule.name, tick = %label);
    let mut delay = Duration::from_millis(200);
    loop {
        let envelope = span.in_scope(|| envelope(state, schedule, tick, &label));
        match tracing::Instrument::instrument(accept(state, envelope, BTreeMap::new()), span.clone()).await {
            Ok(accepted) => {
                let outcome = match (accepted.duplicate, tick.missed) {
                    (true, _) => "duplicate",
                    (false, Some(_)) => "caught_up",
                    (false, None) => "accepted",
                };
                state.metrics.count_ticks(&schedule.name, outcome, 1);
                tracing::debug!(parent: &span, event_id = %accepted.event_id, outcome, "tick");
                return Some(accepted);
            }
            Err(e) => {
                state.metrics.count_ticks(&schedule.name, "failed", 1);
                tracing::warn!(parent: &span, error = %e, "the tick was not accepted; retrying");
                if !pause(&mut delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

fn envelope(state: &AppState, schedule: &Schedule, tick: &Tick, label: &str) -> EnvelopeV1 {
    let mut body = serde_json::json!({
        "schedule": schedule.name,
        "tick": label,
        "cron": schedule.expression,
        "timezone": schedule.timezone.name(),
        "catch_up": tick.missed.is_some(),
        "missed": tick.missed.map_or(0, |(count, _)| count),
    });
    if let Some((_, oldest)) = tick.missed {
        body["first_missed"] = tick_label(oldest).into();
    }
    match &schedule.action {
        Action::Post { channel, text } => {
            body["channel"] = channel.as_str().into();
            body["text"] = text.as_str().into();
        }
        Action::Emit { payload, .. } => body["payload"] = payload.clone(),
    }
    let now: Timestamp = state.store.clock.now();
    EnvelopeV1 {
        event_id: EventId::new(),
        idempotency_key: IdempotencyKey::schedule(&schedule.name, label),
        source: Source::Schedule { name: schedule.name.clone() },
        kind: schedule.kind(),
        message_group: format!("schedule:{}", schedule.name),
        received_at: now,
        verification: Verification { method: VerificationMethod::Schedule, verified_at: now },
        trace: crate::routes::trace_context(&HeaderMap::new()),
        headers: BTreeMap::from([("content-type".to_owned(), "application/json".to_owned())]),
        body: Body::Utf8(body.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::schedule::Schedules;

    fn every_second() -> Schedule {
        let file = "[[schedule]]\nname = \"s\"\ncron = \"* * * * * *\"\n";
        Schedules::parse(Path::new("t.toml"), file).unwrap().entries.remove(0)
    }

    #[test]
    fn late_ticks_are_those_past_the_grace() {
        let s = every_second();
        let tick: DateTime<Utc> = "2026-12-02T03:00:00Z".parse().unwrap();
        assert!(late_ticks(&s, tick, tick + chrono::Duration::seconds(59)).is_empty());
        let late = late_ticks(&s, tick, tick + chrono::Duration::seconds(65));
        assert_eq!(late.len(), 5);
        assert_eq!(tick_label(late[0]), "2026-12-02T03:00:00Z");
        assert_eq!(tick_label(late[4]), "2026-12-02T03:00:04Z");
    }
}
