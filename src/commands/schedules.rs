//! `eventfleet schedules list`: the schedules file as the fleet sees it: each schedule's next tick, and its last
//! tick's event with the event's status and outcome.

use std::path::Path;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use eventfleet_ingress::schedule::{self, Action, Schedule};
use serde_json::{Value, json};

use super::print_json;
use crate::cli::SchedulesCommand;
use crate::config::Config;

/// How many ticks back `list` looks for the last one with an event.
const LIST_LOOK_BACK: usize = 100;

/// Runs a schedules command.
pub async fn run(config: &Config, data_dir: &Path, command: SchedulesCommand) -> anyhow::Result<ExitCode> {
    let SchedulesCommand::List(flag) = command;
    let schedules = &config.ingress.schedules;
    if schedules.is_empty() {
        if flag.json {
            print_json(&json!({ "schedules": [] }))?;
        } else {
            eprintln!("no schedules: set EVENTFLEET_SCHEDULES_FILE to a schedules file (see docs/configuration.md)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let store = crate::backend::open_existing(config, data_dir).await?;
    let now = DateTime::from_timestamp_millis(store.clock.now().as_millis()).unwrap_or_else(Utc::now);
    let mut rows = Vec::with_capacity(schedules.len());
    for s in schedules {
        let found = schedule::look_back(&store, s, now, LIST_LOOK_BACK, config.ingress.idempotency_horizon).await?;
        rows.push(row(s, now, &found));
    }
    if flag.json {
        print_json(&json!({ "schedules": rows }))?;
        return Ok(ExitCode::SUCCESS);
    }
    say!("{:<20} {:<18} {:<22} {:<22} {:<38} {:<8} outcome", "name", "cron", "next", "last", "event", "status");
    for r in &rows {
        let text = |v: &Value| v.as_str().unwrap_or("-").to_owned();
        let last = &r["last"];
        say!(
            "{:<20} {:<18} {:<22} {:<22} {:<38} {:<8} {}",
            text(&r["name"]),
            text(&r["cron"]),
            text(&r["next"]),
            text(&last["tick"]),
            text(&last["event_id"]),
            text(&last["status"]),
            text(&last["outcome"]),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn row(s: &Schedule, now: DateTime<Utc>, found: &schedule::LookBack) -> Value {
    let action = match &s.action {
        Action::Post { channel, .. } => json!({ "post": { "channel": channel } }),
        Action::Emit { kind, .. } => json!({ "emit": { "kind": kind } }),
    };
    let last = found.last.as_ref().map(|last| {
        json!({
            "tick": schedule::tick_label(last.tick),
            "event_id": last.record.event_id,
            "status": last.record.status.as_str(),
            "outcome": last.record.outcome,
        })
    });
    json!({
        "name": s.name,
        "cron": s.expression,
        "timezone": s.timezone.name(),
        "catch_up": s.catch_up,
        "action": action,
        "next": s.next_after(now).map(schedule::tick_label),
        "last": last,
        // Ticks since the last one that have no event (a fleet that was down, or a schedule new to it).
        "ticks_without_event": found.missed.len(),
    })
}
