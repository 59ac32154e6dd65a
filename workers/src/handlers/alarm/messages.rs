//! The Block Kit messages of alarm threads: the parent (the alarm's current state), a thread reply per state
//! change, the flapping counter, and an alarm's line in its channel's digest when a storm folds it there. Everything an alarm carries is escaped and
//! cut to Slack's limits ([`crate::block_kit`]), composite, metric-math and anomaly-detection alarms alike.

use eventfleet_schema::{EventId, Timestamp};
use serde_json::{Value, json};

use crate::block_kit::{MAX_HEADER_TEXT, code, context, escape, section};
use crate::digest::{ALARM_FROM, Line};
use crate::handlers::sns::str_of;
use crate::slack::{SlackMessage, truncate};

/// Children of a composite alarm named in its message.
const MAX_CHILDREN: usize = 10;

/// The state marker: an emoji and the state name, so the message reads right with or without emoji.
pub fn state_marker(state: &str) -> &'static str {
    match state {
        "ALARM" => ":red_circle: ALARM",
        "OK" => ":large_green_circle: OK",
        "INSUFFICIENT_DATA" => ":white_circle: INSUFFICIENT_DATA",
        _ => ":grey_question: UNKNOWN STATE",
    }
}

/// The metric an alarm watches: namespace, name and dimensions, or the metric-math expressions (an anomaly
/// detection band among them, named as the threshold).
pub fn metric_description(trigger: &Value) -> String {
    if let Some(metrics) = trigger.get("Metrics").and_then(Value::as_array) {
        let band = str_of(trigger, "ThresholdMetricId");
        let mut parts: Vec<String> = metrics
            .iter()
            .map(|m| {
                let id = str_of(m, "Id");
                let described = match m.get("Expression").and_then(Value::as_str) {
                    Some(expr) => format!("{id} = {}", code(expr)),
                    None => {
                        let stat = m.get("MetricStat").unwrap_or(&Value::Null);
                        let metric = stat.get("Metric").unwrap_or(&Value::Null);
                        format!("{id} = {}", escape(&named_metric(metric)))
                    }
                };
                if !band.is_empty() && id == band { format!("{described} (threshold band)") } else { described }
            })
            .collect();
        if let Some(op) = trigger.get("ComparisonOperator").and_then(Value::as_str) {
            parts.push(escape(op));
        }
        return parts.join("\n");
    }
    let mut text = escape(&named_metric(trigger));
    let stat = trigger
        .get("Statistic")
        .and_then(Value::as_str)
        .or_else(|| trigger.get("ExtendedStatistic").and_then(Value::as_str));
    if let Some(stat) = stat {
        text.push_str(&format!(
            ", {} over {} s",
            escape(&stat.to_lowercase()),
            trigger.get("Period").and_then(Value::as_u64).unwrap_or(0)
        ));
    }
    if let (Some(op), Some(threshold)) =
        (trigger.get("ComparisonOperator").and_then(Value::as_str), trigger.get("Threshold"))
    {
        text.push_str(&format!(", {} {threshold}", escape(op)));
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

/// The metric namespace of an alarm (`composite` for a composite alarm, the first metric's for metric math).
pub fn namespace(alarm: &Value) -> String {
    if alarm.get("AlarmRule").is_some() {
        return "composite".into();
    }
    let trigger = alarm.get("Trigger").unwrap_or(&Value::Null);
    let direct = str_of(trigger, "Namespace");
    if !direct.is_empty() {
        return direct.to_owned();
    }
    (trigger.get("Metrics").and_then(Value::as_array).into_iter().flatten())
        .find_map(|m| m.pointer("/MetricStat/Metric/Namespace").and_then(Value::as_str))
        .unwrap_or("metric math")
        .to_owned()
}

/// The CloudWatch console link of an alarm.
pub fn console_link(alarm: &Value) -> String {
    // The region code is in the ARN; the `Region` field is a display name ("US East (N. Virginia)").
    let region = str_of(alarm, "AlarmArn").split(':').nth(3).filter(|r| !r.is_empty()).unwrap_or("us-east-1");
    let name: String = url::form_urlencoded::byte_serialize(str_of(alarm, "AlarmName").as_bytes()).collect();
    format!("https://console.aws.amazon.com/cloudwatch/home?region={region}#alarmsV2:alarm/{name}")
}

/// A composite alarm's rule and the children that triggered it.
fn composite(alarm: &Value) -> Option<String> {
    let rule = alarm.get("AlarmRule").and_then(Value::as_str)?;
    let children: Vec<&Value> =
        alarm.get("TriggeringChildren").and_then(Value::as_array).map(|c| c.iter().collect()).unwrap_or_default();
    // The children first: a field holds 2,000 characters, and the names matter more than a long rule.
    let mut text = String::new();
    if !children.is_empty() {
        text.push_str("*Triggered by*");
        for child in children.iter().take(MAX_CHILDREN) {
            let arn = str_of(child, "Arn");
            let name = arn.rsplit(':').next().unwrap_or(arn);
            let state = child.pointer("/State/Value").and_then(Value::as_str).unwrap_or("");
            text.push_str(&format!("\n• {} {}", escape(&truncate(name, 100, "…")), state_marker(state)));
        }
        if children.len() > MAX_CHILDREN {
            text.push_str(&format!("\n• and {} more", children.len() - MAX_CHILDREN));
        }
        text.push('\n');
    }
    text.push_str(&format!("*Rule*\n{}", code(&truncate(rule, 300, "…"))));
    Some(text)
}

/// The blocks that describe an alarm's notification: its name and state, description, reason, change, metric
/// (or a composite's rule and children), region, and a button to the console.
fn alarm_blocks(alarm: &Value, with_header: bool) -> Vec<Value> {
    let name = str_of(alarm, "AlarmName");
    let state = str_of(alarm, "NewStateValue");
    let marker = state_marker(state);
    let reason = str_of(alarm, "NewStateReason");
    let trigger = alarm.get("Trigger").unwrap_or(&Value::Null);
    let mut blocks = Vec::new();
    if with_header {
        let word = marker.split(' ').nth(1).unwrap_or(state);
        let header = truncate(&format!("{word} {name}"), MAX_HEADER_TEXT - 1, "…");
        blocks.push(json!({"type": "header", "text": {"type": "plain_text", "text": header, "emoji": true}}));
    }
    blocks.push(section(&format!("{marker}  *{}*", escape(name))));
    let description = str_of(alarm, "AlarmDescription");
    if !description.is_empty() {
        blocks.push(section(&escape(&truncate(description, 2_500, "…"))));
    }
    let what = match composite(alarm) {
        Some(rule) => rule,
        None => format!("*Metric*\n{}", metric_description(trigger)),
    };
    let field = |text: String| json!({"type": "mrkdwn", "text": truncate(&text, 1_990, "…")});
    blocks.push(json!({"type": "section", "fields": [
        field(format!("*Reason*\n{}", escape(&truncate(reason, 1_800, "…")))),
        field(format!("*State change*\n{} → {} at {}", escape(str_of(alarm, "OldStateValue")), escape(state),
            escape(str_of(alarm, "StateChangeTime")))),
        field(what),
        field(format!("*Region*\n{} (account {})", escape(str_of(alarm, "Region")), escape(str_of(alarm, "AWSAccountId")))),
    ]}));
    blocks.push(json!({"type": "actions", "elements": [
        {"type": "button", "text": {"type": "plain_text", "text": "Open in CloudWatch"}, "url": console_link(alarm)}
    ]}));
    blocks
}

fn fallback(alarm: &Value) -> String {
    let marker = state_marker(str_of(alarm, "NewStateValue"));
    let name = str_of(alarm, "AlarmName");
    let reason = str_of(alarm, "NewStateReason");
    truncate(&format!("{marker}: {}: {}", escape(name), escape(&truncate(reason, 300, "…"))), 1_000, "…")
}

/// What the thread knows of the alarm, for the parent's state line.
#[derive(Debug, Clone)]
pub struct ThreadLine {
    /// The current state.
    pub state: String,
    /// Since when.
    pub since: Timestamp,
    /// State changes in the thread.
    pub transitions: u32,
    /// The event that set the state.
    pub event_id: EventId,
}

/// The notification alone, in full (for a chat without threads: Teams).
pub fn notification(channel: &str, alarm: &Value) -> SlackMessage {
    SlackMessage {
        channel: channel.to_owned(),
        text: fallback(alarm),
        blocks: Some(Value::Array(alarm_blocks(alarm, true))),
        attachments: None,
        thread_ts: None,
    }
}

/// The parent message: the latest notification in full, with a line of the thread's state.
pub fn parent(channel: &str, alarm: &Value, line: &ThreadLine) -> SlackMessage {
    let mut blocks = alarm_blocks(alarm, true);
    blocks.push(context(&[format!(
        "{} since {} · {} state change{} · thread below · event `{}`",
        state_marker(&line.state),
        line.since,
        line.transitions,
        if line.transitions == 1 { "" } else { "s" },
        line.event_id
    )]));
    SlackMessage {
        channel: channel.to_owned(),
        text: fallback(alarm),
        blocks: Some(Value::Array(blocks)),
        attachments: None,
        thread_ts: None,
    }
}

/// The alarm's line in its channel's digest, when a storm folds it there: its state, its name linked to the
/// console and the reason, counted by namespace.
pub fn digest_line(alarm: &Value) -> Line {
    let title = format!(
        "{} <{}|{}>: {}",
        state_marker(str_of(alarm, "NewStateValue")),
        console_link(alarm),
        escape(&truncate(str_of(alarm, "AlarmName"), 150, "…")).replace('|', "¦"),
        escape(&truncate(str_of(alarm, "NewStateReason"), 150, "…"))
    );
    Line { from: format!("{ALARM_FROM}{}", namespace(alarm)), title }
}

/// The thread reply of a state change.
pub fn reply(channel: &str, thread_ts: &str, alarm: &Value, event_id: EventId) -> SlackMessage {
    let name = escape(str_of(alarm, "AlarmName"));
    let state = str_of(alarm, "NewStateValue");
    let change = format!(
        "{}  *{name}*: {} → {} at {}\n{}",
        state_marker(state),
        escape(str_of(alarm, "OldStateValue")),
        escape(state),
        escape(str_of(alarm, "StateChangeTime")),
        escape(&truncate(str_of(alarm, "NewStateReason"), 2_000, "…"))
    );
    SlackMessage {
        channel: channel.to_owned(),
        text: fallback(alarm),
        blocks: Some(json!([section(&change), context(&[format!("event `{event_id}`")])])),
        attachments: None,
        thread_ts: Some(thread_ts.to_owned()),
    }
}

/// The reply that counts a flapping run, posted once and updated in place.
pub fn flapping(
    channel: &str,
    thread_ts: &str,
    alarm: &Value,
    collapsed: u32,
    window_min: u64,
    event_id: EventId,
) -> SlackMessage {
    let name = escape(str_of(alarm, "AlarmName"));
    let state = str_of(alarm, "NewStateValue");
    let text = format!(
        ":repeat: *{name}* is flapping: {collapsed} more state change{} collapsed here (each within {window_min} min of \
         the one before). Now {} since {}. Replies resume once it settles.",
        if collapsed == 1 { "" } else { "s" },
        state_marker(state),
        escape(str_of(alarm, "StateChangeTime")),
    );
    SlackMessage {
        channel: channel.to_owned(),
        text: format!("{} is flapping: {collapsed} more state changes", truncate(&name, 300, "…")),
        blocks: Some(json!([section(&text), context(&[format!("latest event `{event_id}`")])])),
        attachments: None,
        thread_ts: Some(thread_ts.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_kit::problems;

    fn check(m: &SlackMessage) {
        assert!(problems(m).is_empty(), "{:?}", problems(m));
    }

    #[test]
    fn metric_math_and_anomaly_alarms_show_their_expressions() {
        let trigger = json!({"Metrics": [
            {"Id": "e1", "Expression": "m1 / m2 * 100", "Label": "error rate"},
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": "HTTPCode_Target_5XX_Count", "Dimensions": [{"name": "LoadBalancer", "value": "app/x"}]}}}
        ]});
        let text = metric_description(&trigger);
        assert!(text.contains("e1 = `m1 / m2 * 100`"), "{text}");
        assert!(text.contains("AWS/ApplicationELB HTTPCode_Target_5XX_Count (LoadBalancer=app/x)"), "{text}");
        let anomaly = json!({"ThresholdMetricId": "ad1", "ComparisonOperator": "GreaterThanUpperThreshold", "Metrics": [
            {"Id": "m1", "MetricStat": {"Metric": {"Namespace": "AWS/Lambda", "MetricName": "Duration"}}},
            {"Id": "ad1", "Expression": "ANOMALY_DETECTION_BAND(m1, 2)"}
        ]});
        let text = metric_description(&anomaly);
        assert!(text.contains("ad1 = `ANOMALY_DETECTION_BAND(m1, 2)` (threshold band)"), "{text}");
        assert!(text.contains("GreaterThanUpperThreshold"), "{text}");
    }

    #[test]
    fn every_message_keeps_within_block_kit_limits_whatever_the_alarm_carries() {
        let children: Vec<Value> = (0..300)
            .map(|i| json!({"Arn": format!("arn:aws:cloudwatch:us-east-1:1:alarm:child-{i}-{}", "x".repeat(300)), "State": {"Value": "ALARM"}}))
            .collect();
        let huge = json!({
            "AlarmName": format!("<!channel> {}", "n".repeat(500)), "AlarmDescription": "d&".repeat(4000),
            "NewStateValue": "ALARM", "OldStateValue": "OK", "NewStateReason": "r".repeat(9000),
            "StateChangeTime": "2026-12-01T00:00:00.000+0000", "Region": "EU (Ireland)", "AWSAccountId": "1",
            "AlarmArn": "arn:aws:cloudwatch:eu-west-1:1:alarm:big", "AlarmRule": format!("ALARM({})", "y".repeat(5000)),
            "TriggeringChildren": children,
        });
        let line = ThreadLine {
            state: "ALARM".into(),
            since: Timestamp::from_millis(0),
            transitions: 9,
            event_id: EventId::new(),
        };
        let p = parent("#c", &huge, &line);
        check(&p);
        let text = serde_json::to_string(&p.blocks).unwrap();
        // Headers are plain text (no mentions); every mrkdwn text and the fallback escape it.
        let mrkdwn = p.blocks.as_ref().unwrap().as_array().unwrap().iter().filter(|b| b["type"] == "section");
        assert!(mrkdwn.map(|b| b.to_string()).all(|b| !b.contains("<!channel>")), "a name cannot notify the channel");
        assert!(!p.text.contains("<!channel>"));
        assert!(text.contains("child-0-") && text.contains("and 290 more"), "the triggering children are named");
        check(&reply("#c", "1.1", &huge, EventId::new()));
        check(&flapping("#c", "1.1", &huge, 7, 10, EventId::new()));
        // A digest of 100 such alarms (the most one holds) keeps within the limits too, each line whole.
        let items: Vec<eventfleet_storage::DigestItem> = (0..crate::digest::MAX_ITEMS)
            .map(|_| {
                let line = digest_line(&huge);
                let at = Timestamp::from_millis(0);
                eventfleet_storage::DigestItem { event_id: EventId::new(), from: line.from, title: line.title, at }
            })
            .collect();
        let m = crate::digest::layout("#c", &items);
        check(&m);
        let shown = serde_json::to_string(&m.blocks).unwrap();
        assert!(shown.contains("from CloudWatch composite") && !shown.contains("<!channel>"), "{shown}");
        assert!(shown.contains("their later state changes reply in this thread"), "{shown}");
    }

    #[test]
    fn an_alarms_digest_line_links_it_and_says_its_state() {
        let alarm = json!({"AlarmName": "api|5xx", "NewStateValue": "ALARM", "NewStateReason": "Threshold <crossed>",
            "Region": "EU (Ireland)", "AlarmArn": "arn:aws:cloudwatch:eu-west-1:1:alarm:api|5xx",
            "Trigger": {"Namespace": "AWS/ApplicationELB"}});
        let line = digest_line(&alarm);
        assert_eq!(line.from, "CloudWatch AWS/ApplicationELB");
        assert!(line.title.starts_with(state_marker("ALARM")), "{}", line.title);
        assert!(line.title.contains(&format!("<{}|api¦5xx>", console_link(&alarm))), "{}", line.title);
        assert!(line.title.ends_with("Threshold &lt;crossed&gt;"), "{}", line.title);
    }

    #[test]
    fn state_markers_are_distinct() {
        assert_ne!(state_marker("ALARM"), state_marker("OK"));
        assert!(state_marker("INSUFFICIENT_DATA").contains("INSUFFICIENT_DATA"));
        assert!(state_marker("weird").contains("UNKNOWN"));
    }
}
