//! Attempts are counted by the worker, not read off the queue's receive count.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{Envelope, IdempotencyKey, RetryStatus, Status};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, OutgoingMessage, ReceivedMessage, Store};
use eventfleet_workers::metrics::WorkerMetrics;
use eventfleet_workers::process::{Disposition, Processor};
use eventfleet_workers::slack::DevOutbox;
use eventfleet_workers::{Handler, HandlerContext, HandlerError, Registry};
use tokio_util::sync::CancellationToken;

use crate::worker_config;

/// Fails retryably `failures` times, then succeeds.
struct FailsFirst(AtomicU32);

#[async_trait]
impl Handler for FailsFirst {
    async fn handle(&self, _: &HandlerContext, _: &Envelope) -> Result<String, HandlerError> {
        match self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) {
            Ok(_) => Err(HandlerError::retryable("still down")),
            Err(_) => Ok("ok".into()),
        }
    }
}

async fn receive_one(store: &Store) -> ReceivedMessage {
    for _ in 0..100 {
        if let Some(m) = store.queue.receive(1, Duration::from_secs(30), Duration::ZERO).await.unwrap().pop() {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing to receive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_of_a_message_that_waited_untried_do_not_use_up_its_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let env = envelope(IdempotencyKey::from_raw("hook:hk_attempts:1"), "g-attempts", "waits");
    let event_id = env.event_id();
    store.queue.send_batch(vec![OutgoingMessage::first_delivery(env)]).await.unwrap().pop().unwrap().unwrap();
    // SQS hands a message out with the failing head of its group and the pool gives it back untried: each
    // such round is a receive. Four of them, plus the receive that finally runs it, make five.
    for _ in 0..4 {
        let m = receive_one(&store).await;
        store.queue.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
    }
    let config = worker_config();
    assert_eq!(config.max_attempts, 5);
    let processor = Processor {
        store: store.clone(),
        registry: Registry::new(Arc::new(FailsFirst(AtomicU32::new(2)))),
        slack: Arc::new(DevOutbox::new(dir.path().join("outbox.jsonl"))),
        config,
        metrics: WorkerMetrics::unregistered(),
        finishing: tokio_util::task::TaskTracker::new(),
    };
    let never = CancellationToken::new();

    let m = receive_one(&store).await;
    assert_eq!(m.receive_count, 5, "the queue counted every receive");
    let first = processor.process(m, &never).await.unwrap();
    assert!(matches!(first, Disposition::RetryScheduled(_)), "first attempt fails and is retried: {first:?}");
    assert_eq!(store.retries.get(event_id).await.unwrap().unwrap().attempts, 1);

    let m = receive_one(&store).await;
    assert_eq!(m.receive_count, 6);
    let second = processor.process(m, &never).await.unwrap();
    assert!(matches!(second, Disposition::RetryScheduled(_)), "second attempt: {second:?}");
    let record = store.retries.get(event_id).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.status), (2, RetryStatus::Active));

    let m = receive_one(&store).await;
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
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let env = envelope(IdempotencyKey::from_raw("hook:hk_attempts:2"), "g-limit", "waits long");
    let event_id = env.event_id();
    store.queue.send_batch(vec![OutgoingMessage::first_delivery(env)]).await.unwrap().pop().unwrap().unwrap();
    let config = worker_config();
    for _ in 1..config.max_receive_count {
        let m = receive_one(&store).await;
        store.queue.change_visibility(&m.receipt, Duration::ZERO).await.unwrap();
    }
    let processor = Processor {
        store: store.clone(),
        registry: Registry::new(Arc::new(FailsFirst(AtomicU32::new(1)))),
        slack: Arc::new(DevOutbox::new(dir.path().join("outbox.jsonl"))),
        config,
        metrics: WorkerMetrics::unregistered(),
        finishing: tokio_util::task::TaskTracker::new(),
    };
    let m = receive_one(&store).await;
    assert_eq!(m.receive_count, processor.config.max_receive_count);
    // The next receive would have the queue move it without a dead-letter record: the worker does it now.
    assert_eq!(processor.process(m, &CancellationToken::new()).await.unwrap(), Disposition::DeadLettered);
    let record = store.retries.get(event_id).await.unwrap().unwrap();
    assert_eq!((record.attempts, record.status), (1, RetryStatus::Dead));
    assert_eq!(store.idempotency.find_by_event(event_id).await.unwrap().unwrap().status, Status::Dead);
    assert_eq!(store.dead_letters.list(&Default::default()).await.unwrap().len(), 1);
}
