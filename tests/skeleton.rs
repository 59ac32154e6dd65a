//! The walking skeleton through the real binary: `hooks create` → `dev` → `POST /hooks/{id}` → a worker posts to
//! the dev outbox → `events show` shows received, enqueued, started, succeeded → SIGTERM exits 0.

mod support;

use std::time::Duration;

use support::{poll, run, run_ok, spawn_listening, terminate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_event_flows_from_post_to_outbox_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let created: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "create", "--name", "ci", "--channel", "#ci-alerts"])).unwrap();
    let hook_id = created["id"].as_str().expect("id").to_owned();
    assert!(created["url"].as_str().unwrap().ends_with(&format!("/hooks/{hook_id}")));

    let (mut dev, base) = spawn_listening(
        data,
        &["dev", "--listen", "127.0.0.1:0", "--workers", "2"],
        &[("EVENTFLEET_RECEIVE_WAIT_S", "1")],
    );
    // Transparent huge pages are off for the fleet's processes (src/main.rs): the line is there since Linux 5.0.
    let status = std::fs::read_to_string(format!("/proc/{}/status", dev.id())).unwrap_or_default();
    if let Some(thp) = status.lines().find_map(|l| l.strip_prefix("THP_enabled:")) {
        assert_eq!(thp.trim(), "0", "THP still enabled for the process");
    }
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/hooks/{hook_id}"))
        .header("content-type", "application/json")
        .body(r#"{"text":"deploy finished"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let answer: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(answer["duplicate"], false);
    let event_id = answer["event_id"].as_str().unwrap().to_owned();

    let steps = handled_steps(data, &event_id).expect("the event was handled");
    assert_eq!(steps, ["received", "enqueued", "started", "succeeded"]);

    let outbox: serde_json::Value = serde_json::from_str(&run_ok(data, &["outbox", "--json"])).unwrap();
    let posted: Vec<_> = outbox.as_array().unwrap().iter().filter(|e| e["event_id"] == event_id.as_str()).collect();
    assert_eq!(posted.len(), 1, "posted exactly once: {outbox}");
    assert_eq!(posted[0]["message"]["channel"], "#ci-alerts");
    assert_eq!(posted[0]["message"]["text"], "deploy finished");

    let resp = http.post(format!("{base}/hooks/hk_unknown")).body("{}").send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "not_found");

    assert_eq!(terminate(&mut dev), Some(0), "SIGTERM drains and exits 0");
    // Counts are added up in memory (the hook cache) and written when the process stops.
    assert_eq!(invocations(data, &hook_id), 1, "the delivery is counted by the time dev has stopped");

    let unknown_key = run(data, &["events", "show", &format!("hook:{hook_id}:nope"), "--json"]);
    assert_eq!(unknown_key.status.code(), Some(1), "an unknown key is an error");
}

/// The event's audit steps once it has succeeded, polled with a deadline.
fn handled_steps(data: &std::path::Path, event_id: &str) -> Option<Vec<String>> {
    poll(Duration::from_secs(30), || {
        let shown: serde_json::Value =
            serde_json::from_str(&run_ok(data, &["events", "show", event_id, "--json"])).ok()?;
        let steps: Vec<String> =
            shown["steps"].as_array()?.iter().map(|s| s["step"].as_str().unwrap_or("").to_owned()).collect();
        steps.contains(&"succeeded".to_owned()).then_some(steps)
    })
}

#[test]
fn unknown_event_and_bad_config_fail_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["tables", "create"]);
    let out = run(dir.path(), &["events", "show", "0199a0a0-0000-7000-8000-000000000000"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no event"));
    let out = support::eventfleet()
        .args(["status", "--data-dir"])
        .arg(dir.path())
        .env("EVENTFLEET_MAX_RECEIVE_COUNT", "zero")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("EVENTFLEET_MAX_RECEIVE_COUNT"));
}

/// `eventfleet serve`, the one-machine production shape: configured by environment like `ingress` and `worker`
/// (no demo hook, no generated secret), it accepts, handles and audits an event in one process, and drains on
/// SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_ingress_and_workers_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let created: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "create", "--name", "one", "--channel", "#one"])).unwrap();
    let hook_id = created["id"].as_str().expect("id").to_owned();
    let (mut serve, base) =
        spawn_listening(data, &["serve", "--listen", "127.0.0.1:0"], &[("EVENTFLEET_RECEIVE_WAIT_S", "1")]);
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/hooks/{hook_id}"))
        .header("content-type", "application/json")
        .body(r#"{"text":"served in one process"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let event_id = resp.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    let steps = handled_steps(data, &event_id).expect("the event was handled in the same process");
    assert_eq!(steps, ["received", "enqueued", "started", "succeeded"]);
    let hooks: serde_json::Value = serde_json::from_str(&run_ok(data, &["hooks", "list", "--json"])).unwrap();
    assert_eq!(hooks.as_array().map(Vec::len), Some(1), "serve creates no demo hook: {hooks}");
    assert_eq!(terminate(&mut serve), Some(0), "SIGTERM drains and exits 0");
    assert_eq!(invocations(data, &hook_id), 1, "the delivery is counted by the time serve has stopped");
}

/// A hook's invocation count, as `hooks list` shows it.
fn invocations(data: &std::path::Path, hook_id: &str) -> u64 {
    let hooks: serde_json::Value = serde_json::from_str(&run_ok(data, &["hooks", "list", "--json"])).unwrap();
    let hook = hooks.as_array().unwrap().iter().find(|h| h["id"] == hook_id).unwrap_or_else(|| panic!("{hooks}"));
    hook["invocation_count"].as_u64().unwrap()
}

/// A hook's filter is set at `hooks create`, changed and removed with `hooks filter`, and shown by `hooks list`;
/// a rule that does not parse is refused with the syntax, and nothing is created.
#[test]
fn hook_filters_are_set_changed_and_refused_when_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let args =
        ["hooks", "create", "--name", "ci", "--channel", "#ci", "--secret", "--only", "workflow_run=failure|cancelled"];
    let created: serde_json::Value = serde_json::from_str(&run_ok(data, &args)).unwrap();
    assert_eq!(created["filter"]["only"][0], "workflow_run=failure|cancelled", "{created}");
    let id = created["id"].as_str().unwrap();
    let changed: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "filter", id, "--skip", "pull_request.synchronize"])).unwrap();
    assert_eq!(changed["filter"], serde_json::json!({"skip": ["pull_request.synchronize"]}), "{changed}");
    let table = run_ok(data, &["hooks", "list"]);
    assert!(table.contains("(skip pull_request.synchronize)"), "{table}");
    let cleared: serde_json::Value = serde_json::from_str(&run_ok(data, &["hooks", "filter", id, "--clear"])).unwrap();
    assert!(cleared["filter"].is_null(), "{cleared}");

    let bad = support::run(data, &["hooks", "create", "--name", "x", "--channel", "#x", "--only", "Workflow Run"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("event[.action][=outcome|outcome...]"), "{stderr}");
    let neither = support::run(data, &["hooks", "filter", id]);
    assert!(!neither.status.success(), "a filter command without rules or --clear is refused");
    let hooks: serde_json::Value = serde_json::from_str(&run_ok(data, &["hooks", "list", "--json"])).unwrap();
    assert_eq!(hooks.as_array().map(Vec::len), Some(1), "the refused hook was not created: {hooks}");
    let unknown = support::run(data, &["hooks", "filter", "hk_nope", "--clear"]);
    assert!(!unknown.status.success());
}
