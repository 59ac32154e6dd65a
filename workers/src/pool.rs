//! The receive loop: long-poll up to a batch (10 on SQS, up to 100 on the embedded store; never more than free
//! handler slots), run each group's messages in their own task,
//! and on shutdown stop receiving, let in-flight handlers finish within the drain timeout, and give back what was
//! received but not started.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eventfleet_storage::{Delivery, Start, Store};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::WorkerMetrics;
use crate::process::{Disposition, Processor};
use crate::{Registry, SlackSink, WorkerConfig};

/// Counts of one run of the pool.
#[derive(Debug, Default)]
pub struct PoolSummary {
    /// Deliveries handled successfully.
    pub succeeded: AtomicU64,
    /// Deliveries skipped as already done.
    pub skipped: AtomicU64,
    /// Retries scheduled.
    pub retried: AtomicU64,
    /// Dead-lettered.
    pub dead_lettered: AtomicU64,
    /// Given back.
    pub released: AtomicU64,
    /// Deferred (Slack's `Retry-After`, a channel's pace).
    pub deferred: AtomicU64,
    /// Deliveries that hit a storage error (they reappear after the visibility timeout).
    pub storage_errors: AtomicU64,
    /// Whether the drain finished within its timeout.
    pub drained: std::sync::atomic::AtomicBool,
}

impl PoolSummary {
    fn count(&self, d: &Disposition) {
        let counter = match d {
            Disposition::Succeeded => &self.succeeded,
            Disposition::SkippedDuplicate => &self.skipped,
            Disposition::RetryScheduled(_) => &self.retried,
            Disposition::DeadLettered => &self.dead_lettered,
            Disposition::Released => &self.released,
            Disposition::Deferred(_) => &self.deferred,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the worker pool until `shutdown` is cancelled and the drain is over, with metrics nobody exports.
pub async fn run(
    store: Store,
    config: WorkerConfig,
    registry: Registry,
    slack: Arc<dyn SlackSink>,
    shutdown: CancellationToken,
) -> Arc<PoolSummary> {
    run_with_metrics(store, config, registry, slack, WorkerMetrics::unregistered(), shutdown).await
}

/// How often the queue gauges are refreshed: about a Prometheus scrape interval (on SQS a refresh is two
/// `GetQueueAttributes`, which at 5 s were a visible share of a quiet worker's requests).
const GAUGE_REFRESH: Duration = Duration::from_secs(15);

/// How often they are refreshed while the queue is empty and the pool receives nothing: an idle worker should not
/// wake to count an empty queue (a receive that finds work ends the wait).
const GAUGE_REFRESH_IDLE: Duration = Duration::from_secs(30);

/// Runs the worker pool, recording into `metrics`.
pub async fn run_with_metrics(
    store: Store,
    config: WorkerConfig,
    registry: Registry,
    slack: Arc<dyn SlackSink>,
    metrics: WorkerMetrics,
    shutdown: CancellationToken,
) -> Arc<PoolSummary> {
    let summary = Arc::new(PoolSummary::default());
    let work_came = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(refresh_gauges(store.clone(), metrics.clone(), work_came.clone(), shutdown.clone()));
    tokio::spawn(sweep(store.clone(), shutdown.clone()));
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    // Messages whose outcome is being recorded after their handler returned its slot ([`crate::slot`]); with a
    // receive window (SQS, where each receive costs requests) a slot is held to the end instead.
    let recordings = config.receive_window.is_zero().then(|| Arc::new(Semaphore::new(config.concurrency.max(1))));
    let tracker = TaskTracker::new();
    let drain_timeout = config.drain_timeout;
    let actor = config.protocol_actor();
    let teams = match crate::teams::Teams::new(config.teams.clone(), config.handler_timeout) {
        Ok(teams) => teams,
        Err(e) => {
            // Only a broken TLS set-up fails here; Slack and the destinations would fail alike.
            tracing::error!(error = %e, "could not build the Teams HTTP client; posts to Teams fail until restart");
            crate::teams::Teams::none()
        }
    };
    let egress = crate::slack::Egress::new(slack, config.channel_pace, &store, &actor.name).with_teams(Arc::new(teams));
    let processor =
        Arc::new(Processor { store: store.clone(), registry, egress, folds: Arc::default(), config, metrics, actor });
    let cfg = &processor.config;

    // After a receive that carried events, the next one gathers a batch for up to the receive window.
    let mut gather: Option<Gather> = None;
    // As many as one receive takes (10 on SQS), never more than the handler slots.
    let batch = store.protocol.max_receive().min(cfg.concurrency.max(1));
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let mut permits = gather_slots(&slots, first, batch, gather, &shutdown).await;
        if shutdown.is_cancelled() {
            break;
        }
        // The receive runs in its own task so that shutdown never abandons messages it already took: whatever
        // it returns after shutdown is given back at once.
        let mut receive = tokio::spawn({
            let (store, actor) = (store.clone(), processor.actor.clone());
            let (n, wait) = (permits.len(), cfg.receive_wait);
            async move { store.protocol.receive(n, wait, &actor).await }
        });
        let received = tokio::select! {
            r = &mut receive => r,
            _ = shutdown.cancelled() => {
                tracker.spawn(release_late(processor.clone(), receive, summary.clone()));
                break;
            }
        };
        let messages = match received {
            Ok(Ok(messages)) => messages,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "receive failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.cancelled() => break,
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "receive task failed");
                continue;
            }
        };
        // A receive hands out several messages of one group (both backends): each group's messages run in order, one
        // at a time, in one task.
        let mut chains: Vec<Vec<Delivery>> = Vec::new();
        for delivery in messages {
            match chains.iter_mut().find(|c| c[0].message.group == delivery.message.group) {
                Some(chain) => chain.push(delivery),
                None => chains.push(vec![delivery]),
            }
        }
        if !chains.is_empty() {
            work_came.notify_one();
        }
        let (asked, got) = (permits.len(), chains.iter().map(Vec::len).sum::<usize>());
        for chain in chains {
            let chain_permits: Vec<_> = permits.drain(..chain.len().min(permits.len())).collect();
            tracker.spawn(run_chain(
                processor.clone(),
                chain,
                chain_permits,
                recordings.clone(),
                summary.clone(),
                shutdown.clone(),
            ));
        }
        // Events are coming: the next receive gathers a batch of free slots (and, when this one drained the queue,
        // waits for it to fill). An empty receive's next goes at once (its long poll does the waiting, and returns
        // an idle queue's first event at once).
        gather = next_gather(got, asked, batch, cfg.receive_window, tokio::time::Instant::now());
    }

