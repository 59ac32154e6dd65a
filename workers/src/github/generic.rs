//! `ping`, and every event type without a formatter of its own: a summary from the fields GitHub deliveries
//! share (event and action, repository, sender, the thing's `html_url`), never a JSON dump.

use serde_json::Value;

use super::{Summary, bold, escape, text};

/// Top-level fields that describe the delivery, not the thing it is about.
const CONTEXT_FIELDS: &[&str] = &["repository", "sender", "organization", "installation", "enterprise"];

/// `ping`: "GitHub hook 30 is connected", the events it sends.
pub fn ping(p: &Value) -> Summary {
    let id = p["hook_id"].as_i64().or_else(|| p["hook"]["id"].as_i64()).map(|n| format!(" {n}")).unwrap_or_default();
    let mut details = Vec::new();
    if let Some(events) = p.pointer("/hook/events").and_then(Value::as_array) {
        let names: Vec<String> = events.iter().filter_map(Value::as_str).take(20).map(super::code).collect();
        if !names.is_empty() {
            details.push(format!("sends {}", names.join(" ")));
        }
    }
    if let Some(zen) = text(p, "/zen") {
        details.push(format!("_{}_", escape(&zen)));
    }
    Summary {
        marker: ":ping_pong:".into(),
        headline: format!("GitHub hook{id} is connected"),
        url: text(p, "/repository/html_url").or_else(|| text(p, "/organization/html_url")),
        repository: text(p, "/repository/full_name").or_else(|| text(p, "/organization/login")),
        details,
        ..Summary::default()
    }
}

/// Any other event: "GitHub `issue_comment` created: *Login fails*", linked to the thing it is about.
pub fn other(event: &str, p: &Value) -> Summary {
    let action = text(p, "/action").map(|a| format!(" {}", escape(&a.replace('_', " ")))).unwrap_or_default();
    let event_code = super::code(event);
    // The thing the delivery is about: the object named like the event, else the first object with a page.
    let subject = p.get(event).filter(|v| v.is_object()).or_else(|| {
        p.as_object()?
            .iter()
            .filter(|(k, _)| !CONTEXT_FIELDS.contains(&k.as_str()))
            .map(|(_, v)| v)
            .find(|v| v.get("html_url").and_then(Value::as_str).is_some())
    });
    let name = subject.and_then(|s| {
        ["title", "name", "login", "tag_name", "ref"].iter().find_map(|k| s.get(*k).and_then(Value::as_str))
    });
    let name = name.or_else(|| p.get("ref").and_then(Value::as_str)).filter(|n| !n.trim().is_empty());
    let url = subject
        .and_then(|s| s.get("html_url").and_then(Value::as_str))
        .map(str::to_owned)
        .or_else(|| text(p, "/html_url"));
    let mut details = Vec::new();
    if let Some(body) = subject.and_then(|s| s.get("body").and_then(Value::as_str)).filter(|b| !b.trim().is_empty()) {
        details.push(super::first_line(body, 300));
    }
    Summary {
        marker: ":information_source:".into(),
        headline: match name {
            Some(name) => format!("GitHub {event_code}{action}: {}", bold(name)),
            None => format!("GitHub {event_code}{action}"),
        },
        url,
        details,
        ..Summary::default()
    }
}
