//! Worker pool throughput with a no-op handler on the embedded store, at concurrency 1, 4 and 16: the cost of the
//! pool itself (a receive-and-start step and a success step per event, or one for messages behind a busy group's
//! head). Run with
//! `cargo bench -p eventfleet-workers --bench pool`.

// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use eventfleet_schema::{Envelope, EventId, IdempotencyKey};
use eventfleet_storage::conformance::envelope;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, OutgoingMessage, Store};
use eventfleet_workers::slack::DevOutbox;
use eventfleet_workers::{Handler, HandlerContext, HandlerError, Ready, Registry, WorkerConfig};
use tokio_util::sync::CancellationToken;

const EVENTS: usize = 400;
const GROUPS: usize = 100;

struct NoOp;

#[async_trait]
impl Handler for NoOp {
    async fn handle(&self, _ctx: &HandlerContext, _envelope: &Envelope) -> Result<Ready<String>, HandlerError> {
        Ok(Ready::Now("noop".into()))
    }
}

/// Accepts `EVENTS` events the way the ingress does (one accept step each, 32 at a time so they share commits).
async fn fill(store: &Store) {
    let mut accepts = tokio::task::JoinSet::new();
    for n in 0..EVENTS {
        let key = IdempotencyKey::from_raw(format!("bench:{}:{n}", EventId::new()));
        let env = envelope(key, &format!("g{}", n % GROUPS), "{}");
        let store = store.clone();
        accepts.spawn(async move {
            store.protocol.accept(OutgoingMessage::first_delivery(env), Duration::from_secs(3600), "bench").await
        });
        if accepts.len() >= 32 {
            accepts.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(done) = accepts.join_next().await {
        done.unwrap().unwrap();
    }
}

/// Runs a pool until the queue is empty; returns the time it took.
async fn drain(store: &Store, concurrency: usize) -> Duration {
    // No channel pace: the outbox is not Slack, and the pool is what is measured.
    let channel_pace = eventfleet_workers::slack::ChannelPace { interval: Duration::ZERO, burst: 1, digests: false };
    let config =
        WorkerConfig { concurrency, receive_wait: Duration::from_millis(50), channel_pace, ..WorkerConfig::default() };
    let stop = CancellationToken::new();
    let outbox = Arc::new(DevOutbox::new(std::env::temp_dir().join("eventfleet-bench-outbox.jsonl")));
    let start = Instant::now();
    let pool = tokio::spawn(eventfleet_workers::run(
        store.clone(),
        config,
        Registry::new(Arc::new(NoOp)),
        outbox,
        stop.clone(),
    ));
    loop {
        let stats = store.queue.stats().await.unwrap();
        if stats.waiting + stats.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    stop.cancel();
    pool.await.unwrap();
    elapsed
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("pool_noop");
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    for concurrency in [1usize, 4, 16] {
        group.bench_function(BenchmarkId::from_parameter(format!("concurrency{concurrency}")), |b| {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
            b.to_async(&rt).iter_custom(|iters| {
                let store = store.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        fill(&store).await;
                        total += drain(&store, concurrency).await;
                    }
                    total
                }
            });
        });
    }
    group.finish();
}

criterion_group!(pool, benches);
criterion_main!(pool);
