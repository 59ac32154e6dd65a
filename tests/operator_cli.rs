//! What a new operator trips on, through the real binary: a mistyped data directory, a sender's UUID taken for an
//! event id, a filter value that is not one, output cut short by `| head`, a bare port for `--listen`, and hook
//! URLs that name the port `dev` really listens on.

mod support;

use std::process::Stdio;

use support::{eventfleet, poll, run, run_ok, spawn_listening, terminate};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn operator_commands_refuse_a_directory_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["events", "show", "anything"],
        &["dlq", "list"],
        &["dlq", "replay", "--all", "--dry-run"],
        &["hooks", "list"],
        &["outbox"],
    ] {
        let out = run(&typo, args);
        assert!(!out.status.success(), "{args:?} succeeded on a directory without a store");
        let err = stderr(&out);
        assert!(err.contains("no eventfleet store in") && err.contains(&typo.display().to_string()), "{args:?}: {err}");
        assert!(err.contains("--data-dir") && err.contains("EVENTFLEET_DATA_DIR"), "says how to point: {err}");
        assert!(!typo.join("fleet.db").exists(), "{args:?} created a store");
    }
    // Creating a hook may come first: it makes the store, and says so.
    let out = run(&typo, &["hooks", "create", "--name", "ci", "--channel", "#ci"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("created one"), "{}", stderr(&out));
    run_ok(&typo, &["status"]);
}

#[test]
fn filter_values_that_are_not_sources_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["tables", "create"]);
    for args in [&["dlq", "list", "--source", "gh"][..], &["dlq", "replay", "--source", "gh", "--dry-run"]] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("github"), "the error lists the sources: {}", stderr(&out));
    }
    let none = run_ok(dir.path(), &["dlq", "replay", "--source", "github", "--dry-run"]);
    assert!(none.contains("no dead letters match"), "an empty dry run says so: {none:?}");
}

#[test]
fn a_bare_port_for_listen_says_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["dev", "--listen", "8080"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("HOST:PORT") && stderr(&out).contains("127.0.0.1:8080"), "{}", stderr(&out));
}

#[test]
fn output_cut_short_by_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["hooks", "create", "--name", "a", "--channel", "#a"]);
    // A reader that is gone before the command writes, as `| head` is after its lines.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = eventfleet()
        .args(["hooks", "list", "--json", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_delivery_id_finds_its_event_and_hook_urls_name_the_port_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (mut dev, base) = spawn_listening(
        data,
        &["dev", "--listen", "127.0.0.1:0", "--workers", "1"],
        &[("EVENTFLEET_RECEIVE_WAIT_S", "1")],
    );
    assert!(!base.ends_with(":8080"), "port 0 picked another port: {base}");
    let created: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "create", "--name", "gh", "--channel", "#ci"])).unwrap();
    let url = created["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with(&format!("{base}/hooks/")), "{url} is on {base}");

    // X-GitHub-Delivery is a UUID, as SNS MessageIds are: not to be taken for an event id.
    let delivery = uuid::Uuid::new_v4().to_string();
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", &delivery)
        .body(r#"{"zen":"Keep it logically awesome.","hook_id":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let event_id = resp.json::<serde_json::Value>().await.unwrap()["event_id"].as_str().unwrap().to_owned();
    let shown = poll(std::time::Duration::from_secs(30), || {
        let out = run(data, &["events", "show", &delivery, "--json"]);
        out.status.success().then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap())
    })
    .expect("events show <X-GitHub-Delivery> finds the event");
    assert_eq!(shown["event_id"], event_id.as_str());
    assert!(shown["idempotency"]["key"].as_str().unwrap().ends_with(&delivery));
    assert_eq!(terminate(&mut dev), Some(0));
}

#[test]
fn a_hook_posts_github_runs_as_living_messages_unless_told_a_message_per_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let living: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "create", "--name", "ci", "--channel", "#ci"])).unwrap();
    assert_eq!(living["messages"], "living", "the default");
    let each: serde_json::Value = serde_json::from_str(&run_ok(
        data,
        &["hooks", "create", "--name", "ci-each", "--channel", "#ci", "--per-delivery"],
    ))
    .unwrap();
    assert_eq!(each["messages"], "per-delivery");
    let id = living["id"].as_str().unwrap().to_owned();
    let changed: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "messages", &id, "per-delivery"])).unwrap();
    assert_eq!(changed["messages"], "per-delivery");
    let back: serde_json::Value = serde_json::from_str(&run_ok(data, &["hooks", "messages", &id, "living"])).unwrap();
    assert_eq!(back["messages"], "living");
    let bad = run(data, &["hooks", "messages", &id, "threads"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("per-delivery"), "the choices are named: {}", stderr(&bad));
    let missing = run(data, &["hooks", "messages", "hk_missing", "living"]);
    assert_eq!(missing.status.code(), Some(1), "{}", stderr(&missing));
}

#[test]
fn a_hooks_group_key_is_set_shown_cleared_and_refused_when_not_a_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let created: serde_json::Value = serde_json::from_str(&run_ok(
        data,
        &["hooks", "create", "--name", "deploys", "--channel", "#d", "--group-key", "/service"],
    ))
    .unwrap();
    assert_eq!(created["group_key"], "/service");
    let id = created["id"].as_str().unwrap().to_owned();
    let changed: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "group-key", &id, "/team"])).unwrap();
    assert_eq!(changed["group_key"], "/team");
    let cleared: serde_json::Value =
        serde_json::from_str(&run_ok(data, &["hooks", "group-key", &id, "--clear"])).unwrap();
    assert!(cleared["group_key"].is_null(), "{cleared}");
    let bad = run(data, &["hooks", "group-key", &id, "service"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("JSON pointer"), "{}", stderr(&bad));
    let neither = run(data, &["hooks", "group-key", &id]);
    assert!(!neither.status.success() && stderr(&neither).contains("--clear"), "{}", stderr(&neither));
}