    tracker.close();
    let drained = tokio::time::timeout(drain_timeout, tracker.wait()).await.is_ok();
    summary.drained.store(drained, Ordering::Relaxed);
    if !drained {
        tracing::warn!(
            timeout_ms = drain_timeout.as_millis() as u64,
            "drain timeout: unfinished handlers' messages reappear after their visibility timeout"
        );
    }
    summary
}

/// How the next receive gathers a batch: until when, and whether the queue ran out (then it waits the whole
/// window; otherwise only for free handler slots).
#[derive(Debug, Clone, Copy)]
struct Gather {
    until: tokio::time::Instant,
    /// Free slots to wait for (the receive takes every free one up to a batch either way).
    slots: usize,
    drained: bool,
}

/// How the receive after one that asked for `asked` and got `got` (of at most `batch`) gathers its batch: not at
/// all after an empty one (its long poll does the waiting, and hands an idle queue's first event over at once);
/// otherwise for up to the window: after a partial receive until a batch of slots is free (and for the whole
/// window when the queue ran out); after a full one, the queue busy, only until half a batch is. Without that wait
/// a worker whose slots were all taken received whatever one or two had just come free (receives of 10, 1, 10, 2
/// measured on SQS), and paid a receive's requests for each; waiting for a whole batch there would leave a worker
/// with fast handlers and fewer than two batches of slots running a batch at a time.
fn next_gather(got: usize, asked: usize, batch: usize, window: Duration, now: tokio::time::Instant) -> Option<Gather> {
    // A receive fills behind its heads only up to SQS's 10 (the embedded store's larger receives take more heads
    // only): one that brought that many may have left the queue full.
    let drained = got < asked.min(eventfleet_storage::queue::MAX_RECEIVE);
    let slots = if got >= batch { batch.div_ceil(2) } else { batch };
    (got > 0 && !window.is_zero()).then(|| Gather { until: now + window, slots, drained })
}

/// The handler slots of the next receive, `first` among them: every free one up to `batch`; with `gather`, waiting
/// until its `slots` are free or the window ends for handlers to finish, and, when the last receive drained the
/// queue, the whole window for the queue to fill. Shutdown ends any wait.
async fn gather_slots(
    slots: &Arc<Semaphore>,
    first: tokio::sync::OwnedSemaphorePermit,
    batch: usize,
    gather: Option<Gather>,
    shutdown: &CancellationToken,
) -> Vec<tokio::sync::OwnedSemaphorePermit> {
    let mut permits = vec![first];
    while permits.len() < batch {
        match slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => match &gather {
                Some(g) if permits.len() < g.slots => tokio::select! {
                    permit = tokio::time::timeout_at(g.until, slots.clone().acquire_owned()) => match permit {
                        Ok(Ok(p)) => permits.push(p),
                        _ => break,
                    },
                    _ = shutdown.cancelled() => break,
                },
                _ => break,
            },
        }
    }
    if let Some(Gather { until, drained: true, .. }) = gather {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    permits
}

