//! Attempts are counted by the store's start step (failures, and attempts that stopped without an outcome), not
//! read off the queue's receive count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, IdempotencyKey, RetryStatus, Status};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{Delivery, EmbeddedOptions, EmbeddedStore, OutgoingMessage, ReceivedMessage, Start, Store};
use eventfleet_workers::metrics::WorkerMetrics;
use eventfleet_workers::process::{Disposition, Processor};
use eventfleet_workers::slack::{DevOutbox, Egress};
use eventfleet_workers::{Handler, HandlerContext, HandlerError, Ready, Registry};
use tokio_util::sync::CancellationToken;

use crate::worker_config;

/// Fails retryably `failures` times, then succeeds.
struct FailsFirst(AtomicU32);

#[async_trait]
impl Handler for FailsFirst {
    async fn handle(&self, _: &HandlerContext, _: &Envelope) -> Result<Ready<String>, HandlerError> {
        match self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Err(HandlerError::retryable("still down")),
            Err(_) => Ok(Ready::Now("ok".into())),
        }
    }
}

/// Panics on its first run (a bug in a handler), then succeeds.
struct PanicsFirst(AtomicU32);

#[async_trait]
impl Handler for PanicsFirst {
    async fn handle(&self, _: &HandlerContext, _: &Envelope) -> Result<Ready<String>, HandlerError> {
        if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("a handler bug");
        }
        Ok(Ready::Now("ok".into()))
    }
}

/// Receives and starts one delivery, as the pool does.
async fn deliver_one(store: &Store) -> Delivery {
    let actor = worker_config().protocol_actor();
    match store.protocol.receive(1, Duration::from_secs(2), &actor).await.unwrap().pop() {
        Some(d) => d,
        None => panic!("nothing to receive"),
    }
}

/// Receives one message through the queue alone (no start), as a test's stand-in for a receive that gives it
/// back untried.
async fn receive_untried(store: &Store) -> ReceivedMessage {
    match store.queue.receive(1, Duration::from_secs(30), Duration::from_secs(2)).await.unwrap().pop() {
        Some(m) => m,
        None => panic!("nothing to receive"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_of_a_message_that_waited_untried_do_not_use_up_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, event_id, _) = one_message(&dir, "waits").await;
    // SQS hands a message out with the failing head of its group and the pool gives it back untried: each
    // such round is a receive. Four of them, plus the receive that finally runs it, make five.
    give_back_untried(&store, 4).await;
    let processor = processor(&store, &dir, Arc::new(FailsFirst(AtomicU32::new(2))));
    assert_eq!(processor.config.max_attempts, 5);
    let never = CancellationToken::new();

    let m = deliver_one(&store).await;
    assert_eq!(m.message.receive_count, 5, "the queue counted every receive");
    let first = processor.process(m, &never).await.unwrap();
    assert!(matches!(first, Disposition::RetryScheduled(_)), "first attempt fails and is retried: {first:?}");
    assert_eq!(store.retries.get(event_id).await.unwrap().unwrap().attempts, 1);

    let m = deliver_one(&store).await;
    assert_eq!(m.message.receive_count, 6);
    let second = processor.process(m, &never).await.unwrap();
    assert!(matches!(second, Disposition::RetryScheduled(_)), "second attempt: {second:?}");
    let record = store.retries.get(event_id).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.status), (2, RetryStatus::Active));

    let m = deliver_one(&store).await;
    assert_eq!(processor.process(m, &never).await.unwrap(), Disposition::Succeeded);
    let record = store.idempotency.find_by_event(event_id).await.unwrap().unwrap();
    assert_eq!(record.status, Status::Done);
    let started: Vec<u64> = store
        .audit
        .history(event_id)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.step == eventfleet_schema::Step::Started)
        .map(|e| e.detail["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(started, [1, 2, 3], "attempt numbers in the trail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_at_the_queues_own_receive_limit_is_dead_lettered_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, event_id, _) = one_message(&dir, "waits-long").await;
    let processor = processor(&store, &dir, Arc::new(FailsFirst(AtomicU32::new(1))));
    give_back_untried(&store, processor.config.max_receive_count - 1).await;
    let m = deliver_one(&store).await;
    assert_eq!(m.message.receive_count, processor.config.max_receive_count);
    // The next receive would have the queue move it without a dead-letter record: the worker does it now.
    assert_eq!(processor.process(m, &CancellationToken::new()).await.unwrap(), Disposition::DeadLettered);
    let record = store.retries.get(event_id).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.status), (1, RetryStatus::Dead));
    assert_eq!(store.idempotency.find_by_event(event_id).await.unwrap().unwrap().status, Status::Dead);
    assert_eq!(store.dead_letters.list(&Default::default()).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_fails_its_attempt_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (store, event_id, _) = one_message(&dir, "panics").await;
    let processor = processor(&store, &dir, Arc::new(PanicsFirst(AtomicU32::new(0))));
    let never = CancellationToken::new();
    let first = processor.process(deliver_one(&store).await, &never).await.unwrap();
    assert!(matches!(first, Disposition::RetryScheduled(_)), "the panic is a failed attempt: {first:?}");
    let record = store.retries.get(event_id).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.status), (1, RetryStatus::Active));
    assert!(record.last_error.contains("a handler bug"), "{record:?}");
    assert_eq!(processor.process(deliver_one(&store).await, &never).await.unwrap(), Disposition::Succeeded);
    assert_eq!(store.idempotency.find_by_event(event_id).await.unwrap().unwrap().status, Status::Done);
}

