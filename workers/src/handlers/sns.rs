//! SNS events → Slack: CloudWatch alarms as Block Kit messages, every other notification (AWS Budgets, AWS
//! Health, plain text) as a readable message, and subscription (un)confirmations handled and audited.
//!
//! The channel is the hook's when the message arrived on a hook URL, else the one configured for the topic
//! (`EVENTFLEET_SNS_TOPIC_CHANNELS`), else the default channel. Nothing is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, Envelope, Source, Step};
use serde_json::{Value, json};

use crate::digest::Line;
use crate::slack::{SlackMessage, truncate};
use crate::wait::Ready;
use crate::{Handler, HandlerContext, HandlerError};

/// Where SNS messages go, and how alarms thread there.
#[derive(Debug, Clone, Default)]
pub struct SnsRouting {
    /// Topic ARN → channel.
    pub topic_channels: HashMap<String, String>,
    /// Channel of topics without one.
    pub default_channel: String,
    /// Alarm threads and flapping.
    pub alarms: super::alarm_settings::AlarmSettings,
}

impl SnsRouting {
    pub(crate) async fn channel(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let Source::Sns { topic_arn, hook_id } = envelope.source() else {
            return Err(HandlerError::Permanent("not an SNS event".into()));
        };
        if let Some(channel) = &ctx.channel {
            return Ok(channel.clone());
        }
        if let Some(hook_id) = hook_id {
            let hook = ctx
                .store
                .webhooks
                .get(hook_id)
                .await
                .map_err(|e| HandlerError::retryable(format!("read hook {hook_id}: {e}")))?;
            if let Some(hook) = hook {
                return Ok(hook.channel);
            }
        }
        Ok(self.topic_channels.get(topic_arn).cloned().unwrap_or_else(|| self.default_channel.clone()))
    }
}

/// The SNS envelope body (`Message`, `Subject`, `SubscribeURL`...).
pub(crate) fn sns_body(envelope: &Envelope) -> Result<Value, HandlerError> {
    let text = envelope.as_v1().body.as_text().ok_or_else(|| HandlerError::Permanent("SNS body is not text".into()))?;
    serde_json::from_str(text).map_err(|e| HandlerError::Permanent(format!("SNS body is not JSON: {e}")))
}

pub(crate) fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Every other SNS notification.
pub struct Notification(pub SnsRouting);

#[async_trait]
impl Handler for Notification {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        let sns = sns_body(envelope)?;
        let channel = self.0.channel(ctx, envelope).await?;
        let topic = str_of(&sns, "TopicArn").rsplit(':').next().unwrap_or("");
        let message = notification_message(&channel, topic, str_of(&sns, "Subject"), str_of(&sns, "Message"));
        let line = Line::new(format!("SNS {topic}"), &message.text, "");
        let posted = ready!(ctx.post_or_fold(envelope, line, &message).await?);
        Ok(Ready::Now(format!("notification posted to {channel} ({posted})")))
    }
}

/// A readable message for any notification: AWS Health and other EventBridge events summarised, other JSON
/// pretty-printed, text as text.
pub fn notification_message(channel: &str, topic: &str, subject: &str, body: &str) -> SlackMessage {
    let title = if subject.is_empty() { format!("SNS notification on {topic}") } else { subject.to_owned() };
    let text = match serde_json::from_str::<Value>(body) {
        Ok(event) if event.get("detail-type").is_some() => {
            let detail = event.get("detail").unwrap_or(&Value::Null);
            let description =
                detail.pointer("/eventDescription/0/latestDescription").and_then(Value::as_str).unwrap_or("");
            format!(
                "*{title}*\n*{}* from `{}` in {}\n{}{}",
                str_of(&event, "detail-type"),
                str_of(&event, "source"),
                str_of(&event, "region"),
                [str_of(detail, "service"), str_of(detail, "eventTypeCode"), str_of(detail, "statusCode")]
                    .iter()
                    .filter(|s| !s.is_empty())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(" · "),
                if description.is_empty() {
                    String::new()
                } else {
                    format!("\n>{}", truncate(description, 2500, "…"))
                }
            )
        }
        Ok(json) => {
            format!(
                "*{title}*\n```\n{}\n```",
                truncate(&serde_json::to_string_pretty(&json).unwrap_or_default(), 2800, "…")
            )
        }
        Err(_) => format!("*{title}*\n{}", truncate(body, 2900, "…")),
    };
    SlackMessage { channel: channel.to_owned(), text, blocks: None, attachments: None, thread_ts: None }
}

