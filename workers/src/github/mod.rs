//! GitHub deliveries as Slack messages a person reads at a glance: one line saying what happened (a state
//! marker, what, where, who, a link), then the few details that matter for that event type.
//!
//! - [`ci`]: `workflow_run`, `workflow_job`, `check_suite`, `check_run`.
//! - [`deploy`]: `deployment`, `deployment_status`.
//! - [`code`]: `push`, `pull_request`, `release`, `issues`.
//! - [`security`]: `dependabot_alert`, `code_scanning_alert`, `secret_scanning_alert`,
//!   `repository_vulnerability_alert`, `security_advisory`.
//! - [`generic`]: `ping`, and every other event type from the fields deliveries share (never a JSON dump).
//! - [`filter`]: a hook's rules on event, action and outcome.
//! - [`living`]: a workflow run, deployment or pull request as one message updated in place.
//!
//! Payload fields are read leniently: a field GitHub leaves out is left out of the message, never an error.

pub mod ci;
pub mod code;
pub mod deploy;
pub mod filter;
pub mod generic;
pub mod living;
pub mod security;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::block_kit::{self, safe_url};
pub(crate) use crate::block_kit::{code, escape, link};
use crate::slack::{SlackMessage, truncate};

/// What a delivery says, before it is laid out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// An emoji for the state (`:x:`, `:white_check_mark:`, …).
    pub marker: Cow<'static, str>,
    /// What happened, in mrkdwn (names escaped), e.g. "Workflow *CI* #42 failed".
    pub headline: String,
    /// The thing on GitHub.
    pub url: Option<String>,
    /// `owner/name`.
    pub repository: Option<String>,
    /// The repository's page.
    pub repository_url: Option<String>,
    /// Branch, tag, or `head → base`.
    pub reference: Option<String>,
    /// Who did it (the delivery's `sender`).
    pub sender: Option<String>,
    /// Detail lines, mrkdwn.
    pub details: Vec<String>,
    /// `event` or `event.action`.
    pub event: String,
}

/// The summary of a delivery of `event` (the `X-GitHub-Event` header).
pub fn summarize(event: &str, payload: &Value) -> Summary {
    let mut summary = match event {
        "workflow_run" => ci::workflow_run(payload),
        "workflow_job" => ci::workflow_job(payload),
        "check_suite" => ci::check_suite(payload),
        "check_run" => ci::check_run(payload),
        "deployment" => deploy::deployment(payload),
        "deployment_status" => deploy::deployment_status(payload),
        "push" => code::push(payload),
        "pull_request" => code::pull_request(payload),
        "release" => code::release(payload),
        "issues" => code::issues(payload),
        "dependabot_alert" => security::dependabot_alert(payload),
        "code_scanning_alert" => security::code_scanning_alert(payload),
        "secret_scanning_alert" => security::secret_scanning_alert(payload),
        "repository_vulnerability_alert" => security::repository_vulnerability_alert(payload),
        "security_advisory" => security::security_advisory(payload),
        "ping" => generic::ping(payload),
        _ => generic::other(event, payload),
    };
    // What every delivery shares, where the formatter did not say more.
    if summary.repository.is_none() {
        summary.repository = text(payload, "/repository/full_name");
    }
    if summary.repository_url.is_none() {
        summary.repository_url = text(payload, "/repository/html_url");
    }
    if summary.sender.is_none() {
        summary.sender = text(payload, "/sender/login");
    }
    if summary.url.is_none() {
        summary.url = summary.repository_url.clone();
    }
    summary.event = match text(payload, "/action") {
        Some(action) => format!("{event}.{action}"),
        None => event.to_owned(),
    };
    summary
}

/// The outcome a hook filter matches on: a run's or check's conclusion (its status until it has one), a
/// deployment status's state; `None` for events without one.
pub fn outcome(event: &str, payload: &Value) -> Option<String> {
    let object = match event {
        "workflow_run" | "workflow_job" | "check_suite" | "check_run" => event,
        "deployment_status" => return text(payload, "/deployment_status/state"),
        _ => return None,
    };
    text(payload, &format!("/{object}/conclusion")).or_else(|| text(payload, &format!("/{object}/status")))
}

/// The Slack message of a delivery to the hook `hook`.
pub fn message(channel: &str, hook: &str, event: &str, payload: &Value) -> SlackMessage {
    layout(channel, hook, &summarize(event, payload))
}

/// Lays a summary out as Block Kit, within its limits, with a one-line `text` fallback.
pub fn layout(channel: &str, hook: &str, s: &Summary) -> SlackMessage {
    let headline = match s.url.as_deref().and_then(safe_url) {
        Some(url) => format!("{} {} · <{url}|open on GitHub>", s.marker, s.headline),
        None => format!("{} {}", s.marker, s.headline),
    };
    let mut context = Vec::new();
    if let Some(repo) = &s.repository {
        context.push(match &s.repository_url {
            Some(url) => link(url, repo),
            None => format!("*{}*", escape(repo)),
        });
    }
    if let Some(reference) = &s.reference {
        context.push(code(reference));
    }
    if let Some(sender) = &s.sender {
        context.push(format!("by {}", escape(sender)));
    }
    context.push(format!("{} via {}", code(&s.event), escape(hook)));
    let mut blocks = vec![block_kit::section(&headline), block_kit::context(&context)];
    if !s.details.is_empty() {
        blocks.push(block_kit::section(&s.details.join("\n")));
    }
    let mut fallback = format!("{} {}", s.marker, plain(&s.headline));
    for (before, part) in [(" · ", &s.repository), (" · ", &s.reference), (" · by ", &s.sender)] {
        if let Some(part) = part {
            fallback.push_str(&format!("{before}{}", escape(part)));
        }
    }
    // One line, whatever a name carries.
    let fallback = fallback.replace(['\n', '\r'], " ");
    SlackMessage {
        channel: channel.to_owned(),
        text: truncate(&fallback, 1_000, "…"),
        blocks: Some(Value::Array(blocks)),
        attachments: None,
        thread_ts: None,
    }
}

