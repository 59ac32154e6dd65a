//! The `sent` lines of an event's trail: which of its chats (a Teams channel, or the Slack channel beside one) its
//! message reached. Written as soon as a target succeeds, read before any target is tried ([`crate::targets`],
//! the digests' flushes), so a retry, a wait or a replay never posts to a target twice.

use eventfleet_schema::{AuditEntry, EventId, Step};
use serde_json::json;

use crate::{HandlerContext, HandlerError};

/// The targets the event's trail says were posted to, with what was said of each.
pub async fn before(ctx: &HandlerContext, event: EventId) -> Result<Vec<(String, String)>, HandlerError> {
    let trail = ctx.store.audit.history(event).await.map_err(|e| HandlerError::retryable(format!("audit: {e}")))?;
    // A replay asking for new messages counts only what it sent itself.
    let this_replay = ctx.replay.as_ref().and_then(|r| r.mark_suffix());
    Ok(trail
        .iter()
        .filter(|entry| entry.step == Step::Sent)
        .filter(|entry| this_replay.is_none_or(|id| entry.detail["replay"].as_str() == Some(id)))
        .filter_map(|entry| {
            let detail = &entry.detail;
            Some((detail["target"].as_str()?.to_owned(), detail["outcome"].as_str().unwrap_or("").to_owned()))
        })
        .collect())
}

/// The `sent` line: the target is done. A failure to write it retries the attempt (the post may then repeat: at
/// least once, never lost).
pub async fn record(ctx: &HandlerContext, event: EventId, target: &str, outcome: &str) -> Result<(), HandlerError> {
    let mut detail = json!({ "target": target, "outcome": outcome });
    if let Some(replay) = &ctx.replay {
        detail["replay"] = replay.id.as_str().into();
    }
    let entry = AuditEntry::new(event, ctx.store.clock.now(), Step::Sent, ctx.poster.worker()).with_detail(detail);
    ctx.store.audit.append(vec![entry]).await.map_err(|e| HandlerError::retryable(format!("audit: {e}")))
}
