//! Group commit for AWS batch APIs: callers submit one item each; a task takes every item waiting (up to the
//! API's batch size, waiting at most a short linger for more) and sends them in one request, answering each
//! caller with its own result. Under load many callers share a request; an idle system sends after the linger,
//! or at once with [`Linger::WhileBusy`], whose wait under load is about as long as the batcher's recent requests
//! took (docs/architecture.md, "The AWS backend").

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

type Request<T, R> = (T, oneshot::Sender<R>);

/// How long a batch that is not full waits for more items.
#[derive(Debug, Clone)]
pub(super) enum Linger {
    /// Always up to this long (zero: never).
    Always(Duration),
    /// Only while another batch is in flight, as long as the batcher's recent requests took and at most this
    /// long: a lone item goes at once, and under load the items that come while a request is on the wire share
    /// the next one instead of each taking a free slot. A request's own time is what an item would wait in line
    /// behind it anyway, and it grows when the service slows, which is when fewer, fuller requests help most.
    WhileBusy(Duration),
    /// As `WhileBusy`, and also while items are [`Coming`]: callers busy with the step before their submit (the
    /// ingress's claim) are waited for, as long (the recent requests' time, at most this), and no longer once none
    /// is.
    WhileBusyOrComing(Duration, Arc<Coming>),
}

/// How long a batcher's requests took lately: a moving average (each request a quarter of it), in microseconds;
/// 0 before the first one.
#[derive(Debug, Default)]
struct RequestTime(AtomicU64);

impl RequestTime {
    fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |mean| {
            Some(if mean == 0 { took } else { mean - mean / 4 + took / 4 })
        });
    }

    /// `cap`, or less when the recent requests took less.
    fn at_most(&self, cap: Duration) -> Duration {
        match self.0.load(Ordering::Acquire) {
            0 => cap,
            mean => cap.min(Duration::from_micros(mean)),
        }
    }
}

/// Callers on their way to submit an item: each holds a [`ComingGuard`] from before the step that precedes its
/// submit until its item is queued ([`GroupCommit::submit_coming`]).
#[derive(Debug, Default)]
pub(super) struct Coming {
    n: AtomicUsize,
    changed: Notify,
}

impl Coming {
    /// Counts one caller coming until the guard is dropped.
    pub(super) fn enter(self: &Arc<Self>) -> ComingGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        ComingGuard(self.clone())
    }

    fn any(&self) -> bool {
        self.n.load(Ordering::Acquire) > 0
    }

    /// Resolves once no caller is coming.
    async fn none(&self) {
        loop {
            // Created before the look: a guard dropped in between still wakes it.
            let changed = self.changed.notified();
            if !self.any() {
                return;
            }
            changed.await;
        }
    }
}

/// One caller counted as coming, until dropped.
pub(super) struct ComingGuard(Arc<Coming>);