/// Runs one group's messages in order. A message that does not finish (retry scheduled, released, storage
/// error) leaves its group blocked, so the ones behind it (not started yet) are given back at once instead of
/// waiting out their visibility; a dead-lettered one unblocks its group, so the next runs.
async fn run_chain(
    processor: Arc<Processor>,
    chain: Vec<Delivery>,
    mut permits: Vec<tokio::sync::OwnedSemaphorePermit>,
    recordings: Option<Arc<Semaphore>>,
    summary: Arc<PoolSummary>,
    shutdown: CancellationToken,
) {
    let received = tokio::time::Instant::now();
    let visibility = processor.config.visibility_timeout;
    let mut rest = chain.into_iter().peekable();
    let mut first = true;
    // The start of the next message, when the success before it made it.
    let mut started: Option<Start> = None;
    while let Some(mut delivery) = rest.next() {
        if let Some(start) = started.take() {
            delivery.start = start;
        }
        let event_id = delivery.message.envelope.event_id();
        // A message that waited behind others gets its visibility back before it starts, so that it cannot
        // reappear to another consumer while it runs here.
        if !first
            && received.elapsed() > visibility / 3
            && let Err(e) = processor.store.queue.change_visibility(&delivery.message.receipt, visibility).await
        {
            tracing::warn!(error = %e, %event_id, "a waiting message could not be kept; leaving the rest");
            // This one too: the success before it may have started it.
            release(&processor, std::iter::once(delivery).chain(rest), &summary).await;
            return;
        }
        first = false;
        let next = rest.peek().filter(|d| d.start == Start::Waiting).map(|d| d.message.clone());
        let mut hold = crate::slot::Hold::new(permits.pop(), recordings.clone());
        let go_on = match processor.process_then(delivery, next.as_ref(), &mut hold, &shutdown).await {
            Ok((d, next_start)) => {
                started = next_start;
                summary.count(&d);
                matches!(d, Disposition::Succeeded | Disposition::SkippedDuplicate | Disposition::DeadLettered)
            }
            Err(e) => {
                summary.storage_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, %event_id, "delivery hit a storage error; it will reappear");
                false
            }
        };
        drop(hold);
        if !go_on {
            release(&processor, rest, &summary).await;
            return;
        }
    }
}

/// Gives back deliveries that will not run now (a started one without counting an attempt).
async fn release(processor: &Processor, deliveries: impl Iterator<Item = Delivery>, summary: &PoolSummary) {
    for d in deliveries {
        let started = matches!(d.start, Start::Run { .. });
        match processor.store.protocol.release(&d.message, started, &processor.actor).await {
            Ok(()) => summary.count(&Disposition::Released),
            Err(e) => tracing::warn!(error = %e, "could not give a message back; it reappears later"),
        }
    }
}

/// Gives back whatever a receive abandoned at shutdown took, as soon as it returns.
async fn release_late(
    processor: Arc<Processor>,
    receive: tokio::task::JoinHandle<eventfleet_storage::Result<Vec<Delivery>>>,
    summary: Arc<PoolSummary>,
) {
    let Ok(Ok(deliveries)) = receive.await else {
        return;
    };
    release(&processor, deliveries.into_iter(), &summary).await;
}

/// How often the event log's expired events and the store's expired rows are swept (the embedded store;
/// DynamoDB's TTL needs nothing).
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Events one sweep of the event log deletes at most: one short writer job, so it never holds up the hot path.
const SWEEP_AT_MOST: usize = 500;
/// Expired rows of each kind one sweep deletes at most: about 6 ms of the writer for a hundred records and a hundred
/// audit lines on a store of 300,000 records (their deletes touch every index of the tables).
const EXPIRY_AT_MOST: usize = 100;

/// Deletes the event log's expired events and the store's expired rows (idempotency records, audit lines, retry
/// records, dedup entries, alarm documents) while the pool runs, a bounded batch a minute (more at once while a
/// backlog of them remains).
async fn sweep(store: Store, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
        if store.events.retention().is_some() {
            sweep_batches("the event log", SWEEP_AT_MOST, &shutdown, || store.events.sweep(SWEEP_AT_MOST)).await;
        }
        sweep_batches("expired rows", EXPIRY_AT_MOST, &shutdown, || store.expiry.sweep_expired(EXPIRY_AT_MOST)).await;
    }
}

