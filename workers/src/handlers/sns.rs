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

use crate::slack::{SlackMessage, truncate};
use crate::{Handler, HandlerContext, HandlerError};

/// Where SNS messages go.
#[derive(Debug, Clone, Default)]
pub struct SnsRouting {
    /// Topic ARN → channel.
    pub topic_channels: HashMap<String, String>,
    /// Channel of topics without one.
    pub default_channel: String,
}

impl SnsRouting {
    async fn channel(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let Source::Sns { topic_arn, hook_id } = envelope.source() else {
            return Err(HandlerError::Permanent("not an SNS event".into()));
        };
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
fn sns_body(envelope: &Envelope) -> Result<Value, HandlerError> {
    let text = envelope.as_v1().body.as_text().ok_or_else(|| HandlerError::Permanent("SNS body is not text".into()))?;
    serde_json::from_str(text).map_err(|e| HandlerError::Permanent(format!("SNS body is not JSON: {e}")))
}

fn str_of<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// CloudWatch alarm state changes.
pub struct CloudWatchAlarm(pub SnsRouting);

#[async_trait]
impl Handler for CloudWatchAlarm {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let sns = sns_body(envelope)?;
        let alarm: Value = serde_json::from_str(str_of(&sns, "Message"))
            .map_err(|e| HandlerError::Permanent(format!("alarm message is not JSON: {e}")))?;
        let channel = self.0.channel(ctx, envelope).await?;
        let message = alarm_message(&channel, &alarm);
        let posted = ctx.post_once(envelope, &message).await?;
        Ok(format!(
            "alarm {} {} posted to {channel} ({posted})",
            str_of(&alarm, "AlarmName"),
            str_of(&alarm, "NewStateValue")
        ))
    }
}

/// The state marker: an emoji and the state name, so the message reads right with or without emoji.
pub fn state_marker(state: &str) -> &'static str {
    match state {
        "ALARM" => ":red_circle: ALARM",
        "OK" => ":large_green_circle: OK",
        "INSUFFICIENT_DATA" => ":white_circle: INSUFFICIENT_DATA",
        _ => ":grey_question: UNKNOWN STATE",
    }
}

/// The metric an alarm watches: namespace, name and dimensions, or the metric-math expressions.
pub fn metric_description(trigger: &Value) -> String {
    if let Some(metrics) = trigger.get("Metrics").and_then(Value::as_array) {
        let parts: Vec<String> = metrics
            .iter()
            .map(|m| match m.get("Expression").and_then(Value::as_str) {
                Some(expr) => format!("{} = `{expr}`", str_of(m, "Id")),
                None => {
                    let stat = m.get("MetricStat").unwrap_or(&Value::Null);
                    let metric = stat.get("Metric").unwrap_or(&Value::Null);
                    format!("{} = {}", str_of(m, "Id"), named_metric(metric))
                }
            })
            .collect();
        return parts.join("\n");
    }
    let mut text = named_metric(trigger);
    let stat = trigger
        .get("Statistic")
        .and_then(Value::as_str)
        .or_else(|| trigger.get("ExtendedStatistic").and_then(Value::as_str));
    if let Some(stat) = stat {
        text.push_str(&format!(
            ", {} over {} s",
            stat.to_lowercase(),
            trigger.get("Period").and_then(Value::as_u64).unwrap_or(0)
        ));
    }
    if let (Some(op), Some(threshold)) =
        (trigger.get("ComparisonOperator").and_then(Value::as_str), trigger.get("Threshold"))
    {
        text.push_str(&format!(", {op} {threshold}"));
    }
    text
}

fn named_metric(metric: &Value) -> String {
    let dims: Vec<String> = metric
        .get("Dimensions")
        .and_then(Value::as_array)
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    let name = d.get("name").or_else(|| d.get("Name")).and_then(Value::as_str).unwrap_or("");
                    let value = d.get("value").or_else(|| d.get("Value")).and_then(Value::as_str).unwrap_or("");
                    format!("{name}={value}")
                })
                .collect()
        })
        .unwrap_or_default();
    let base = format!("{} {}", str_of(metric, "Namespace"), str_of(metric, "MetricName"));
    if dims.is_empty() { base } else { format!("{base} ({})", dims.join(", ")) }
}

/// The CloudWatch console link of an alarm.
pub fn console_link(alarm: &Value) -> String {
    // The region code is in the ARN; the `Region` field is a display name ("US East (N. Virginia)").
    let region = str_of(alarm, "AlarmArn").split(':').nth(3).filter(|r| !r.is_empty()).unwrap_or("us-east-1");
    let name: String = url::form_urlencoded::byte_serialize(str_of(alarm, "AlarmName").as_bytes()).collect();
    format!("https://console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{name}")
}

