//! `eventfleet status` and `eventfleet outbox`.

use std::path::Path;
use std::process::ExitCode;

use eventfleet_workers::slack::{DevOutbox, OUTBOX_FILE};

use super::print_json;
use crate::config::Config;

/// Queue depth, in flight, oldest age, dead letters.
pub async fn status(config: &Config, data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let store = crate::backend::open(config, data_dir)?;
    let stats = store.queue.stats().await?;
    if json {
        print_json(&serde_json::json!({ "backend": store.backend, "queue": stats }))?;
    } else {
        println!("backend        {}", store.backend);
        println!("waiting        {}", stats.waiting);
        println!("in flight      {}", stats.in_flight);
        let age = stats.oldest_age_ms.map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
        println!("oldest message {age}");
        println!("dead letters   {}", stats.dead_letters);
    }
    Ok(ExitCode::SUCCESS)
}

/// The dev outbox.
pub fn outbox(data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let entries = DevOutbox::read(&data_dir.join(OUTBOX_FILE))?;
    if json {
        print_json(&entries)?;
    } else {
        for e in &entries {
            println!("{}  {}  {}  {}", e.at, e.event_id, e.message.channel, e.message.text.replace('\n', " ⏎ "));
        }
        if entries.is_empty() {
            println!("(the dev outbox is empty)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
