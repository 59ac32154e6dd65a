//! `eventfleet events list|replay|show` through the binary, on a store with a succeeded, a dead-lettered and a
//! pending event: filters, pages, the dry run's preview, a replay audited with its reason, and every refusal.

mod support;

use std::time::Duration;

use eventfleet_schema::{ErrorClass, IdempotencyKey, Status, Step};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{Actor, EmbeddedOptions, EmbeddedStore, Failure, OutgoingMessage, Store};
use support::{run, run_ok};

fn actor() -> Actor {
    Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 5,
        horizon: Duration::from_secs(3600),
    }
}

/// Accepts an event in its own group and, unless `end` is `None`, runs it to success or to the DLQ.
async fn event(store: &Store, name: &str, end: Option<bool>) -> String {
    let key = IdempotencyKey::from_raw(format!("hook:hk_cli:{name}"));
    let env = envelope(key, &format!("group-{name}"), name);
    let id = env.event_id().to_string();
    store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress").await.unwrap();
    let Some(succeed) = end else { return id };
    let got = store.protocol.receive(1, Duration::from_secs(1), &actor()).await.unwrap();
    if succeed {
        store.protocol.succeed(&got[0].message, 1, "ts 1.2 in #ops", &actor()).await.unwrap();
    } else {
        let failure = Failure { attempt: 1, error: "channel_not_found".into(), class: ErrorClass::Permanent };
        store.protocol.dead_letter(&got[0].message, &failure, "channel_not_found", &actor()).await.unwrap();
    }
    id
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn fails(data: &std::path::Path, args: &[&str], says: &str) {
    let out = run(data, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "eventfleet {args:?} should fail");
    assert!(stderr.contains(says), "eventfleet {args:?}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_page_preview_and_replay_retained_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = EmbeddedStore::open_dir(data, EmbeddedOptions::default()).unwrap().into_store();
    let done = event(&store, "done", Some(true)).await;
    let dead = event(&store, "dead", Some(false)).await;
    let pending = event(&store, "pending", None).await;

    let all = json(&run_ok(data, &["events", "list", "--since", "1h", "--kind", "hook.*", "--json"]));
    let ids: Vec<&str> = all["events"].as_array().unwrap().iter().map(|e| e["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, [done.as_str(), dead.as_str(), pending.as_str()], "oldest first");
    let outcomes: Vec<&str> =
        all["events"].as_array().unwrap().iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["succeeded", "dead_lettered", "pending"]);
    assert_eq!(all["retention_hours"], 168);
    let succeeded = json(&run_ok(data, &["events", "list", "--outcome", "succeeded", "--json"]));
    assert_eq!(succeeded["events"].as_array().unwrap().len(), 1);
    assert_eq!(succeeded["events"][0]["event_id"], done.as_str());
    let hook = json(&run_ok(data, &["events", "list", "--hook", "hk_conformance", "--source", "hook", "--json"]));
    assert_eq!(hook["events"].as_array().unwrap().len(), 3);

    // Pages: one at a time, each page's `next` leads to the following event.
    let first = json(&run_ok(data, &["events", "list", "--limit", "1", "--json"]));
    assert_eq!(first["events"][0]["event_id"], done.as_str());
    let next = first["next"].as_str().expect("a next page").to_owned();
    let second = json(&run_ok(data, &["events", "list", "--limit", "1", "--after", &next, "--json"]));
    assert_eq!(second["events"][0]["event_id"], dead.as_str());

    // Nothing matches: the search says what the log keeps.
    let none = run_ok(data, &["events", "list", "--kind", "github.*"]);
    assert!(none.contains("no events match; the event log keeps an event for 168 h after it is done"), "{none}");
    let table = run_ok(data, &["events", "list"]);
    assert!(table.lines().next().unwrap().contains("outcome"), "{table}");
    assert!(table.contains(&done), "{table}");

    // A dry run: the count, the groups, the time range; the pending and dead-lettered ones are left alone.
    let dry = json(&run_ok(data, &["events", "replay", "--all", "--dry-run", "--json"]));
    assert_eq!(dry["preview"]["count"], 1);
    assert_eq!(dry["preview"]["skipped"], 2);
    assert_eq!(dry["preview"]["groups"].as_object().unwrap().len(), 1);
    assert!(dry["preview"]["first"].is_string());
    let waiting = store.queue.stats().await.unwrap().waiting;
    assert_eq!(waiting, 1, "a dry run sends nothing (the pending event alone waits)");
    let dry_text = run_ok(data, &["events", "replay", "--all", "--dry-run"]);
    assert!(dry_text.contains("would replay 1 event to every handler in 1 message group"), "{dry_text}");
    assert!(dry_text.contains("dlq replay"), "the dead-lettered one points at dlq replay: {dry_text}");

    // The replay: audited with the operator and the reason, the record reopened, a copy queued.
    let out = json(&run_ok(data, &["events", "replay", &done, "--reason", "handler fixed", "--by", "alice", "--json"]));
    assert_eq!(out["replayed"], 1, "{out}");
    let replay_id = out["replay"].as_str().unwrap().to_owned();
    assert_eq!(store.queue.stats().await.unwrap().waiting, 2);
    let key = IdempotencyKey::from_raw("hook:hk_cli:done");
    assert_eq!(store.idempotency.get(&key).await.unwrap().unwrap().status, Status::Enqueued);
    let trail = store.audit.history(id_of(&done)).await.unwrap();
    let line = trail.iter().find(|e| e.step == Step::Replayed).expect("replayed line");
    assert_eq!((line.actor.as_str(), line.detail["reason"].as_str()), ("alice", Some("handler fixed")));
    assert_eq!(line.detail["replay"], replay_id.as_str());
    // A replay still waiting to run is not replayed again.
    let again = json(&run_ok(data, &["events", "replay", &done, "--json"]));
    assert_eq!(again["replayed"], 0);
    assert!(again["outcomes"][0]["skipped"].as_str().unwrap().contains("not done yet"), "{again}");
    let shown = run_ok(data, &["events", "show", &done]);
    assert!(shown.contains("retained yes"), "{shown}");

    // Refusals, each with a clear reason.
    fails(data, &["events", "replay"], "name event ids, or --all, or filters");
    fails(data, &["events", "replay", "--all", "--rate", "0"], "--rate must be a positive number");
    fails(data, &["events", "list", "--after", "garbage"], "not a page cursor");
    fails(data, &["events", "list", "--since", "yesterday"], "is not a time");
    fails(data, &["events", "list", "--route", "nope"], "no route \"nope\" in the routes file");
    fails(data, &["events", "replay", "3f1c5a2e-0000-7000-8000-000000000000"], "no event");
    let bad_outcome = run(data, &["events", "list", "--outcome", "done"]);
    assert_eq!(bad_outcome.status.code(), Some(2), "clap refuses an unknown outcome");
}

fn id_of(text: &str) -> eventfleet_schema::EventId {
    eventfleet_schema::EventId::parse(text).unwrap()
}
