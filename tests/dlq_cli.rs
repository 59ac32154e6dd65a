//! `eventfleet dlq list|show|replay|purge` through the binary, on a store with real dead letters.

mod support;

use std::time::Duration;

use eventfleet_schema::{ErrorClass, IdempotencyKey, Status};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{Actor, EmbeddedOptions, EmbeddedStore, Failure, OutgoingMessage, Store};
use support::{run, run_ok};

/// Dead-letters an event the way the ingress and a worker do: accepted, received and started, dead-lettered.
async fn dead_letter(store: &Store, name: &str, reason: &str) {
    let key = IdempotencyKey::from_raw(format!("hook:hk_cli:{name}"));
    let env = envelope(key.clone(), &format!("group-{name}"), name);
    store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress").await.unwrap();
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 5,
        horizon: Duration::from_secs(3600),
    };
    let got = store.protocol.receive(1, Duration::from_secs(1), &actor).await.unwrap();
    let failure = Failure { attempt: 1, error: reason.into(), class: ErrorClass::Permanent };
    store.protocol.dead_letter(&got[0].message, &failure, reason, &actor).await.unwrap();
    assert_eq!(store.idempotency.get(&key).await.unwrap().unwrap().status, Status::Dead);
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_show_replay_and_purge_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let store = EmbeddedStore::open_dir(data, EmbeddedOptions::default()).unwrap().into_store();
    dead_letter(&store, "a", "chat.postMessage: channel_not_found").await;
    dead_letter(&store, "b", "gave up after 5 attempts: HTTP 503").await;
    dead_letter(&store, "c", "gave up after 5 attempts: HTTP 503").await;

    let all = json(&run_ok(data, &["dlq", "list", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 3);
    let gone = json(&run_ok(data, &["dlq", "list", "--error", "CHANNEL_NOT_FOUND", "--json"]));
    assert_eq!(gone.as_array().unwrap().len(), 1);
    let recent = json(&run_ok(data, &["dlq", "list", "--since", "1h", "--kind", "hook.payload", "--json"]));
    assert_eq!(recent.as_array().unwrap().len(), 3);
    let none = json(&run_ok(data, &["dlq", "list", "--until", "1h", "--json"]));
    assert!(none.as_array().unwrap().is_empty(), "nothing dead-lettered over an hour ago");
    let id_a = gone[0]["id"].as_str().unwrap().to_owned();
    // The table names the event beside the dead letter's own id (they look alike; operators know the event).
    let table = run_ok(data, &["dlq", "list", "--error", "CHANNEL_NOT_FOUND"]);
    let row = table.lines().find(|l| l.starts_with(&id_a)).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(gone[0]["event_id"].as_str().unwrap()), "{table}");
    assert!(table.lines().next().unwrap().contains("event id"), "{table}");

    let status = json(&run_ok(data, &["status", "--json"]));
    assert_eq!(status["queue"]["dead_letters"], 3);
    assert_eq!(status["dlq_by_reason"]["gave up after 5 attempts: HTTP 503"], 2);
    assert_eq!(status["top_failing_kinds"][0]["kind"], "hook.payload");
    assert_eq!(status["top_failing_kinds"][0]["dead_letters"], 3);

    let shown = json(&run_ok(data, &["dlq", "show", &id_a, "--json"]));
    assert_eq!(shown["dead_letter"]["reason"], "chat.postMessage: channel_not_found");
    assert_eq!(run(data, &["dlq", "show", "nope"]).status.code(), Some(1));
    // Named as `events show` names it: by event id, idempotency key, or the sender's own id (the key's last part).
    let event_a = gone[0]["event_id"].as_str().unwrap().to_owned();
    for name in [event_a.as_str(), "hook:hk_cli:a", "a"] {
        let by_name = json(&run_ok(data, &["dlq", "show", name, "--json"]));
        assert_eq!(by_name["dead_letter"]["message_id"], id_a.as_str(), "dlq show {name}");
    }
    let dry_by_key = json(&run_ok(data, &["dlq", "replay", "hook:hk_cli:b", "--dry-run", "--json"]));
    assert_eq!(dry_by_key["outcomes"].as_array().unwrap().len(), 1);
    let shown = json(&run_ok(data, &["events", "show", "b", "--json"]));
    assert_eq!(shown["idempotency"]["key"], "hook:hk_cli:b", "events show by the sender's own id");

    let dry = json(&run_ok(data, &["dlq", "replay", "--all", "--dry-run", "--json"]));
    assert_eq!(dry["outcomes"].as_array().unwrap().len(), 3);
    assert_eq!(
        json(&run_ok(data, &["dlq", "list", "--json"])).as_array().unwrap().len(),
        3,
        "a dry run changes nothing"
    );

    let replayed = json(&run_ok(data, &["dlq", "replay", &id_a, "--by", "bob", "--json"]));
    assert_eq!(replayed["replayed"], 1);
    let event_id = eventfleet_schema::EventId::parse(replayed["outcomes"][0]["event_id"].as_str().unwrap()).unwrap();
    let record = store.idempotency.find_by_event(event_id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Enqueued, "reset so a worker handles it");
    let history = store.audit.history(event_id).await.unwrap();
    let replay = history.iter().find(|e| e.step == eventfleet_schema::Step::Replayed).unwrap();
    assert_eq!(replay.actor, "bob");
    let back = store.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].envelope.event_id(), event_id);
    assert_eq!(back[0].receive_count, 1);

    let out = run(data, &["dlq", "purge"]);
    assert!(!out.status.success(), "purge needs ids, --all or filters");
    let purged = json(&run_ok(data, &["dlq", "purge", "--error", "HTTP 503", "--json"]));
    assert_eq!(purged["purged"], 2);
    assert!(json(&run_ok(data, &["dlq", "list", "--json"])).as_array().unwrap().is_empty());
    let out = run(data, &["dlq", "replay", "--all", "--rate", "0"]);
    assert!(!out.status.success());
}
