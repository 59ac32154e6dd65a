//! `eventfleet events show <event id | idempotency key>`: the audit timeline and the retry record.

use std::path::Path;
use std::process::ExitCode;

use eventfleet_schema::{EventId, IdempotencyKey};
use serde_json::json;

use super::print_json;
use crate::cli::EventsCommand;
use crate::config::Config;

/// Runs an events command.
pub async fn run(config: &Config, data_dir: &Path, command: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Show { id, json } = command;
    let store = crate::backend::open(config, data_dir).await?;
    let record = match EventId::parse(&id) {
        Some(event_id) => store.idempotency.find_by_event(event_id).await?,
        None => store.idempotency.get(&IdempotencyKey::from_raw(id.trim())).await?,
    };
    let Some(event_id) = record.as_ref().map(|r| r.event_id).or_else(|| EventId::parse(&id)) else {
        eprintln!("no event with id or idempotency key {id:?}");
        return Ok(ExitCode::FAILURE);
    };
    let steps = store.audit.history(event_id).await?;
    let retry = store.retries.get(event_id).await?;
    if record.is_none() && steps.is_empty() {
        eprintln!("no event with id or idempotency key {id:?}");
        return Ok(ExitCode::FAILURE);
    }
    if json {
        print_json(&json!({ "event_id": event_id, "idempotency": record, "steps": steps, "retry": retry }))?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("event {event_id}");
    if let Some(r) = &record {
        println!("  key     {}", r.key);
        println!("  status  {}  (duplicates: {})", r.status, r.duplicate_count);
        if let Some(outcome) = &r.outcome {
            println!("  outcome {outcome}");
        }
    }
    println!("timeline:");
    for s in &steps {
        let detail = if s.detail.is_null() { String::new() } else { s.detail.to_string() };
        println!("  {}  {:<26} {:<28} {detail}", s.at, s.step.as_str(), s.actor);
    }
    if let Some(r) = &retry {
        println!(
            "retry: {} attempts, status {}, last error ({}): {}",
            r.attempts,
            r.status.as_str(),
            r.error_class.as_str(),
            r.last_error
        );
    }
    Ok(ExitCode::SUCCESS)
}