/// The Block Kit message of an alarm.
pub fn alarm_message(channel: &str, alarm: &Value) -> SlackMessage {
    let name = str_of(alarm, "AlarmName");
    let state = str_of(alarm, "NewStateValue");
    let marker = state_marker(state);
    let reason = str_of(alarm, "NewStateReason");
    let trigger = alarm.get("Trigger").unwrap_or(&Value::Null);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("{} {name}", marker.split(' ').nth(1).unwrap_or(state)), 150, "…"), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("{marker}  *{name}*")}}),
    ];
    let description = str_of(alarm, "AlarmDescription");
    if !description.is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(description, 2900, "…")}}));
    }
    blocks.push(json!({"type": "section", "fields": [
        {"type": "mrkdwn", "text": format!("*Reason*\n{}", truncate(reason, 1900, "…"))},
        {"type": "mrkdwn", "text": format!("*State change*\n{} → {} at {}", str_of(alarm, "OldStateValue"), state, str_of(alarm, "StateChangeTime"))},
        {"type": "mrkdwn", "text": format!("*Metric*\n{}", truncate(&metric_description(trigger), 1900, "…"))},
        {"type": "mrkdwn", "text": format!("*Region*\n{} (account {})", str_of(alarm, "Region"), str_of(alarm, "AWSAccountId"))},
    ]}));
    blocks.push(json!({"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Open in CloudWatch"}, "url": console_link(alarm)}
    ]}));
    SlackMessage {
        channel: channel.to_owned(),
        text: format!("{marker}: {name}: {}", truncate(reason, 300, "…")),
        blocks: Some(Value::Array(blocks)),
        attachments: None,
    }
}

/// Every other SNS notification.
pub struct Notification(pub SnsRouting);

#[async_trait]
impl Handler for Notification {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let sns = sns_body(envelope)?;
        let channel = self.0.channel(ctx, envelope).await?;
        let topic = str_of(&sns, "TopicArn").rsplit(':').next().unwrap_or("");
        let message = notification_message(&channel, topic, str_of(&sns, "Subject"), str_of(&sns, "Message"));
        let posted = ctx.post_once(envelope, &message).await?;
        Ok(format!("notification posted to {channel} ({posted})"))
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
    SlackMessage { channel: channel.to_owned(), text, blocks: None, attachments: None }
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
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let sns = sns_body(envelope)?;
        let topic = str_of(&sns, "TopicArn").to_owned();
        let token = str_of(&sns, "Token");
        if topic.is_empty() || token.is_empty() {
            return Err(HandlerError::Permanent("SubscriptionConfirmation without TopicArn or Token".into()));
        }
        self.confirmer.confirm(&topic, token, str_of(&sns, "SubscribeURL")).await?;
        audit(ctx, envelope, Step::SubscriptionConfirmed, json!({ "topic": topic })).await;
        Ok(format!("subscription to {topic} confirmed"))
    }
}

/// Records an unsubscribe confirmation.
pub struct UnsubscribeConfirmation;

#[async_trait]
impl Handler for UnsubscribeConfirmation {
    async fn handle(&self, ctx: &HandlerContext, envelope: &Envelope) -> Result<String, HandlerError> {
        let sns = sns_body(envelope)?;
        let topic = str_of(&sns, "TopicArn").to_owned();
        audit(ctx, envelope, Step::UnsubscribeConfirmed, json!({ "topic": topic })).await;
        Ok(format!("unsubscribed from {topic}"))
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
    fn metric_math_alarms_show_their_expressions() {
        let trigger = json!({"Metrics": [
            {"Id": "e1", "Expression": "m1 / m2 * 100", "Label": "error rate"},
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": [{"name": "LoadBalancer", "value": "app/x"}]}}}
        ]});
        let text = metric_description(&trigger);
        assert!(text.contains("e1 = `m1 / m2 * 100`"), "{text}");
        assert!(text.contains("AWS/ApplicationELB HTTPCode_Target_5XX_Count (LoadBalancer=app/x)"), "{text}");
    }

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

    #[test]
    fn state_markers_are_distinct() {
        assert_ne!(state_marker("ALARM"), state_marker("OK"));
        assert!(state_marker("INSUFFICIENT_DATA").contains("INSUFFICIENT_DATA"));
        assert!(state_marker("weird").contains("UNKNOWN"));
    }
}
