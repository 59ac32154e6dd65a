//! Hook payloads (and GitHub deliveries) → the hook's Slack channel.
//!
//! A GitHub delivery is laid out by its event type ([`crate::github`]), after the hook's filter had its say (a
//! filtered delivery is audited `filtered` with the rule, and not posted). A Slack message JSON (`text`,
//! `blocks` or `attachments`) passes through; other JSON leads with its `title`, `message`, `summary`, `status`
//! (or `description`) and lists its other top-level values, and is a code block only when it has none of
//! those; text is posted as text. The sender's words are escaped, never read as mentions or links (a Slack
//! message JSON is the sender's own markup and passes through).

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, Envelope, HookKind, Step, Webhook};
use serde_json::{Value, json};

use crate::block_kit::{code, escape};
use crate::digest::Line;
use crate::github::filter::{Decision, decide};
use crate::slack::{SlackMessage, truncate};
use crate::wait::Ready;
use crate::{Handler, HandlerContext, HandlerError};

/// Posts a hook's payload to its channel.
pub struct HookPayload;

/// Slack caps `text` at 40,000 characters; stay well below so the post is never refused for size.
const MAX_TEXT: usize = 3_000;

#[async_trait]
impl Handler for HookPayload {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
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
        // A route's channel list wins over the hook's.
        let hook = Webhook { channel: ctx.channel_or(&hook.channel), ..hook };
        let body =
            envelope.as_v1().body.to_bytes().map_err(|e| HandlerError::Permanent(format!("undecodable body: {e}")))?;
        if let Some(event) = envelope.kind().as_str().strip_prefix("github.") {
            // GitHub sends JSON, or with the form content type the same JSON in a `payload` field.
            let payload = serde_json::from_slice::<Value>(&body).ok().or_else(|| {
                url::form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "payload")
                    .and_then(|(_, v)| serde_json::from_str(&v).ok())
            });
            return github(ctx, envelope, &hook, event, payload.as_ref(), &body).await;
        }
        let prefix = match (hook.kind, envelope.kind().as_str().strip_prefix("github.")) {
            (_, Some(event)) => format!("GitHub `{event}` via {}", hook.name),
            (HookKind::Alert, None) => format!(":rotating_light: {}", hook.name),
            (HookKind::Info, None) => hook.name.clone(),
        };
        let message = render(&hook.channel, &prefix, &body);
        let line = Line::new(format!("hook {}", hook.name), &message.text, &prefix);
        let posted = ready!(ctx.post_or_fold(envelope, line, &message).await?);
        Ok(Ready::Now(format!("posted to {} ({posted})", hook.channel)))
    }
}

/// A GitHub delivery: filtered (audited, not posted), or laid out by its event type.
async fn github(
    ctx: &HandlerContext,
    envelope: &Envelope,
    hook: &Webhook,
    event: &str,
    payload: Option<&Value>,
    body: &[u8],
) -> Result<Ready<String>, HandlerError> {
    // A body that is not JSON still meets the filter, on its event alone.
    let action = payload.and_then(|p| p.get("action")).and_then(Value::as_str);
    let outcome = payload.and_then(|p| crate::github::outcome(event, p));
    if let Some(filter) = &hook.filter
        && let Decision::Filtered(rule) = decide(filter, event, action, outcome.as_deref())
    {
        let detail = json!({ "rule": rule, "event": event, "action": action, "outcome": outcome });
        let entry =
            AuditEntry::new(envelope.event_id(), ctx.store.clock.now(), Step::Filtered, "worker").with_detail(detail);
        // The line is the trail's record of why nothing was posted: a failure to write it retries the attempt.
        ctx.store.audit.append(vec![entry]).await.map_err(|e| HandlerError::retryable(format!("audit: {e}")))?;
        return Ok(Ready::Now(format!("filtered by hook {} ({rule}); not posted", hook.name)));
    }
    // A run, a deployment or a pull request is one message, updated as its deliveries arrive (unless the hook
    // asked for a message per delivery).
    if let Some(payload) = payload.filter(|_| !hook.per_delivery)
        && let Some(subject) = crate::github::living::subject(event, payload)
    {
        // Teams cannot update a message: it gets a card of the deliveries that end or turn something (a run that
        // completed, a deployment's final status, a pull request opened, merged or closed, a review).
        let targets = crate::targets::targets(&hook.channel)?;
        let mut said = Vec::new();
        if !targets.teams.is_empty() && crate::github::living::worth_a_card(event, payload) {
            let message = crate::github::message(&hook.channel, &hook.name, event, payload);
            let line = Line::new(format!("GitHub {event} via {}", hook.name), &message.text, "");
            said.push(ready!(crate::targets::teams(ctx, envelope, &targets.teams, &message, Some(line)).await?));
        }
        if let Some(slack) = targets.slack {
            let hook = Webhook { channel: slack, ..hook.clone() };
            said.push(ready!(crate::github::living::deliver(ctx, envelope, &hook, event, payload, &subject).await?));
        }
        if said.is_empty() {
            said.push(format!("{event}: not a delivery Teams gets a card of"));
        }
        return Ok(Ready::Now(said.join("; ")));
    }
    let message = match payload {
        Some(payload) => crate::github::message(&hook.channel, &hook.name, event, payload),
        None => render(&hook.channel, &format!("GitHub `{event}` via {}", hook.name), body),
    };
    let line = Line::new(format!("GitHub {event} via {}", hook.name), &message.text, "");
    let posted = ready!(ctx.post_or_fold(envelope, line, &message).await?);
    Ok(Ready::Now(format!("posted to {} ({posted})", hook.channel)))
}

