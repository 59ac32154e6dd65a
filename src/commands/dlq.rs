//! `eventfleet dlq list|show|replay|purge`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use eventfleet_schema::Timestamp;
use eventfleet_storage::{DeadLetter, DeadLetterFilter, MessageId, Store};
use eventfleet_workers::replay::{ReplayOptions, replay};
use serde_json::json;

use super::print_json;
use crate::cli::{DlqCommand, DlqFilterArgs, DlqSelection};
use crate::config::Config;

/// Runs a dlq command.
pub async fn run(config: &Config, data_dir: &Path, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let store = crate::backend::open_existing(config, data_dir).await?;
    match command {
        DlqCommand::List { filter, limit, json } => {
            let mut filter = to_filter(&filter, store.clock.now())?;
            filter.limit = limit;
            let letters = store.dead_letters.list(&filter).await?;
            if json {
                print_json(&letters.iter().map(summary).collect::<Vec<_>>())?;
            } else if letters.is_empty() {
                say!("(no dead letters)");
            } else {
                // The event id beside the dead letter's own: the two look alike, and operators know the event.
                say!(
                    "{:<44}  {:<36}  {:<24}  {:<22}  reason",
                    "dead-letter id",
                    "event id",
                    "dead-lettered at",
                    "kind"
                );
                for l in &letters {
                    say!(
                        "{:<44}  {:<36}  {:<24}  {:<22}  {}",
                        l.message_id,
                        l.envelope.event_id(),
                        l.dead_lettered_at,
                        l.envelope.kind(),
                        l.reason
                    );
                }
            }
        }
        DlqCommand::Show { id, json } => {
            let letters = crate::lookup::dead_letters(&store, &id).await?;
            if letters.is_empty() {
                eprintln!("no dead letter {id:?} (looked for a dead-letter id, event id, idempotency key, sender id)");
                return Ok(ExitCode::FAILURE);
            }
            let mut shown = Vec::new();
            for letter in letters {
                let event_id = letter.envelope.event_id();
                let retry = store.retries.get(event_id).await?;
                let steps = store.audit.history(event_id).await?;
                shown.push((letter, retry, steps));
            }
            if json {
                let views: Vec<_> = (shown.iter())
                    .map(|(letter, retry, steps)| json!({ "dead_letter": letter, "retry": retry, "steps": steps }))
                    .collect();
                // One match prints its object, as for a dead-letter id; a sender id shared by sources, a list.
                match <[_; 1]>::try_from(views) {
                    Ok([one]) => print_json(&one)?,
                    Err(views) => print_json(&views)?,
                }
            } else {
                for (letter, retry, steps) in shown {
                    let event_id = letter.envelope.event_id();
                    say!("dead letter {}", letter.message_id);
                    say!("  event     {event_id} ({})", letter.envelope.kind());
                    say!("  key       {}", letter.envelope.idempotency_key());
                    say!("  reason    {}", letter.reason);
                    say!("  at        {} after {} receives", letter.dead_lettered_at, letter.receive_count);
                    if let Some(r) = retry {
                        say!("  attempts  {} (last error, {}: {})", r.attempts, r.error_class.as_str(), r.last_error);
                    }
                    say!("timeline:");
                    for s in steps {
                        say!("  {}  {:<24} {}", s.at, s.step.as_str(), s.actor);
                    }
                }
            }
        }
        DlqCommand::Replay { selection, dry_run, rate, by, json } => {
            if rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
                bail!("--rate must be a positive number of replays per second");
            }
            let letters = select(&store, &selection).await?;
            if letters.is_empty() && !json {
                say!("(no dead letters match)");
                return Ok(ExitCode::SUCCESS);
            }
            let options = ReplayOptions { by, dry_run, rate };
            let progress = super::replay_progress(letters.len() > 1 && !json);
            let outcomes = replay(&store, &letters, &options, progress).await;
            let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
            if json {
                print_json(
                    &json!({ "dry_run": dry_run, "replayed": outcomes.len() - failed, "failed": failed, "outcomes": outcomes }),
                )?;
            } else {
                for o in &outcomes {
                    match (&o.error, &o.requeued_as, dry_run) {
                        (Some(e), _, _) => say!("failed   {}  {}: {e}", o.dead_letter, o.event_id),
                        (None, _, true) => say!("would replay {}  {}", o.dead_letter, o.event_id),
                        (None, Some(new), false) => say!("replayed {}  {} as {new}", o.dead_letter, o.event_id),
                        (None, None, false) => {}
                    }
                }
            }
            if failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge { selection, json } => {
            let DlqSelection { ids, all, filter } = selection;
            let deleted = if ids.is_empty() {
                if !all && is_empty(&filter) {
                    bail!("name dead-letter ids, or --all, or filters");
                }
                store.dead_letters.purge(&to_filter(&filter, store.clock.now())?).await?
            } else {
                let ids: Vec<MessageId> = ids.into_iter().map(MessageId).collect();
                store.dead_letters.delete(&ids).await?
            };
            if json {
                print_json(&json!({ "purged": deleted }))?;
            } else {
                say!("purged {deleted} dead letters");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The dead letters named by ids, `--all` or filters, oldest first.
async fn select(store: &Store, selection: &DlqSelection) -> anyhow::Result<Vec<DeadLetter>> {
    let DlqSelection { ids, all, filter } = selection;
    let (all, filter) = (*all, filter);
    if !ids.is_empty() {
        let mut letters: Vec<DeadLetter> = Vec::with_capacity(ids.len());
        for id in ids {
            let found = crate::lookup::dead_letters(store, id).await?;
            if found.is_empty() {
                bail!("no dead letter {id:?} (looked for a dead-letter id, event id, idempotency key, sender id)");
            }
            for letter in found {
                if !letters.iter().any(|l| l.message_id == letter.message_id) {
                    letters.push(letter);
                }
            }
        }
        // Replay in DLQ order whatever the order typed, so groups keep their order.
        letters.sort_by_key(|l| l.dead_lettered_at);
        return Ok(letters);
    }
    if !all && is_empty(filter) {
        bail!("name dead-letter ids, or --all, or filters");
    }
    Ok(store.dead_letters.list(&to_filter(filter, store.clock.now())?).await?)
}

fn is_empty(f: &DlqFilterArgs) -> bool {
    f.source.is_none() && f.kind.is_none() && f.error.is_none() && f.since.is_none() && f.until.is_none()
}

fn to_filter(args: &DlqFilterArgs, now: Timestamp) -> anyhow::Result<DeadLetterFilter> {
    Ok(DeadLetterFilter {
        source: args.source.clone(),
        kind: args.kind.clone(),
        error: args.error.clone(),
        since: args.since.as_deref().map(|t| crate::when::parse(t, now)).transpose().context("--since")?,
        until: args.until.as_deref().map(|t| crate::when::parse(t, now)).transpose().context("--until")?,
        limit: None,
    })
}

fn summary(l: &DeadLetter) -> serde_json::Value {
    json!({
        "id": l.message_id,
        "event_id": l.envelope.event_id(),
        "idempotency_key": l.envelope.idempotency_key(),
        "source": l.envelope.source().name(),
        "kind": l.envelope.kind(),
        "message_group": l.envelope.message_group(),
        "reason": l.reason,
        "receive_count": l.receive_count,
        "dead_lettered_at": l.dead_lettered_at,
    })
}
