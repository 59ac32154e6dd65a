//! Embedded store throughput: enqueue, and receive + delete, at batch sizes 1 and 10 with 1, 8 and 64
//! concurrent producers (or consumers). Run with `cargo bench -p eventfleet-storage --bench embedded`.
//!
//! Every answer waits for its commit to be synced (`Durability::Full`, the production default: commits with
//! `synchronous=NORMAL`, the WAL synced by the flusher thread before the answers): the figures include the syncs
//! that group commit amortises.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventfleet_schema::IdempotencyKey;
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, OutgoingMessage, Store};

const MESSAGES_PER_ROUND: usize = 1280;

fn open() -> (tempfile::TempDir, Store) {
    // On the build disk, not a tmpfs: fsync must cost what it costs in production.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    (dir, store)
}

fn message(n: usize, groups: usize) -> OutgoingMessage {
    let key = IdempotencyKey::from_raw(format!("bench:{}:{n}", uuid_like()));
    OutgoingMessage::first_delivery(envelope(key, &format!("g{}", n % groups), r#"{"text":"benchmark"}"#))
}

fn uuid_like() -> String {
    eventfleet_schema::EventId::new().to_string()
}

/// `producers` tasks send `MESSAGES_PER_ROUND` messages in batches of `batch`.
async fn enqueue_round(store: &Store, producers: usize, batch: usize) {
    let per_producer = MESSAGES_PER_ROUND / producers;
    let mut tasks = Vec::with_capacity(producers);
    for p in 0..producers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            while sent < per_producer {
                let n = batch.min(per_producer - sent);
                let msgs = (0..n).map(|i| message(p * per_producer + sent + i, 1000)).collect();
                for r in store.queue.send_batch(msgs).await.unwrap() {
                    r.unwrap();
                }
                sent += n;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// `consumers` tasks receive (up to `batch`) and delete until `MESSAGES_PER_ROUND` are gone.
async fn drain_round(store: &Store, consumers: usize, batch: usize) {
    let left = Arc::new(std::sync::atomic::AtomicUsize::new(MESSAGES_PER_ROUND));
    let mut tasks = Vec::with_capacity(consumers);
    for _ in 0..consumers {
        let (store, left) = (store.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            while left.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                let got = store.queue.receive(batch, Duration::from_secs(60), Duration::ZERO).await.unwrap();
                if got.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                for m in &got {
                    store.queue.delete(&m.receipt).await.unwrap();
                }
                left.fetch_sub(got.len(), std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut enqueue = c.benchmark_group("enqueue");
    enqueue.throughput(Throughput::Elements(MESSAGES_PER_ROUND as u64));
    enqueue.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for batch in [1usize, 10] {
        for producers in [1usize, 8, 64] {
            let id = BenchmarkId::new(format!("batch{batch}"), format!("{producers}producers"));
            enqueue.bench_function(id, |b| {
                let (_dir, store) = open();
                b.to_async(&rt).iter(|| enqueue_round(&store, producers, batch));
            });
        }
    }
    enqueue.finish();

    let mut drain = c.benchmark_group("receive_delete");
    drain.throughput(Throughput::Elements(MESSAGES_PER_ROUND as u64));
    drain.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    for batch in [1usize, 10] {
        for consumers in [1usize, 8, 64] {
            let id = BenchmarkId::new(format!("batch{batch}"), format!("{consumers}consumers"));
            drain.bench_function(id, |b| {
                let (_dir, store) = open();
                b.to_async(&rt).iter_custom(|iters| {
                    let store = store.clone();
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            enqueue_round(&store, 64, 10).await;
                            let start = Instant::now();
                            drain_round(&store, consumers, batch).await;
                            total += start.elapsed();
                        }
                        total
                    }
                });
            });
        }
    }
    drain.finish();
}

criterion_group!(embedded, benches);
criterion_main!(embedded);
