//! `eventfleet events show <event id | idempotency key | sender id>`: the audit timeline and the retry record;
//! `events list`: the event log searched; `events replay`: retained events run again.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use eventfleet_schema::EventId;
use eventfleet_storage::{Cursor, Store};
use eventfleet_workers::replay::events::{EventReplayOptions, preview, replay_events};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::print_json;
use crate::cli::{EventFilterArgs, EventsCommand};
use crate::config::Config;

/// Runs an events command.
pub async fn run(config: &Config, data_dir: &Path, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let store = crate::backend::open_existing(config, data_dir).await?;
    match command {
        EventsCommand::Show { id, json } => show(&store, &id, json).await,
        EventsCommand::List { filter, limit, after, json } => list(config, &store, &filter, limit, after, json).await,
        EventsCommand::Replay { ids, all, filter, to_route, post_again, dry_run, rate, reason, by, json } => {
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                bail!("--rate must be a positive number of events per second");
            }
            if let Some(route) = &to_route
                && !config.routes.is_empty()
                && !config.routes.iter().any(|r| &r.name == route)
            {
                bail!("no route {route:?} in the routes file: add it (and restart the workers) before replaying to it");
            }
            let options = EventReplayOptions { by, reason, route: to_route, post_again, dry_run, rate };
            replay(config, &store, &ids, all, &filter, options, json).await
        }
    }
}

