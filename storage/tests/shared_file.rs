//! Several processes may open one store file at once. Two `EmbeddedStore`s on one file have separate
//! connections and separate writer threads, exactly as two processes would; they meet only in SQLite.

use std::time::Duration;

use eventfleet_schema::IdempotencyKey;
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, OutgoingMessage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_openers_share_queue_and_claims() {
    let dir = tempfile::tempdir().unwrap();
    let a = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let b = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();

    // A long poll on B sees a message sent through A (no in-process wake-up: B polls the file). Whether the
    // send lands before B's first look or during its wait, B must get it.
    let poll = tokio::spawn({
        let b = b.clone();
        async move { b.queue.receive(10, Duration::from_secs(30), Duration::from_secs(10)).await }
    });
    let env = envelope(IdempotencyKey::from_raw("shared:1"), "g", "hello");
    a.queue.send_batch(vec![OutgoingMessage::first_delivery(env)]).await.unwrap()[0].clone().unwrap();
    let got = poll.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope.as_v1().body.as_text(), Some("hello"));
    a.queue.delete(&got[0].receipt).await.expect("a receipt from B is valid on A: same file");

    // Accepts of one key through both openers at once: exactly one new event, one message.
    let key = IdempotencyKey::from_raw("shared:race");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let msg = OutgoingMessage::first_delivery(envelope(key.clone(), "race", "once"));
        tasks.push(tokio::spawn(async move {
            store.protocol.accept(msg, Duration::from_secs(60), "ingress").await.unwrap()
        }));
    }
    let mut new = Vec::new();
    for t in tasks {
        let accepted = t.await.unwrap();
        if !accepted.is_duplicate() {
            new.push(accepted.event_id());
        }
    }
    assert_eq!(new.len(), 1, "{new:?}");
    let queued = a.queue.receive(10, Duration::from_secs(30), Duration::ZERO).await.unwrap();
    assert_eq!(queued.iter().map(|m| m.envelope.event_id()).collect::<Vec<_>>(), new, "one message, the winner's");
}