/// A fresh store (its redrive as the worker settings say) with one message of a group queued; returns it with
/// its envelope's event id and key.
async fn one_message(dir: &tempfile::TempDir, name: &str) -> (Store, eventfleet_schema::EventId, IdempotencyKey) {
    let options =
        EmbeddedOptions { max_receive_count: worker_config().max_receive_count, ..EmbeddedOptions::default() };
    let store = EmbeddedStore::open_dir(dir.path(), options).unwrap().into_store();
    let key = IdempotencyKey::from_raw(format!("hook:hk_attempts:{name}"));
    let env = envelope(key.clone(), &format!("g-{name}"), name);
    let event_id = env.event_id();
    store.queue.send_batch(vec![OutgoingMessage::first_delivery(env)]).await.unwrap().pop().unwrap().unwrap();
    (store, event_id, key)
}

/// Receives the message `n` times and gives it back each time, as the pool does with a message that waited
/// behind a failing one of its group.
async fn give_back_untried(store: &Store, n: u32) {
    for _ in 0..n {
        let m = receive_untried(store).await;
        store.queue.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
    }
}

fn processor(store: &Store, dir: &tempfile::TempDir, handler: Arc<dyn Handler>) -> Processor {
    let actor = worker_config().protocol_actor();
    let outbox = Arc::new(DevOutbox::new(dir.path().join("outbox.jsonl")));
    Processor {
        store: store.clone(),
        registry: Registry::new(handler),
        egress: Egress::new(outbox, worker_config().channel_pace, store, &actor.name),
        folds: Arc::default(),
        config: worker_config(),
        metrics: WorkerMetrics::unregistered(),
        actor,
    }
}

/// A worker received and started the message, then died mid-handler: its visibility runs out (made to run out
/// at once here).
async fn crash_an_attempt(store: &Store) {
    let d = deliver_one(store).await;
    assert!(matches!(d.start, Start::Run { .. }), "{:?}", d.start);
    store.queue.change_visibility(&d.message.receipt, Duration::ZERO).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_whose_worker_died_counts_as_a_failed_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, event_id, _) = one_message(&dir, "crashed").await;
    crash_an_attempt(&store).await;
    let handler = Arc::new(FailsFirst(AtomicU32::new(0)));
    let processor = processor(&store, &dir, handler);
    let m = deliver_one(&store).await;
    assert_eq!(processor.process(m, &CancellationToken::new()).await.unwrap(), Disposition::Succeeded);
    let trail = store.audit.history(event_id).await.unwrap();
    let stopped =
        trail.iter().find(|e| e.step == eventfleet_schema::Step::RetryScheduled).expect("the stopped attempt");
    assert_eq!(stopped.detail["attempt"], 1);
    assert!(stopped.detail["error"].as_str().unwrap().contains("stopped without an outcome"), "{}", stopped.detail);
    let started: Vec<_> = trail
        .iter()
        .filter(|e| e.step == eventfleet_schema::Step::Started)
        .map(|e| e.detail["attempt"].clone())
        .collect();
    assert_eq!(started, [1, 2], "the crashed attempt's line, then the run after the crash as the second attempt");
    assert_eq!(store.retries.get(event_id).await.unwrap().unwrap().attempts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_the_last_attempt_dead_letters_without_running_the_handler_again() {
    let dir = tempfile::tempdir().unwrap();
    let (store, event_id, key) = one_message(&dir, "crash-loop").await;
    let now = store.clock.now();
    // Four failed attempts on record, then the fifth one's worker dies.
    store
        .retries
        .upsert(&eventfleet_schema::RetryRecord {
            event_id,
            idempotency_key: key.clone(),
            attempts: 4,
            last_error: "still down".into(),
            error_class: eventfleet_schema::ErrorClass::Retryable,
            next_attempt_at: None,
            status: RetryStatus::Active,
            dead_reason: None,
            updated_at: now,
            expires_at: now.plus(Duration::from_secs(3600)),
        })
        .await
        .unwrap();
    crash_an_attempt(&store).await;
    let handler = Arc::new(FailsFirst(AtomicU32::new(1)));
    let processor = processor(&store, &dir, handler.clone());
    let m = deliver_one(&store).await;
    assert_eq!(processor.process(m, &CancellationToken::new()).await.unwrap(), Disposition::DeadLettered);
    assert_eq!(handler.0.load(Ordering::SeqCst), 1, "the handler did not run");
    let record = store.retries.get(event_id).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.status), (5, RetryStatus::Dead));
    assert!(record.dead_reason.unwrap().starts_with("gave up after 5 attempts: attempt 5 stopped"));
    assert_eq!(store.idempotency.get(&key).await.unwrap().unwrap().status, Status::Dead);
    assert_eq!(store.dead_letters.list(&Default::default()).await.unwrap().len(), 1);
}