/// Top-level fields that say what a generic payload is about, in the order they lead the message.
const LEAD_FIELDS: &[&str] = &["title", "message", "summary", "status", "description"];

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
                thread_ts: None,
            };
        }
        if let Some(text) = lead(prefix, obj) {
            return SlackMessage {
                channel: channel.to_owned(),
                text,
                blocks: None,
                attachments: None,
                thread_ts: None,
            };
        }
    }
    let text = match json {
        // The sender's words are shown, not read as markup: a `<!channel>` in a payload notifies nobody.
        Some(value) => {
            let pretty = serde_json::to_string_pretty(&value).unwrap_or_default();
            format!("{prefix}\n```\n{}\n```", escape(&truncate(&pretty, MAX_TEXT, "… (truncated)")))
        }
        None => format!("{prefix}\n{}", escape(&truncate(&String::from_utf8_lossy(body), MAX_TEXT, "… (truncated)"))),
    };
    SlackMessage { channel: channel.to_owned(), text, blocks: None, attachments: None, thread_ts: None }
}

/// A generic payload that says what it is about: its lead fields first, then its other top-level values as
/// `key: value` lines (nested ones compacted), cut from the end. `None` when it has no lead field.
fn lead(prefix: &str, obj: &serde_json::Map<String, Value>) -> Option<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    };
    let leads: Vec<(&str, String)> =
        LEAD_FIELDS.iter().filter_map(|k| obj.get(*k).and_then(scalar).map(|v| (*k, v))).collect();
    if leads.is_empty() {
        return None;
    }
    // The payload's words are laid out as mrkdwn here (not in a code block): escaped.
    let mut out = format!("{prefix}\n");
    for (key, value) in &leads {
        match *key {
            "title" => out.push_str(&format!("*{}*\n", escape(&truncate(value, 300, "…")).replace('*', "∗"))),
            "status" => out.push_str(&format!("status: {}\n", code(&truncate(value, 100, "…")))),
            _ => out.push_str(&format!("{}\n", escape(&truncate(value, 1_000, "…")))),
        }
    }
    for (key, value) in obj.iter().filter(|(k, _)| !LEAD_FIELDS.contains(&k.as_str())).take(20) {
        let shown = scalar(value).unwrap_or_else(|| value.to_string());
        out.push_str(&format!("• {}: {}\n", escape(key), escape(&truncate(&shown, 200, "…"))));
    }
    Some(truncate(out.trim_end(), MAX_TEXT, "… (truncated)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_json_leads_with_what_it_is_about() {
        let body = br#"{"details":{"host":"db-1","disk":"/var"},"status":"firing","message":"disk 95% full","zz":1}"#;
        let m = render("#c", "ops", body);
        assert!(m.text.starts_with("ops\ndisk 95% full\nstatus: `firing`\n"), "{}", m.text);
        assert!(
            m.text.contains("• details: {\"host\":\"db-1\",\"disk\":\"/var\"}"),
            "in the payload's order: {}",
            m.text
        );
        let hostile = render("#c", "ops", br#"{"message":"<!channel> down","status":"a`b"}"#);
        assert!(hostile.text.contains("&lt;!channel&gt; down") && hostile.text.contains("`a'b`"), "{}", hostile.text);
        assert!(!m.text.contains("```"), "no code block when the payload says what it is: {}", m.text);
        let long = format!(r#"{{"title":"t","blob":"{}"}}"#, "x".repeat(10_000));
        assert!(render("#c", "ops", long.as_bytes()).text.len() < 3_100);
    }

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
        assert_eq!(render("#c", "p", b"<!channel> down & out").text, "p\n&lt;!channel&gt; down &amp; out");
        assert!(render("#c", "p", br#"{"a":"<!here>"}"#).text.contains("&lt;!here&gt;"), "in a code block too");
    }

    #[test]
    fn long_bodies_are_truncated_on_a_char_boundary() {
        let body = "é".repeat(5000);
        let m = render("#c", "p", body.as_bytes());
        assert!(m.text.len() < 3_100);
        assert!(m.text.ends_with("(truncated)"));
    }
}
