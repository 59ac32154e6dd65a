//! Deployments: where to, which ref, and how it went.

use serde_json::Value;

use super::{Summary, bold, first_line, short_sha, state_marker, text};

/// `deployment`: "Deployment of `main` to *production* created".
pub fn deployment(p: &Value) -> Summary {
    let environment = text(p, "/deployment/environment").unwrap_or_else(|| "an environment".into());
    let action = super::escape(&text(p, "/action").unwrap_or_else(|| "created".into()));
    let mut details = Vec::new();
    if let Some(sha) = text(p, "/deployment/sha") {
        let task = text(p, "/deployment/task").unwrap_or_else(|| "deploy".into());
        details.push(format!("task {} at {}", super::code(&task), short_sha(&sha)));
    }
    if let Some(description) = text(p, "/deployment/description") {
        details.push(first_line(&description, 300));
    }
    let reference = text(p, "/deployment/ref");
    Summary {
        marker: ":rocket:".into(),
        headline: format!("Deployment to {} {action}", bold(&environment)),
        url: deployments_url(p, &environment),
        sender: text(p, "/deployment/creator/login"),
        reference,
        details,
        ..Summary::default()
    }
}

/// `deployment_status`: "Deployment to *production* failed", its description, the log.
pub fn deployment_status(p: &Value) -> Summary {
    let state = text(p, "/deployment_status/state").unwrap_or_else(|| "unknown".into());
    let environment = text(p, "/deployment_status/environment")
        .or_else(|| text(p, "/deployment/environment"))
        .unwrap_or_else(|| "an environment".into());
    let words = match state.as_str() {
        "success" => "succeeded".to_owned(),
        "failure" => "failed".to_owned(),
        "error" => "errored".to_owned(),
        "inactive" => "is inactive".to_owned(),
        "in_progress" => "is in progress".to_owned(),
        "queued" => "is queued".to_owned(),
        "pending" => "is pending".to_owned(),
        other => super::escape(&other.replace('_', " ")),
    };
    let mut details = Vec::new();
    if let Some(description) = text(p, "/deployment_status/description") {
        details.push(first_line(&description, 300));
    }
    if let Some(sha) = text(p, "/deployment/sha") {
        details.push(format!("at {}", short_sha(&sha)));
    }
    let url = text(p, "/deployment_status/log_url")
        .or_else(|| text(p, "/deployment_status/target_url"))
        .or_else(|| text(p, "/deployment_status/environment_url"))
        .or_else(|| deployments_url(p, &environment));
    Summary {
        marker: state_marker(&state).into(),
        headline: format!("Deployment to {} {words}", bold(&environment)),
        url,
        reference: text(p, "/deployment/ref"),
        details,
        ..Summary::default()
    }
}

/// The repository's deployments page (a deployment has no page of its own), the environment percent-encoded.
fn deployments_url(p: &Value, environment: &str) -> Option<String> {
    let mut url = url::Url::parse(&text(p, "/repository/html_url")?).ok()?;
    url.path_segments_mut().ok()?.pop_if_empty().push("deployments").push(environment);
    Some(url.into())
}