/// mrkdwn made plain for the notification text: no `*`. The escapes stay: Slack reads `text` as mrkdwn too,
/// where an unescaped `<!channel>` in a title would notify the whole channel.
fn plain(mrkdwn: &str) -> String {
    mrkdwn.replace('*', "")
}

/// A non-empty string at a JSON pointer.
pub(crate) fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer).and_then(Value::as_str).filter(|s| !s.trim().is_empty()).map(str::to_owned)
}

/// A number at a JSON pointer.
pub(crate) fn number(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

/// A name for the headline: bold, escaped, cut to a length a line can hold.
pub(crate) fn bold(name: &str) -> String {
    format!("*{}*", escape(&truncate(name.trim(), 150, "…")).replace('*', "∗"))
}

/// The first line that says something of a commit message or a Markdown description (HTML comments, which bots
/// use to keep state, and heading or list marks left out), escaped and cut.
pub(crate) fn first_line(text: &str, max: usize) -> String {
    let mut visible = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        visible.push_str(&rest[..start]);
        rest = rest[start..].find("-->").map_or("", |end| &rest[start + end + 3..]);
    }
    visible.push_str(rest);
    let line = visible
        .lines()
        .map(|l| l.trim().trim_start_matches(['#', '*', '-', '>', ' ']).trim())
        .find(|l| !l.is_empty())
        .unwrap_or("");
    escape(&truncate(line, max, "…"))
}

/// The first seven characters of a commit id, as inline code.
pub(crate) fn short_sha(sha: &str) -> String {
    code(&sha.chars().take(7).collect::<String>())
}

/// `12m 5s` between two RFC 3339 times, when both parse and the end is not before the start.
pub(crate) fn duration(start: Option<String>, end: Option<String>) -> Option<String> {
    let start = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%:z", normalize(&start?)).ok()?;
    let end = jiff::Timestamp::strptime("%Y-%m-%dT%H:%M:%S%:z", normalize(&end?)).ok()?;
    let secs = end.as_second() - start.as_second();
    if secs < 0 {
        return None;
    }
    Some(match secs {
        0..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3_600, (secs % 3_600) / 60),
    })
}

/// GitHub writes `2019-05-15T15:20:49Z` and `2019-05-15T15:20:49-07:00`: one form for the parser.
fn normalize(time: &str) -> String {
    match time.strip_suffix('Z') {
        Some(t) => format!("{t}+00:00"),
        None => time.to_owned(),
    }
}

/// The marker of a conclusion or status.
pub(crate) fn state_marker(state: &str) -> &'static str {
    match state {
        "success" | "completed" | "fixed" | "resolved" => ":white_check_mark:",
        "failure" | "failed" | "error" | "startup_failure" | "timed_out" => ":x:",
        "cancelled" | "action_required" | "stale" => ":no_entry_sign:",
        "in_progress" | "pending" | "requested" | "queued" | "waiting" => ":hourglass_flowing_sand:",
        "skipped" | "neutral" | "inactive" => ":white_circle:",
        _ => ":information_source:",
    }
}

/// A conclusion or status as words: `failure` → "failed".
pub(crate) fn state_words(state: &str) -> String {
    match state {
        "success" => "succeeded".into(),
        "failure" => "failed".into(),
        "cancelled" => "was cancelled".into(),
        "timed_out" => "timed out".into(),
        "action_required" => "needs action".into(),
        "startup_failure" => "failed to start".into(),
        "in_progress" => "is running".into(),
        "queued" => "is queued".into(),
        "requested" => "was requested".into(),
        "waiting" => "is waiting".into(),
        "pending" => "is pending".into(),
        "skipped" => "was skipped".into(),
        "neutral" => "finished (neutral)".into(),
        "stale" => "went stale".into(),
        other => other.replace('_', " "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_githubs_time_forms() {
        let d = |a: &str, b: &str| duration(Some(a.into()), Some(b.into()));
        assert_eq!(d("2019-05-15T15:20:49Z", "2019-05-15T15:21:14Z").as_deref(), Some("25s"));
        assert_eq!(d("2019-05-15T15:20:49-07:00", "2019-05-15T16:32:50-07:00").as_deref(), Some("1h 12m"));
        assert_eq!(d("2019-05-15T15:20:49Z", "2019-05-15T15:10:00Z"), None);
        assert_eq!(d("yesterday", "2019-05-15T15:10:00Z"), None);
    }

    #[test]
    fn first_lines_skip_what_people_do_not_read() {
        assert_eq!(first_line("<!-- {\"state\":1} -->\n#### Approved\n* @a", 100), "Approved");
        assert_eq!(first_line("fix: a < b\n\nlong body", 100), "fix: a &lt; b");
        assert_eq!(first_line("<!-- unterminated", 100), "");
    }

    #[test]
    fn outcomes_are_conclusions_then_statuses() {
        let run = serde_json::json!({"workflow_run": {"status": "completed", "conclusion": "failure"}});
        assert_eq!(outcome("workflow_run", &run).as_deref(), Some("failure"));
        let queued = serde_json::json!({"workflow_job": {"status": "queued", "conclusion": null}});
        assert_eq!(outcome("workflow_job", &queued).as_deref(), Some("queued"));
        let deploy = serde_json::json!({"deployment_status": {"state": "error"}});
        assert_eq!(outcome("deployment_status", &deploy).as_deref(), Some("error"));
        assert_eq!(outcome("push", &serde_json::json!({})), None);
    }
}