/// How a subscription is confirmed: a GET of its `SubscribeURL` ([`UrlConfirmer`], the embedded backend), or the
/// SNS `ConfirmSubscription` API (the aws backend, which fetches no URL).
#[async_trait]
pub trait SubscriptionConfirmer: Send + Sync {
    /// Confirms the subscription of a `SubscriptionConfirmation` message.
    async fn confirm(&self, topic_arn: &str, token: &str, subscribe_url: &str) -> Result<(), HandlerError>;
}

/// Confirms with a GET of the `SubscribeURL`, which must pass the SNS host rule (never fetched otherwise).
pub struct UrlConfirmer {
    http: reqwest::Client,
}

impl UrlConfirmer {
    /// A confirmer with a per-request timeout.
    pub fn new(timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { http }
    }
}

#[async_trait]
impl SubscriptionConfirmer for UrlConfirmer {
    async fn confirm(&self, _topic_arn: &str, _token: &str, subscribe_url: &str) -> Result<(), HandlerError> {
        let url = eventfleet_verify::sns::check_subscribe_url(subscribe_url)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        let response = self.http.get(url).send().await.map_err(|e| {
            HandlerError::retryable(format!(
                "SubscribeURL: {}",
                if e.is_timeout() { "timed out" } else { "request failed" }
            ))
        })?;
        let status = response.status();
        if status.is_server_error() {
            return Err(HandlerError::retryable(format!("SubscribeURL answered HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(HandlerError::Permanent(format!("SubscribeURL answered HTTP {}", status.as_u16())));
        }
        Ok(())
    }
}

/// Confirms a subscription through its [`SubscriptionConfirmer`] and audits it.
pub struct SubscriptionConfirmation {
    confirmer: Arc<dyn SubscriptionConfirmer>,
}

impl SubscriptionConfirmation {
    /// Confirms through `confirmer`.
    pub fn new(confirmer: Arc<dyn SubscriptionConfirmer>) -> Self {
        Self { confirmer }
    }
}

#[async_trait]
impl Handler for SubscriptionConfirmation {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        let sns = sns_body(envelope)?;
        let topic = str_of(&sns, "TopicArn").to_owned();
        let token = str_of(&sns, "Token");
        if topic.is_empty() || token.is_empty() {
            return Err(HandlerError::Permanent("SubscriptionConfirmation without TopicArn or Token".into()));
        }
        self.confirmer.confirm(&topic, token, str_of(&sns, "SubscribeURL")).await?;
        audit(ctx, envelope, Step::SubscriptionConfirmed, json!({ "topic": topic })).await;
        Ok(Ready::Now(format!("subscription to {topic} confirmed")))
    }
}

/// Records an unsubscribe confirmation.
pub struct UnsubscribeConfirmation;

#[async_trait]
impl Handler for UnsubscribeConfirmation {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        let sns = sns_body(envelope)?;
        let topic = str_of(&sns, "TopicArn").to_owned();
        audit(ctx, envelope, Step::UnsubscribeConfirmed, json!({ "topic": topic })).await;
        Ok(Ready::Now(format!("unsubscribed from {topic}")))
    }
}

async fn audit(ctx: &HandlerContext, envelope: &Envelope, step: Step, detail: Value) {
    let entry = AuditEntry::new(envelope.event_id(), ctx.store.clock.now(), step, "worker").with_detail(detail);
    if let Err(e) = ctx.store.audit.append(vec![entry]).await {
        tracing::warn!(error = %e, event_id = %envelope.event_id(), "could not audit an SNS subscription change");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_events_budgets_and_text_read_well() {
        let health = json!({"detail-type": "AWS Health Event", "source": "aws.health", "region": "eu-west-1",
            "detail": {"service": "EC2", "eventTypeCode": "AWS_EC2_OPERATIONAL_ISSUE", "statusCode": "open",
                       "eventDescription": [{"latestDescription": "Increased API error rates"}]}});
        let m = notification_message("#c", "health", "", &health.to_string());
        assert!(m.text.contains("AWS Health Event") && m.text.contains("Increased API error rates"), "{}", m.text);
        let budget = "AWS Budget Notification November 22, 2026\nAWS Account 123456789012\nDear AWS Customer, ...";
        let m = notification_message("#c", "budgets", "AWS Budgets: monthly has exceeded your alert threshold", budget);
        assert!(m.text.starts_with("*AWS Budgets: monthly") && m.text.contains("Dear AWS Customer"));
        let m = notification_message("#c", "t", "", r#"{"a":1}"#);
        assert!(m.text.contains("```"));
    }
}