/// Runs one kind of sweep until a batch deletes less than `full` (or the pool stops).
async fn sweep_batches<F, Fut>(what: &str, full: usize, shutdown: &CancellationToken, batch: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = eventfleet_storage::Result<u64>>,
{
    loop {
        match batch().await {
            Ok(n) if n as usize >= full && !shutdown.is_cancelled() => tokio::task::yield_now().await,
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(error = %e, "could not sweep {what}");
                break;
            }
        }
    }
}

/// Keeps the queue gauges current while the pool runs: every [`GAUGE_REFRESH`], or while the queue is empty and
/// idle every [`GAUGE_REFRESH_IDLE`] and once work comes (never more often than every `GAUGE_REFRESH`: each
/// refresh counts the whole queue).
async fn refresh_gauges(
    store: Store,
    metrics: WorkerMetrics,
    work_came: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let mut idle = false;
        if let Ok(stats) = store.queue.stats().await {
            metrics.queue_depth.set(stats.waiting as i64);
            metrics.queue_in_flight.set(stats.in_flight as i64);
            metrics.dlq_depth.set(stats.dead_letters as i64);
            metrics.oldest_message_age_seconds.set(stats.oldest_age_ms.map_or(0, |ms| (ms / 1000) as i64));
            idle = stats.waiting == 0 && stats.in_flight == 0;
        }
        if idle {
            // A receive with work since the last refresh left a permit: the idle wait ends at once.
            tokio::select! {
                _ = tokio::time::sleep(GAUGE_REFRESH_IDLE - GAUGE_REFRESH) => {}
                _ = work_came.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(GAUGE_REFRESH) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    const WINDOW: Duration = Duration::from_millis(100);

    /// The same pool with `busy` slots held again; the first free one taken.
    async fn slots_busy(
        slots: &Arc<Semaphore>,
        busy: u32,
    ) -> (Arc<Semaphore>, tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit) {
        let held = slots.clone().acquire_many_owned(busy).await.unwrap();
        let first = slots.clone().acquire_owned().await.unwrap();
        (slots.clone(), held, first)
    }

    /// A pool of 16 slots with `busy` of them held by running handlers; the first free one taken.
    async fn slots(
        busy: u32,
    ) -> (Arc<Semaphore>, tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit) {
        let slots = Arc::new(Semaphore::new(16));
        let held = slots.clone().acquire_many_owned(busy).await.unwrap();
        let first = slots.clone().acquire_owned().await.unwrap();
        (slots, held, first)
    }

    #[test]
    fn a_receive_that_brought_events_makes_the_next_gather_and_one_that_drained_the_queue_waits_for_it() {
        let now = Instant::now();
        let next = |got, asked| next_gather(got, asked, 10, WINDOW, now).map(|g| (g.until - now, g.slots, g.drained));
        assert_eq!(next(0, 10), None, "empty: the long poll waits");
        assert_eq!(next(10, 10), Some((WINDOW, 5, false)), "full: the queue is busy, wait for half a batch of slots");
        assert_eq!(next(3, 10), Some((WINDOW, 10, true)), "the queue ran out: wait for it to fill");
        assert_eq!(next(3, 3), Some((WINDOW, 10, false)), "the slots ran out: wait for them");
        assert_eq!(next_gather(3, 10, 10, Duration::ZERO, now).map(|g| g.drained), None, "no window: never");
        let small = next_gather(4, 4, 4, WINDOW, now).map(|g| (g.slots, g.drained));
        assert_eq!(small, Some((2, false)), "a batch is the worker's slots at most");
        // The embedded store's receive of 32 that brought 10 (its heads and the messages behind them) may have
        // left more: it waits for slots, not for the queue.
        assert_eq!(next_gather(10, 32, 32, WINDOW, now).map(|g| g.drained), Some(false));
        assert_eq!(next_gather(9, 32, 32, WINDOW, now).map(|g| g.drained), Some(true));
    }

    /// After a full receive the next waits for half a batch of free slots, not a whole one: at once when they are
    /// free, and then it takes every free one.
    #[tokio::test(start_paused = true)]
    async fn after_a_full_receive_the_next_waits_for_half_a_batch_of_slots() {
        let (slots, mut held, first) = slots(13).await;
        let freed = held.split(2).unwrap();
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(freed);
        });
        let gather = next_gather(10, 10, 10, WINDOW, start);
        let permits = gather_slots(&slots, first, 10, gather, &CancellationToken::new()).await;
        assert_eq!((permits.len(), start.elapsed()), (5, Duration::from_millis(30)), "3 free, then 5");
        drop(permits);
        drop(held);
        let (slots, _held, first) = slots_busy(&slots, 5).await;
        let start = Instant::now();
        let gather = next_gather(10, 10, 10, WINDOW, start);
        let permits = gather_slots(&slots, first, 10, gather, &CancellationToken::new()).await;
        assert_eq!((permits.len(), start.elapsed()), (10, Duration::ZERO), "a batch free: all of it, at once");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_window_the_receive_takes_the_free_slots_at_once() {
        let (slots, _held, first) = slots(13).await;
        let start = Instant::now();
        let permits = gather_slots(&slots, first, 10, None, &CancellationToken::new()).await;
        assert_eq!((permits.len(), start.elapsed()), (3, Duration::ZERO));
        // Never more than a batch.
        drop(permits);
        drop(_held);
        let first = slots.clone().acquire_owned().await.unwrap();
        assert_eq!(gather_slots(&slots, first, 10, None, &CancellationToken::new()).await.len(), 10);
    }

    /// With 13 of 16 slots busy, `freed` of them coming free 30 ms in: how many slots the receive after a partial
    /// one takes, and when.
    async fn gather_with_freed(freed: u32) -> (usize, Duration) {
        let (slots, mut held, first) = slots(13).await;
        let freed = held.split(freed as usize).unwrap();
        let start = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(freed);
        });
        let gather = Some(Gather { until: start + WINDOW, slots: 10, drained: false });
        let permits = gather_slots(&slots, first, 10, gather, &CancellationToken::new()).await;
        (permits.len(), start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_partial_receive_the_next_waits_for_slots_until_a_batch_or_the_window() {
        // 5 slots come free: not enough for a batch, so the receive goes at the window's end.
        assert_eq!(gather_with_freed(5).await, (8, WINDOW));
        // Enough come free for a batch: it goes then, not at the window's end.
        assert_eq!(gather_with_freed(7).await, (10, Duration::from_millis(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_receive_that_drained_the_queue_the_next_waits_the_window_and_shutdown_ends_the_wait() {
        let (slots, _held, first) = slots(0).await;
        let start = Instant::now();
        let gather = Some(Gather { until: start + WINDOW, slots: 10, drained: true });
        let permits = gather_slots(&slots, first, 10, gather, &CancellationToken::new()).await;
        assert_eq!((permits.len(), start.elapsed()), (10, WINDOW));
        drop(permits);
        let first = slots.clone().acquire_owned().await.unwrap();
        let shutdown = CancellationToken::new();
        let cancel = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            cancel.cancel();
        });
        let start = Instant::now();
        let gather = Some(Gather { until: start + WINDOW, slots: 10, drained: true });
        gather_slots(&slots, first, 10, gather, &shutdown).await;
        assert_eq!(start.elapsed(), Duration::from_millis(10));
    }

    /// The pool's sweep gives back an expired record once a minute, and leaves a live one.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_deletes_expired_records_every_minute() {
        use eventfleet_schema::IdempotencyKey;
        use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, OutgoingMessage, TokioClock};
        let dir = tempfile::tempdir().unwrap();
        // No event log: the sweep goes straight to the expired rows (the log's sweep reads on the blocking pool,
        // which the paused clock does not wait for).
        let options =
            EmbeddedOptions { clock: Arc::new(TokioClock::new()), retention: None, ..EmbeddedOptions::default() };
        let embedded = EmbeddedStore::open_dir(dir.path(), options).unwrap();
        let store = embedded.clone().into_store();
        for (key, horizon) in [("s:a:short", 30), ("s:a:long", 3600)] {
            let env = eventfleet_storage::conformance::envelope(IdempotencyKey::from_raw(key), "g", key);
            let message = OutgoingMessage::first_delivery(env);
            store.protocol.accept(message, Duration::from_secs(horizon), "ingress").await.unwrap();
        }
        let raw = rusqlite::Connection::open(embedded.path()).unwrap();
        let records = || -> Vec<String> {
            let mut stmt = raw.prepare("SELECT key FROM idempotency ORDER BY key").unwrap();
            stmt.query_map([], |r| r.get(0)).unwrap().map(|r| r.unwrap()).collect()
        };
        let shutdown = CancellationToken::new();
        tokio::spawn(sweep(store.clone(), shutdown.clone()));
        tokio::time::sleep(SWEEP_EVERY - Duration::from_secs(1)).await;
        assert_eq!(records(), ["s:a:long", "s:a:short"], "not before a minute");
        // The sweep has handed its job to the writer thread by now; that thread deletes in real time.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while records().len() > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(records(), ["s:a:long"]);
        shutdown.cancel();
    }
}
