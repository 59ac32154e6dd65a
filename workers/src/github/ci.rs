//! CI: workflow runs and jobs, check suites and check runs. What matters: did it pass, on which branch, how long
//! it took, and where to look.

use serde_json::Value;

use super::{Summary, bold, code, duration, first_line, number, short_sha, state_marker, state_words, text};

/// The state of a run, job, suite or check: its conclusion once it has one, else its status.
fn state(v: &Value, object: &str) -> String {
    let state = text(v, &format!("/{object}/conclusion"))
        .or_else(|| text(v, &format!("/{object}/status")))
        .unwrap_or_else(|| "unknown".into());
    super::escape(&state)
}

/// `workflow_run`: "Workflow *CI* #42 failed", the branch, the trigger, the duration, the head commit.
pub fn workflow_run(p: &Value) -> Summary {
    let state = state(p, "workflow_run");
    let name = text(p, "/workflow_run/name").or_else(|| text(p, "/workflow/name")).unwrap_or_else(|| "workflow".into());
    let num = number(p, "/workflow_run/run_number").map(|n| format!(" #{n}")).unwrap_or_default();
    let mut details = Vec::new();
    let mut facts = Vec::new();
    if let Some(event) = text(p, "/workflow_run/event") {
        facts.push(format!("triggered by {}", code(&event)));
    }
    if text(p, "/workflow_run/conclusion").is_some()
        && let Some(took) = duration(text(p, "/workflow_run/run_started_at"), text(p, "/workflow_run/updated_at"))
    {
        facts.push(format!("took {took}"));
    }
    if let Some(attempt) = number(p, "/workflow_run/run_attempt").filter(|a| *a > 1) {
        facts.push(format!("attempt {attempt}"));
    }
    if !facts.is_empty() {
        details.push(facts.join(" · "));
    }
    if let Some(message) = text(p, "/workflow_run/head_commit/message") {
        let sha = text(p, "/workflow_run/head_sha").unwrap_or_default();
        details.push(format!("{} {}", short_sha(&sha), first_line(&message, 200)));
    }
    Summary {
        marker: state_marker(&state).into(),
        headline: format!("Workflow {}{num} {}", bold(&name), state_words(&state)),
        url: text(p, "/workflow_run/html_url"),
        reference: text(p, "/workflow_run/head_branch"),
        details,
        ..Summary::default()
    }
}

/// `workflow_job`: "Job *test* of *CI* failed", the failing step, the runner, the duration.
pub fn workflow_job(p: &Value) -> Summary {
    let state = state(p, "workflow_job");
    let name = text(p, "/workflow_job/name").unwrap_or_else(|| "job".into());
    let of = text(p, "/workflow_job/workflow_name").map(|w| format!(" of {}", bold(&w))).unwrap_or_default();
    let mut facts = Vec::new();
    if let Some(steps) = p.pointer("/workflow_job/steps").and_then(Value::as_array)
        && let Some(failed) = steps.iter().find(|s| s["conclusion"] == "failure")
        && let Some(step) = failed["name"].as_str()
    {
        facts.push(format!("failed at step {}", bold(step)));
    }
    if let Some(took) = duration(text(p, "/workflow_job/started_at"), text(p, "/workflow_job/completed_at")) {
        facts.push(format!("took {took}"));
    }
    if let Some(runner) = text(p, "/workflow_job/runner_name") {
        facts.push(format!("runner {}", super::escape(&runner)));
    }
    Summary {
        marker: state_marker(&state).into(),
        headline: format!("Job {}{of} {}", bold(&name), state_words(&state)),
        url: text(p, "/workflow_job/html_url"),
        reference: text(p, "/workflow_job/head_branch"),
        details: if facts.is_empty() { Vec::new() } else { vec![facts.join(" · ")] },
        ..Summary::default()
    }
}

/// `check_suite`: "Checks of *GitHub Actions* succeeded on `abc1234`", the pull requests it ran for.
pub fn check_suite(p: &Value) -> Summary {
    let state = state(p, "check_suite");
    let app = text(p, "/check_suite/app/name").unwrap_or_else(|| "an app".into());
    let sha = text(p, "/check_suite/head_sha").unwrap_or_default();
    let mut details = Vec::new();
    if let Some(message) = text(p, "/check_suite/head_commit/message") {
        details.push(format!("{} {}", short_sha(&sha), first_line(&message, 200)));
    }
    if let Some(took) = duration(text(p, "/check_suite/created_at"), text(p, "/check_suite/updated_at"))
        && text(p, "/check_suite/conclusion").is_some()
    {
        details.push(format!("took {took}"));
    }
    details.extend(pull_requests(p, "/check_suite/pull_requests"));
    // A suite has no page of its own: its commit's checks.
    let url = text(p, "/repository/html_url").filter(|_| !sha.is_empty()).map(|r| format!("{r}/commit/{sha}/checks"));
    Summary {
        marker: state_marker(&state).into(),
        headline: format!("Checks of {} {}", bold(&app), state_words(&state)),
        url,
        reference: text(p, "/check_suite/head_branch"),
        details,
        ..Summary::default()
    }
}

/// `check_run`: "Check *lint* failed", its output's title and summary.
pub fn check_run(p: &Value) -> Summary {
    let state = state(p, "check_run");
    let name = text(p, "/check_run/name").unwrap_or_else(|| "check".into());
    let mut details = Vec::new();
    if let Some(title) = text(p, "/check_run/output/title") {
        details.push(bold(&title));
    }
    if let Some(summary) = text(p, "/check_run/output/summary") {
        details.push(first_line(&summary, 300));
    }
    if let Some(took) = duration(text(p, "/check_run/started_at"), text(p, "/check_run/completed_at")) {
        details.push(format!("took {took}"));
    }
    if p["action"] == "requested_action"
        && let Some(action) = text(p, "/requested_action/identifier")
    {
        details.push(format!("requested action {}", code(&action)));
    }
    details.extend(pull_requests(p, "/check_run/pull_requests"));
    Summary {
        marker: state_marker(&state).into(),
        headline: format!("Check {} {}", bold(&name), state_words(&state)),
        url: text(p, "/check_run/html_url").or_else(|| text(p, "/check_run/details_url")),
        reference: text(p, "/check_run/check_suite/head_branch"),
        details,
        ..Summary::default()
    }
}

/// "for #12, #13" from a list of pull requests (at most five named).
fn pull_requests(p: &Value, pointer: &str) -> Option<String> {
    let prs = p.pointer(pointer)?.as_array()?;
    let numbers: Vec<String> =
        prs.iter().filter_map(|pr| pr["number"].as_i64()).take(5).map(|n| format!("#{n}")).collect();
    (!numbers.is_empty()).then(|| format!("for {}", numbers.join(", ")))
}