async fn list(
    config: &Config,
    store: &Store,
    filter: &EventFilterArgs,
    limit: u16,
    after: Option<String>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let search = crate::event_search::search(filter, config, store.clock.now())?;
    let after = after.map(|a| a.parse::<Cursor>()).transpose().map_err(anyhow::Error::msg)?;
    let page = crate::event_search::page(store, &search, usize::from(limit), after).await?;
    if json {
        print_json(&json!({
            "events": page.events,
            "next": page.next.map(|c| c.to_string()),
            "retention_hours": store.events.retention().map(|r| r.as_secs() / 3600),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if page.events.is_empty() {
        say!("(no events match; {})", crate::event_search::retention_note(store));
        return Ok(ExitCode::SUCCESS);
    }
    say!("{:<24}  {:<36}  {:<8}  {:<24}  {:<13}  group", "received at", "event id", "source", "kind", "outcome");
    for e in &page.events {
        say!(
            "{:<24}  {:<36}  {:<8}  {:<24}  {:<13}  {}",
            e.received_at,
            e.event_id,
            e.source,
            e.kind,
            e.outcome.as_str(),
            e.group
        );
    }
    if let Some(next) = page.next {
        say!("more: add --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    config: &Config,
    store: &Store,
    ids: &[String],
    all: bool,
    filter: &EventFilterArgs,
    options: EventReplayOptions,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut chosen: Vec<EventId> = Vec::new();
    if ids.is_empty() {
        if !all && filter.is_empty() {
            bail!("name event ids, or --all, or filters (--since, --kind, --route ...)");
        }
        let search = crate::event_search::search(filter, config, store.clock.now())?;
        chosen = crate::event_search::select(store, &search).await?.iter().map(|e| e.event_id).collect();
    } else {
        for id in ids {
            let found = crate::lookup::events(store, id).await?;
            if found.is_empty() {
                bail!("no event {id:?} (looked for an event id, idempotency key, sender id)");
            }
            for m in found {
                if !chosen.contains(&m.event_id) {
                    chosen.push(m.event_id);
                }
            }
        }
    }
    let events = crate::event_search::logged(store, &chosen).await?;
    if events.is_empty() {
        if json {
            print_json(&json!({ "dry_run": options.dry_run, "preview": preview(&events), "outcomes": [] }))?;
        } else {
            say!("(no events match; {})", crate::event_search::retention_note(store));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let shown = preview(&events);
    if !json {
        let range = match (shown.first, shown.last) {
            (Some(f), Some(l)) => format!(", received {f} to {l}"),
            _ => String::new(),
        };
        let to = options.route.as_deref().map_or("every handler".to_owned(), |r| format!("route {r}"));
        let verb = if options.dry_run { "would replay" } else { "replaying" };
        let plural = |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        say!(
            "{verb} {} to {to} in {}{range}",
            plural(shown.count, "event", "events"),
            plural(shown.groups.len(), "message group", "message groups")
        );
        if shown.skipped > 0 {
            say!("{} left alone (not done yet, or dead-lettered: see below)", shown.skipped);
        }
    }
    // Ctrl-C stops between chunks: what was sent stays sent, the rest is reported.
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    let signal = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let progress = super::replay_progress(events.len() > 1 && !json && !options.dry_run);
    let (run, outcomes) = replay_events(store, &events, &options, &cancel, progress).await;
    signal.abort();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let replayed = outcomes.iter().filter(|o| o.requeued_as.is_some()).count();
    if json {
        print_json(&json!({
            "dry_run": options.dry_run,
            "replay": run.id,
            "preview": shown,
            "replayed": replayed,
            "failed": failed,
            "cancelled": cancel.is_cancelled(),
            "outcomes": outcomes,
        }))?;
    } else {
        for o in &outcomes {
            match (&o.error, &o.skipped, &o.requeued_as) {
                (Some(e), _, _) => say!("failed   {}: {e}", o.event_id),
                (None, Some(why), _) => say!("skipped  {}: {why}", o.event_id),
                (None, None, Some(new)) => say!("replayed {} as {new}", o.event_id),
                (None, None, None) => say!("would replay {}  (group {})", o.event_id, o.group),
            }
        }
        if !options.dry_run {
            say!("replay {}: {replayed} replayed, {failed} failed", run.id);
        }
    }
    if cancel.is_cancelled() {
        eprintln!("cancelled: the events not yet replayed are listed as skipped");
        return Ok(ExitCode::from(130));
    }
    Ok(if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `events show`.
async fn show(store: &Store, id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let store = store.clone();
    let id = id.to_owned();
    let matches = crate::lookup::events(&store, &id).await?;
    let ids: Vec<EventId> = matches.iter().map(|m| m.event_id).collect();
    let retained = store.events.get_many(&ids).await?;
    let mut shown = Vec::new();
    for (m, kept) in matches.into_iter().zip(retained) {
        let steps = store.audit.history(m.event_id).await?;
        let retry = store.retries.get(m.event_id).await?;
        if m.record.is_some() || !steps.is_empty() {
            shown.push((m, steps, retry, kept.is_some()));
        }
    }
    if shown.is_empty() {
        eprintln!("no event with id, idempotency key or sender id {id:?}");
        return Ok(ExitCode::FAILURE);
    }
    if json {
        let views: Vec<_> = (shown.iter())
            .map(|(m, steps, retry, kept)| {
                json!({ "event_id": m.event_id, "idempotency": m.record, "steps": steps, "retry": retry, "retained": kept })
            })
            .collect();
        // One event prints its object; a sender id that several sources share, a list of them.
        match <[_; 1]>::try_from(views) {
            Ok([one]) => print_json(&one)?,
            Err(views) => print_json(&views)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (m, steps, retry, kept) in shown {
        say!("event {}", m.event_id);
        if kept {
            say!("  retained yes: `eventfleet events replay {}` runs it again", m.event_id);
        } else {
            say!(
                "  retained no: not in the event log ({}), so it cannot be replayed",
                crate::event_search::retention_note(&store)
            );
        }
        if let Some(r) = &m.record {
            say!("  key     {}", r.key);
            say!("  status  {}  (duplicates: {})", r.status, r.duplicate_count);
            if let Some(outcome) = &r.outcome {
                say!("  outcome {outcome}");
            }
        }
        say!("timeline:");
        for s in &steps {
            let detail = if s.detail.is_null() { String::new() } else { s.detail.to_string() };
            say!("  {}  {:<26} {:<28} {detail}", s.at, s.step.as_str(), s.actor);
        }
        if let Some(r) = &retry {
            say!(
                "retry: {} attempts, status {}, last error ({}): {}",
                r.attempts,
                r.status.as_str(),
                r.error_class.as_str(),
                r.last_error
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
