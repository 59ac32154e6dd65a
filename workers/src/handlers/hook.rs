//! Hook payloads (and GitHub deliveries) → the hook's Slack channel.
//!
//! A Slack message JSON (`text`, `blocks` or `attachments`) passes through; other JSON is shown pretty-printed
//! in a code block; text is posted as text.

use async_trait::async_trait;
use eventfleet_schema::{Envelope, HookKind};

use crate::slack::{SlackMessage, truncate};
use crate::{Handler, HandlerContext, HandlerError};

/// Posts a hook's payload to its channel.
pub struct HookPayload;

/// Slack caps `text` at 40,000 characters; stay well below so the post is never refused for size.
const MAX_TEXT: usize = 3_000;

#[async_trait]
impl Handler for HookPayload {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let hook_id = envelope
            .source()
            .hook_id()
            .ok_or_else(|| HandlerError::Permanent("hook payload without a hook id".into()))?;
        let hook = ctx
            .store
            .webhooks
            .get(hook_id)
            .await
            .map_err(|e| HandlerError::retryable(format!("read hook {hook_id}: {e}")))?
            .ok_or_else(|| HandlerError::Permanent(format!("hook {hook_id} no longer exists")))?;
        let body =
            envelope.as_v1().body.to_bytes().map_err(|e| HandlerError::Permanent(format!("undecodable body: {e}")))?;
        let prefix = match (hook.kind, envelope.kind().as_str().strip_prefix("github.")) {
            (_, Some(event)) => format!("GitHub `{event}` via {}", hook.name),
            (HookKind::Alert, None) => format!(":rotating_light: {}", hook.name),
            (HookKind::Info, None) => hook.name.clone(),
        };
        let message = render(&hook.channel, &prefix, &body);
        let posted = ctx.slack.post_message(envelope.event_id(), &message).await?;
        Ok(format!("posted to {} ({posted})", hook.channel))
    }
}

/// Builds the Slack message for a payload.
pub fn render(channel: &str, prefix: &str, body: &[u8]) -> SlackMessage {
    let json = serde_json::from_slice::<serde_json::Value>(body).ok();
    if let Some(obj) = json.as_ref().and_then(|v| v.as_object()) {
        let is_slack = ["text", "blocks", "attachments"].iter().any(|k| obj.contains_key(*k));
        if is_slack {
            return SlackMessage {
                channel: channel.to_owned(),
                text: obj.get("text").and_then(|t| t.as_str()).unwrap_or(prefix).to_owned(),
                blocks: obj.get("blocks").cloned(),
                attachments: obj.get("attachments").cloned(),
            };
        }
    }
    let text = match json {
        Some(value) => {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            format!("{prefix}\n```\n{}\n```", truncate(&pretty, MAX_TEXT, "… (truncated)"))
        }
        None => format!("{prefix}\n{}", truncate(&String::from_utf8_lossy(body), MAX_TEXT, "… (truncated)")),
    };
    SlackMessage { channel: channel.to_owned(), text, blocks: None, attachments: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_json_passes_through() {
        let m = render("#c", "p", br#"{"text":"hi","blocks":[{"type":"divider"}]}"#);
        assert_eq!(m.text, "hi");
        assert_eq!(m.blocks, Some(serde_json::json!([{"type":"divider"}])));
    }

    #[test]
    fn other_json_is_a_code_block_and_text_is_text() {
        let m = render("#c", "p", br#"{"a":1}"#);
        assert_eq!(m.text, "p\n```\n{\n  \"a\": 1\n}\n```");
        assert_eq!(render("#c", "p", b"disk full").text, "p\ndisk full");
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let body = "é".repeat(5000);
        let m = render("#c", "p", body.as_bytes());
        assert!(m.text.len() < 3_100);
        assert!(m.text.ends_with("(truncated)"));
    }
}
