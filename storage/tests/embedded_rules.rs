//! Embedded-backend rules beyond the shared suite: an undecodable message cannot block the queue, and a
//! dead-lettering done by the queue itself (too many receives) updates the ledger in the same transaction.

use std::sync::Arc;
use std::time::Duration;

use eventfleet_schema::{EventId, IdempotencyKey, Status, Step};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{Actor, EmbeddedOptions, EmbeddedStore, OutgoingMessage, Start, TokioClock};

#[tokio::test]
async fn an_undecodable_head_goes_to_the_dlq_and_its_group_flows() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap();
    let store = embedded.clone().into_store();
    // A row written by a newer release (an envelope version this build does not know), at the head of group g.
    let raw = rusqlite::Connection::open(embedded.path()).unwrap();
    raw.execute(
        "INSERT INTO messages (queue, message_id, group_id, dedup_id, head, body, attributes, event_id, source, kind,
                               sent_at, visible_at)
         VALUES ('main', 'future-1', 'g', 'd-future', 1, '{\"version\":\"2\",\"x\":1}', '{}', ?1, 'hook', 'hook.payload', 0, 0)",
        [EventId::new().to_string()],
    )
    .unwrap();
    let behind = envelope(IdempotencyKey::from_raw("k:behind"), "g", "behind the bad one");
    store.queue.send_batch(vec![OutgoingMessage::first_delivery(behind)]).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(store.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap());
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.as_v1().body.as_text(), Some("behind the bad one"));
    let reason: String = raw
        .query_row("SELECT dead_reason FROM messages WHERE queue = 'dlq' AND message_id = 'future-1.dlq'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(reason.starts_with("undecodable message"), "{reason}");
    assert_eq!(store.queue.stats().await.unwrap().dead_letters, 1);
    assert!(store.dead_letters.list(&Default::default()).await.unwrap().is_empty(), "listing skips it");
}

#[tokio::test(start_paused = true)]
async fn a_queue_redrive_marks_the_event_dead_and_audits_it() {
    let dir = tempfile::tempdir().unwrap().keep();
    let options =
        EmbeddedOptions { clock: Arc::new(TokioClock::new()), max_receive_count: 2, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(&dir, options).unwrap().into_store();
    let key = IdempotencyKey::from_raw("k:crashy");
    let env = envelope(key.clone(), "g", "a worker dies on this one every time");
    let id = env.event_id();
    store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress").await.unwrap();
    // Attempts allowed beyond the queue's limit: the queue's own redrive is what this test exercises.
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(5),
        max_attempts: 10,
        horizon: Duration::from_secs(3600),
    };
    for attempt in 1..=2 {
        let got = store.protocol.receive(1, Duration::ZERO, &actor).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].start, Start::Run { attempt, replay: false });
        // The worker dies: nothing more happens until the visibility runs out.
        tokio::time::advance(Duration::from_secs(6)).await;
    }
    assert!(store.protocol.receive(1, Duration::ZERO, &actor).await.unwrap().is_empty());
    let record = store.idempotency.get(&key).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Dead);
    assert!(record.outcome.unwrap().contains("max receive count"));
    let history = store.audit.history(id).await.unwrap();
    let last = history.last().unwrap();
    assert_eq!((last.step, last.actor.as_str()), (Step::DeadLettered, "queue"));
}

#[tokio::test(start_paused = true)]
async fn the_receives_of_a_failing_head_are_not_counted_on_the_messages_behind_it() {
    let dir = tempfile::tempdir().unwrap().keep();
    let options = EmbeddedOptions { clock: Arc::new(TokioClock::new()), ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(&dir, options).unwrap().into_store();
    let actor = Actor {
        name: "worker".into(),
        visibility: Duration::from_secs(30),
        max_attempts: 10,
        horizon: Duration::from_secs(3600),
    };
    for name in ["head", "behind"] {
        let env = envelope(IdempotencyKey::from_raw(format!("k:{name}")), "g", name);
        store
            .protocol
            .accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "ingress")
            .await
            .unwrap();
    }
    for attempt in 1..=3 {
        let got = store.protocol.receive(10, Duration::ZERO, &actor).await.unwrap();
        assert_eq!(got.len(), 2, "the head and the message behind it");
        assert_eq!(got[0].start, Start::Run { attempt, replay: false });
        assert_eq!(got[1].start, Start::Waiting);
        let failure = eventfleet_storage::Failure {
            attempt,
            error: "down".into(),
            class: eventfleet_schema::ErrorClass::Retryable,
        };
        store.protocol.retry(&got[0].message, &failure, Duration::from_secs(1), &actor).await.unwrap();
        store.protocol.release(&got[1].message, false, &actor).await.unwrap();
        tokio::time::advance(Duration::from_secs(2)).await;
    }
    let got = store.protocol.receive(10, Duration::ZERO, &actor).await.unwrap();
    assert_eq!(got[0].message.receive_count, 4);
    store.protocol.succeed(&got[0].message, 4, "ok", &actor).await.unwrap();
    let next = store.protocol.start(&got[1].message, &actor).await.unwrap();
    assert_eq!(next, Start::Run { attempt: 1, replay: false });
    let trail = store.audit.history(got[1].message.envelope.event_id()).await.unwrap();
    let started = trail.iter().find(|e| e.step == Step::Started).unwrap();
    assert_eq!(started.detail["receive"], 1, "counted once, when it started: {trail:?}");
}