impl Drop for ComingGuard {
    fn drop(&mut self) {
        self.0.n.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// A group-commit queue in front of one batch operation.
pub(super) struct GroupCommit<T, R> {
    tx: mpsc::UnboundedSender<Request<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> GroupCommit<T, R> {
    /// Starts the task: at most `max` items a batch, `in_flight` batches at once (more items wait and join a
    /// later, larger batch), a batch that is not full waiting up to `linger` for more. `run` returns one result
    /// per item, in order.
    pub(super) fn start<F, Fut>(max: usize, in_flight: usize, linger: Linger, run: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request<T, R>>();
        let run = Arc::new(run);
        let took = Arc::new(RequestTime::default());
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(in_flight));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let Some(first) = rx.recv().await else { return };
                let mut batch = vec![first];
                // This batch holds one permit: any other missing is a batch on the wire.
                let busy = permits.available_permits() + 1 < in_flight;
                // With only callers coming to wait for, the linger ends once none is.
                let (linger, coming) = match &linger {
                    Linger::Always(linger) => (*linger, None),
                    Linger::WhileBusy(cap) if busy => (took.at_most(*cap), None),
                    Linger::WhileBusyOrComing(cap, _) if busy => (took.at_most(*cap), None),
                    Linger::WhileBusyOrComing(cap, coming) if coming.any() => {
                        (took.at_most(*cap), Some(coming.clone()))
                    }
                    Linger::WhileBusy(_) | Linger::WhileBusyOrComing(..) => (Duration::ZERO, None),
                };
                let deadline = tokio::time::Instant::now() + linger;
                while batch.len() < max {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) if linger.is_zero() => break,
                        Err(_) => {
                            let none_coming = async {
                                match &coming {
                                    Some(coming) => coming.none().await,
                                    None => std::future::pending().await,
                                }
                            };
                            tokio::select! {
                                // Every caller that was coming has queued its item or given up: what is queued
                                // goes now (looked at first, so a batch never takes another turn for it).
                                biased;
                                () = none_coming => {
                                    // What the last of them queued; never past `max` (the rest waits for the next).
                                    while batch.len() < max {
                                        match rx.try_recv() {
                                            Ok(item) => batch.push(item),
                                            Err(_) => break,
                                        }
                                    }
                                    break;
                                }
                                got = tokio::time::timeout_at(deadline, rx.recv()) => match got {
                                    Ok(Some(item)) => batch.push(item),
                                    // Linger over, or every sender gone: send what there is.
                                    Ok(None) | Err(_) => break,
                                },
                            }
                        }
                    }
                }
                let (run, took) = (run.clone(), took.clone());
                tokio::spawn(async move {
                    let (items, answers): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                    let start = tokio::time::Instant::now();
                    let results = run(items).await;
                    took.record(start.elapsed());
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(result);
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// Submits one item and waits for its result; `None` if the task is gone (the store is shutting down).
    pub(super) async fn submit(&self, item: T) -> Option<R> {
        self.submit_all(vec![item]).await.pop().flatten()
    }

    /// Submits one item, counted as [`Coming`] by `guard` until it is queued, and waits for its result.
    pub(super) async fn submit_coming(&self, item: T, guard: ComingGuard) -> Option<R> {
        let (answer, result) = oneshot::channel();
        let queued = self.tx.send((item, answer)).ok();
        drop(guard);
        queued?;
        result.await.ok()
    }

    /// Submits items together (so they usually share a batch) and waits for all their results, in order.
    pub(super) async fn submit_all(&self, items: Vec<T>) -> Vec<Option<R>> {
        let waits: Vec<_> = items
            .into_iter()
            .map(|item| {
                let (answer, result) = oneshot::channel();
                self.tx.send((item, answer)).ok().map(|()| result)
            })
            .collect();
        let mut results = Vec::with_capacity(waits.len());
        for wait in waits {
            results.push(match wait {
                Some(result) => result.await.ok(),
                None => None,
            });
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_items_share_batches_and_get_their_own_results() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let gc = Arc::new(GroupCommit::start(4, 1, Linger::Always(Duration::ZERO), move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items.into_iter().map(|i| i * 10).collect()
            }
        }));
        let mut tasks = Vec::new();
        for i in 0..10 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move { gc.submit(i).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(i as u32 * 10));
        }
        let batches = batches.lock().unwrap();
        assert!(batches.iter().all(|&n| n <= 4), "{batches:?}");
        assert!(batches.len() < 10, "items waiting behind a batch in flight share the next one: {batches:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_lingers_for_items_arriving_soon_after_the_first() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let gc =
            Arc::new(GroupCommit::start(10, 1, Linger::Always(Duration::from_millis(20)), move |items: Vec<u32>| {
                seen.lock().unwrap().push(items.clone());
                async move { items }
            }));
        let mut tasks = Vec::new();
        for i in 0..3 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move { gc.submit(i).await }));
            // Each arrives 5 ms after the previous: within the first one's linger.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(i as u32));
        }
        assert_eq!(*batches.lock().unwrap(), [vec![0, 1, 2]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_item_goes_at_once_and_items_behind_a_batch_in_flight_linger_to_share_one() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let gc =
            Arc::new(GroupCommit::start(10, 4, Linger::WhileBusy(Duration::from_millis(5)), move |items: Vec<u32>| {
                seen.lock().unwrap().push(items.clone());
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    items
                }
            }));
        // Alone: sent without waiting (the paused clock would show a linger).
        let start = tokio::time::Instant::now();
        assert_eq!(gc.submit(0).await, Some(0));
        assert_eq!(start.elapsed(), Duration::from_millis(10), "the request's own time, no linger");
        // While the first of a burst is on the wire, the next ones, 1 ms apart, share one batch rather than each
        // taking a free slot.
        let mut tasks = Vec::new();
        for i in 1..=4 {
            let gc = gc.clone();
            tasks.push(tokio::spawn(async move { gc.submit(i).await }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for (i, t) in tasks.into_iter().enumerate() {
            assert_eq!(t.await.unwrap(), Some(i as u32 + 1));
        }
        assert_eq!(*batches.lock().unwrap(), [vec![0], vec![1], vec![2, 3, 4]]);
    }

    /// Nothing on the wire, but callers on their way (claiming their keys): a batch waits for them, up to the
    /// linger, and goes as soon as none is coming; with none coming, an item goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_batch_waits_for_callers_coming_and_goes_once_none_is() {
        let batches = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = batches.clone();
        let coming = Arc::new(Coming::default());
        let linger = Linger::WhileBusyOrComing(Duration::from_millis(20), coming.clone());
        // Requests take 30 ms: longer than the linger, which stays the cap.
        let gc = Arc::new(GroupCommit::start(10, 4, linger, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.clone());
            async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                items
            }
        }));
        let start = tokio::time::Instant::now();
        assert_eq!(gc.submit_coming(0, coming.enter()).await, Some(0));
        assert_eq!(start.elapsed(), Duration::from_millis(30), "alone, nobody coming: at once (the request's time)");
        // Three accepts claim at once; their claims end 3 ms apart; one is refused (nothing to send).
        let mut tasks = Vec::new();
        for i in 1..=3u32 {
            let (gc, guard) = (gc.clone(), coming.enter());
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(3 * u64::from(i))).await;
                if i == 3 {
                    drop(guard);
                    return None;
                }
                gc.submit_coming(i, guard).await
            }));
        }
        let start = tokio::time::Instant::now();
        for (i, t) in tasks.into_iter().enumerate() {
            let want = (i < 2).then_some(i as u32 + 1);
            assert_eq!(t.await.unwrap(), want);
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(9 + 30),
            "sent when the last one coming gave up, not at 20 ms"
        );
        assert_eq!(*batches.lock().unwrap(), [vec![0], vec![1, 2]]);
        // A caller that never comes holds a batch back for the linger at most.
        let stuck = coming.enter();
        let start = tokio::time::Instant::now();
        assert_eq!(gc.submit(4).await, Some(4));
        assert_eq!(start.elapsed(), Duration::from_millis(20 + 30));
        drop(stuck);
        // A batch waiting for one caller coming; eleven more queue their items and that one gives up, all before
        // the batcher looks again: every item is sent (in two batches, none over 10), none dropped.
        batches.lock().unwrap().clear();
        let late = coming.enter();
        let first = tokio::spawn({
            let (gc, guard) = (gc.clone(), coming.enter());
            async move { gc.submit_coming(100, guard).await }
        });
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut tasks = Vec::new();
        for i in 101..112u32 {
            let (gc, guard) = (gc.clone(), coming.enter());
            tasks.push(tokio::spawn(async move { gc.submit_coming(i, guard).await }));
        }
        drop(late);
        assert_eq!(first.await.unwrap(), Some(100));
        for (i, t) in (101..).zip(tasks) {
            assert_eq!(t.await.unwrap(), Some(i), "item {i} sent and answered");
        }
        let sent: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sent, [10, 2], "the first batch full, the rest in the next");
        assert!(sent.iter().all(|n| *n <= 10), "{sent:?}");
    }

    /// Under load a batch waits about as long as the batcher's requests take (up to the cap): against a slow
    /// service the same arrivals share fewer, fuller requests; against a fast one they wait less.
    #[tokio::test(start_paused = true)]
    async fn a_busy_batch_waits_about_a_request_s_time() {
        async fn requests_for_a_burst(service: Duration) -> (usize, Duration) {
            let batches = Arc::new(AtomicUsize::new(0));
            let seen = batches.clone();
            let cap = Duration::from_millis(50);
            let gc = Arc::new(GroupCommit::start(10, 4, Linger::WhileBusy(cap), move |items: Vec<u32>| {
                seen.fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(service).await;
                    items
                }
            }));
            // Alone: at once, whatever the service's pace.
            let start = tokio::time::Instant::now();
            assert_eq!(gc.submit(0).await, Some(0));
            assert_eq!(start.elapsed(), service);
            // Twenty items 3 ms apart.
            let mut tasks = Vec::new();
            let start = tokio::time::Instant::now();
            for i in 1..=20u32 {
                let gc = gc.clone();
                tasks.push(tokio::spawn(async move {
                    let sent = tokio::time::Instant::now();
                    (gc.submit(i).await, sent.elapsed())
                }));
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            let mut longest = Duration::ZERO;
            for (i, t) in (1..).zip(tasks) {
                let (got, took) = t.await.unwrap();
                assert_eq!(got, Some(i));
                longest = longest.max(took);
            }
            assert!(start.elapsed() < Duration::from_millis(60 + 50 + 80), "{:?}", start.elapsed());
            (batches.load(Ordering::Relaxed) - 1, longest)
        }
        let (fast, fast_wait) = requests_for_a_burst(Duration::from_millis(5)).await;
        let (slow, slow_wait) = requests_for_a_burst(Duration::from_millis(40)).await;
        assert!(slow < fast, "a slower service, fuller requests: {slow} against {fast}");
        // An item waits at most its linger (the requests' time, here under the cap) and its own request.
        assert!(fast_wait <= Duration::from_millis(5 + 5), "{fast_wait:?}");
        assert!(slow_wait <= Duration::from_millis(40 + 40), "{slow_wait:?}");
    }
}
