//! `eventfleet events show <event id | idempotency key | sender id>`: the audit timeline and the retry record.

use std::path::Path;
use std::process::ExitCode;

use serde_json::json;

use super::print_json;
use crate::cli::EventsCommand;
use crate::config::Config;

/// Runs an events command.
pub async fn run(config: &Config, data_dir: &Path, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Show { id, json } = command;
    let store = crate::backend::open_existing(config, data_dir).await?;
    let matches = crate::lookup::events(&store, &id).await?;
    let mut shown = Vec::new();
    for m in matches {
        let steps = store.audit.history(m.event_id).await?;
        let retry = store.retries.get(m.event_id).await?;
        if m.record.is_some() || !steps.is_empty() {
            shown.push((m, steps, retry));
        }
    }
    if shown.is_empty() {
        eprintln!("no event with id, idempotency key or sender id {id:?}");
        return Ok(ExitCode::FAILURE);
    }
    if json {
        let views: Vec<_> = (shown.iter())
            .map(|(m, steps, retry)| {
                json!({ "event_id": m.event_id, "idempotency": m.record, "steps": steps, "retry": retry })
            })
            .collect();
        // One event prints its object; a sender id that several sources share, a list of them.
        match <[_; 1]>::try_from(views) {
            Ok([one]) => print_json(&one)?,
            Err(views) => print_json(&views)?,
        }
        return Ok(ExitCode::SUCCESS);
    }
    for (m, steps, retry) in shown {
        say!("event {}", m.event_id);
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
