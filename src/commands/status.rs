//! `eventfleet status` and `eventfleet outbox`.

use std::path::Path;
use std::process::ExitCode;

use eventfleet_workers::slack::{DevOutbox, OUTBOX_FILE};

use super::print_json;
use crate::config::Config;

/// How far back the processing rate looks.
const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// One screen for an operator: queue depth, in flight, oldest message age, dead letters by reason, processing
/// rate over the last 5 minutes, and the kinds that fail most. Built on the ports, so it reads either backend.
pub async fn status(config: &Config, data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use std::collections::BTreeMap;

    use eventfleet_schema::{RetryStatus, Step};
    use eventfleet_storage::{AuditQuery, DeadLetterFilter};

    let store = crate::backend::open_existing(config, data_dir).await?;
    let now = store.clock.now();
    let stats = store.queue.stats().await?;
    let dead = store.dead_letters.list(&DeadLetterFilter::default()).await?;
    let succeeded = store
        .audit
        .query(&AuditQuery { step: Some(Step::Succeeded), since: Some(now.minus(RATE_WINDOW)), ..Default::default() })
        .await?
        .len();
    let retrying = store.retries.list(Some(RetryStatus::Active), 10_000).await?.len();
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut failing_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for d in &dead {
        *by_reason.entry(d.reason.clone()).or_default() += 1;
        *failing_kinds.entry(d.envelope.kind().to_string()).or_default() += 1;
    }
    let mut top_kinds: Vec<(String, u64)> = failing_kinds.into_iter().collect();
    top_kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top_kinds.truncate(5);
    let rate = succeeded as f64 / RATE_WINDOW.as_secs_f64();
    if json {
        print_json(&serde_json::json!({
            "backend": store.backend,
            "queue": stats,
            "dlq_by_reason": by_reason,
            "processed_5m": succeeded,
            "processed_per_second_5m": rate,
            "retrying": retrying,
            "top_failing_kinds": top_kinds.iter().map(|(k, n)| serde_json::json!({"kind": k, "dead_letters": n})).collect::<Vec<_>>(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let age = stats.oldest_age_ms.map_or("-".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
    say!("backend          {}", store.backend);
    say!("waiting          {}", stats.waiting);
    say!("in flight        {}", stats.in_flight);
    say!("oldest message   {age}");
    say!("processed        {succeeded} in the last 5 min ({rate:.2}/s)");
    say!("retrying         {retrying}");
    say!("dead letters     {}", stats.dead_letters);
    for (reason, n) in &by_reason {
        say!("  {n:>6}  {reason}");
    }
    if !top_kinds.is_empty() {
        say!("top failing kinds");
        for (kind, n) in &top_kinds {
            say!("  {n:>6}  {kind}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The dev outbox.
pub fn outbox(config: &Config, data_dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    crate::backend::require_store(config, data_dir)?;
    let entries = DevOutbox::read(&data_dir.join(OUTBOX_FILE))?;
    if json {
        print_json(&entries)?;
    } else {
        for e in &entries {
            say!("{}  {}  {}  {}", e.at, e.event_id, e.message.channel, e.message.text.replace('\n', " ⏎ "));
        }
        if entries.is_empty() {
            say!("(the dev outbox is empty)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
