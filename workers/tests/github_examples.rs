//! GitHub's own example payloads (`testdata/github/examples.json`, from the `@octokit/webhooks-examples` npm
//! package, MIT) rendered as Slack messages: every formatted type has examples; no message is a JSON dump; each
//! names the repository, the sender and a link when the payload has them; each keeps within Block Kit's limits.

use eventfleet_workers::block_kit;
use eventfleet_workers::github::{message, summarize};
use serde_json::Value;

const FORMATTED: &[&str] = &[
    "workflow_run",
    "workflow_job",
    "check_suite",
    "check_run",
    "deployment",
    "deployment_status",
    "push",
    "pull_request",
    "release",
    "issues",
    "dependabot_alert",
    "code_scanning_alert",
    "secret_scanning_alert",
    "repository_vulnerability_alert",
    "security_advisory",
    "ping",
];

fn examples() -> Vec<(String, Value)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/github/examples.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for (event, list) in doc["examples"].as_object().unwrap() {
        for example in list.as_array().unwrap() {
            out.push((event.clone(), example.clone()));
        }
    }
    out
}

/// Every string a reader sees: the fallback and the blocks' texts.
fn shown(m: &eventfleet_workers::slack::SlackMessage) -> String {
    let mut all = vec![m.text.clone()];
    for block in m.blocks.as_ref().and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = block["text"]["text"].as_str() {
            all.push(t.to_owned());
        }
        for e in block["elements"].as_array().into_iter().flatten() {
            all.push(e["text"].as_str().unwrap_or_default().to_owned());
        }
    }
    all.join("\n")
}

#[test]
fn every_formatted_type_has_examples() {
    let all = examples();
    for event in FORMATTED {
        assert!(all.iter().any(|(e, _)| e == event), "no example of {event} in testdata/github/examples.json");
    }
    assert!(
        all.iter().any(|(e, _)| !FORMATTED.contains(&e.as_str())),
        "examples of other types for the generic summary"
    );
}

#[test]
fn every_example_reads_as_a_message_within_block_kit_limits() {
    for (event, payload) in examples() {
        let m = message("#ci", "ci-hook", &event, &payload);
        let problems = block_kit::problems(&m);
        assert!(problems.is_empty(), "{event}: {problems:?}\n{m:#?}");
        let text = shown(&m);
        let what = format!("{event} {}", payload["action"].as_str().unwrap_or(""));
        // Never a JSON dump: no code block, no raw objects, none of the API's plumbing.
        assert!(!text.contains("```") && !text.contains("{\"") && !text.contains("node_id"), "{what}: a dump:\n{text}");
        assert!(!text.contains("api.github.com"), "{what}: API URLs are not for people:\n{text}");
        assert!(!m.text.contains('\n') && m.text.len() > 10, "{what}: a one-line fallback: {:?}", m.text);
        if let Some(repo) = payload.pointer("/repository/full_name").and_then(Value::as_str) {
            assert!(text.contains(repo), "{what}: names the repository {repo}:\n{text}");
        }
        if let Some(login) = payload.pointer("/sender/login").and_then(Value::as_str) {
            assert!(text.contains(login), "{what}: names the sender {login}:\n{text}");
        }
        let has_page = payload.pointer("/repository/html_url").is_some()
            || payload.as_object().unwrap().values().any(|v| v.get("html_url").is_some());
        if has_page {
            assert!(text.contains("|open on GitHub>"), "{what}: links to the thing on GitHub:\n{text}");
        }
        let s = summarize(&event, &payload);
        assert!(!s.marker.is_empty() && !s.headline.is_empty(), "{what}");
        if FORMATTED.contains(&event.as_str()) {
            assert!(!s.headline.starts_with("GitHub `"), "{what}: formatted, not the generic summary: {}", s.headline);
        }
    }
}

fn example(event: &str, action: &str) -> Value {
    examples()
        .into_iter()
        .find(|(e, p)| e == event && p["action"].as_str().unwrap_or("") == action)
        .unwrap_or_else(|| panic!("an example of {event}.{action}"))
        .1
}

#[test]
fn a_failed_run_says_so_with_its_branch_and_duration() {
    let mut run = example("workflow_run", "completed");
    run["workflow_run"]["conclusion"] = "failure".into();
    run["workflow_run"]["status"] = "completed".into();
    run["workflow_run"]["run_started_at"] = "2021-12-16T19:37:22Z".into();
    run["workflow_run"]["updated_at"] = "2021-12-16T19:49:30Z".into();
    let m = message("#ci", "ci", "workflow_run", &run);
    let text = shown(&m);
    assert!(m.text.starts_with(":x: Workflow "), "{}", m.text);
    assert!(m.text.contains("failed"), "{}", m.text);
    assert!(text.contains("took 12m 8s"), "{text}");
    let branch = run["workflow_run"]["head_branch"].as_str().unwrap();
    assert!(text.contains(&format!("`{branch}`")), "{text}");
}

#[test]
fn a_push_lists_its_commits_and_an_alert_its_severity_and_package() {
    let push =
        examples().into_iter().find(|(e, p)| e == "push" && p["commits"].as_array().is_some_and(|c| !c.is_empty()));
    let (_, push) = push.expect("a push with commits");
    let text = shown(&message("#ci", "ci", "push", &push));
    let first = push["commits"][0]["id"].as_str().unwrap();
    assert!(text.contains(&first[..7]), "{text}");
    let alert = example("dependabot_alert", "created");
    let text = shown(&message("#sec", "sec", "dependabot_alert", &alert));
    let severity = alert.pointer("/alert/security_advisory/severity").and_then(Value::as_str).unwrap();
    let package = alert.pointer("/alert/security_vulnerability/package/name").and_then(Value::as_str).unwrap();
    assert!(text.contains(severity) && text.contains(package), "{text}");
}

#[test]
fn urls_that_are_not_http_are_never_links() {
    let mut status = example("deployment_status", "created");
    status["deployment_status"]["log_url"] = "!channel".into();
    status["deployment_status"]["state"] = "fail<!here>".into();
    status["deployment_status"]["description"] = "<!everyone> see `this`".into();
    let text = shown(&message("#ops", "ops", "deployment_status", &status));
    assert!(!text.contains("<!"), "no special mention can be formed: {text}");
}

#[test]
fn huge_and_hostile_fields_stay_within_the_limits() {
    let mut pr = example("pull_request", "opened");
    pr["pull_request"]["title"] = "<!channel> *bold* `tick` |pipe| ".repeat(500).into();
    pr["sender"]["login"] = "x".repeat(5_000).into();
    let m = message("#ci", "ci", "pull_request", &pr);
    assert!(block_kit::problems(&m).is_empty(), "{:?}", block_kit::problems(&m));
    assert!(!shown(&m).contains("<!channel>"), "mentions are escaped");
    let with_commits =
        examples().into_iter().find(|(e, p)| e == "push" && p["commits"].as_array().is_some_and(|c| !c.is_empty()));
    let (_, mut push) = with_commits.expect("a push with commits");
    let commit = push["commits"][0].clone();
    push["commits"] = Value::Array(vec![commit; 300]);
    push["size"] = 300.into();
    let m = message("#ci", "ci", "push", &push);
    assert!(block_kit::problems(&m).is_empty());
    assert!(shown(&m).contains("and 295 more"), "{}", shown(&m));
}
