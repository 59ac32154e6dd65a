//! The hook cache in front of the real embedded registry.

use std::time::Duration;

use tokio::time::Instant;

use eventfleet_schema::{HookId, HookKind, Timestamp, Webhook};
use eventfleet_storage::hook_cache::{COUNTS_EVERY, CachedHooks};
use eventfleet_storage::webhooks::WebhookRegistry;
use eventfleet_storage::{EmbeddedOptions, EmbeddedStore, Store};

async fn store_with_hook() -> (tempfile::TempDir, Store, Webhook) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_dir(dir.path(), EmbeddedOptions::default()).unwrap().into_store();
    let hook = Webhook {
        id: HookId::new(),
        name: "cached".into(),
        channel: "#ops".into(),
        kind: HookKind::Alert,
        active: true,
        secret: None,
        invocation_count: 0,
        filter: None,
        group_key: None,
        per_delivery: false,
        created_by: "test".into(),
        created_at: Timestamp::now_system(),
    };
    store.webhooks.create(&hook).await.unwrap();
    (dir, store, hook)
}

#[tokio::test]
async fn a_hook_is_served_from_memory_and_a_change_elsewhere_shows_within_the_ttl() {
    let (_dir, store, hook) = store_with_hook().await;
    let ttl = Duration::from_secs(2);
    let cache = CachedHooks::new(store.webhooks.clone(), ttl, COUNTS_EVERY);
    let read = Instant::now();
    assert!(cache.get(&hook.id).await.unwrap().unwrap().active);
    // Another process disables it: this one keeps serving what it read until it reads it again.
    store.webhooks.set_active(&hook.id, false).await.unwrap();
    assert!(cache.get(&hook.id).await.unwrap().unwrap().active, "served from memory");
    let mut seen_disabled = None;
    while read.elapsed() < ttl * 5 {
        if !cache.get(&hook.id).await.unwrap().unwrap().active {
            seen_disabled = Some(read.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A hook in use is read ahead once past half its TTL: the change shows from then, never later than the TTL.
    let after = seen_disabled.expect("read again within the ttl");
    assert!(after >= ttl / 2, "served from memory until half the ttl, read again after {after:?}");
    // Its own changes apply at once.
    assert!(cache.set_active(&hook.id, true).await.unwrap().active);
    assert!(cache.get(&hook.id).await.unwrap().unwrap().active);
    // Unknown ids are not cached: a hook created after a miss is found at once.
    let later = HookId::new();
    assert_eq!(cache.get(&later).await.unwrap(), None);
    store.webhooks.create(&Webhook { id: later.clone(), ..hook.clone() }).await.unwrap();
    assert!(cache.get(&later).await.unwrap().is_some());
}

#[tokio::test]
async fn invocation_counts_are_added_up_and_written_in_one_go() {
    let (_dir, store, hook) = store_with_hook().await;
    // A ttl long enough that only the explicit flush writes.
    let cache = CachedHooks::new(store.webhooks.clone(), Duration::from_secs(3600), Duration::from_secs(3600));
    for _ in 0..3 {
        cache.record_invocations(&hook.id, 1).await.unwrap();
    }
    assert_eq!(store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 0, "not written yet");
    cache.flush().await;
    assert_eq!(store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 3);
    cache.flush().await;
    assert_eq!(store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count, 3, "written once");
}

#[tokio::test]
async fn counts_are_written_every_interval_without_being_asked() {
    let (_dir, store, hook) = store_with_hook().await;
    // Hooks cached for an hour: the counts' interval is their own.
    let cache = CachedHooks::new(store.webhooks.clone(), Duration::from_secs(3600), Duration::from_millis(200));
    cache.record_invocations(&hook.id, 2).await.unwrap();
    let mut written = 0;
    for _ in 0..100 {
        written = store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count;
        if written == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(written, 2);
}

#[tokio::test]
async fn counts_after_a_write_are_written_in_the_next_interval() {
    let (_dir, store, hook) = store_with_hook().await;
    // The task that writes the counts waits for a count, then for the interval: it must wait again after a write.
    let cache = CachedHooks::new(store.webhooks.clone(), Duration::from_secs(3600), Duration::from_millis(100));
    for expected in [1, 3, 6] {
        let before = store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count;
        cache.record_invocations(&hook.id, expected - before).await.unwrap();
        let mut written = before;
        for _ in 0..100 {
            written = store.webhooks.get(&hook.id).await.unwrap().unwrap().invocation_count;
            if written == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(written, expected, "the counts made after {before} were written");
    }
}

/// The real registry, counting its reads: what the cache sends to the store.
struct CountingReads {
    inner: std::sync::Arc<dyn WebhookRegistry>,
    reads: std::sync::atomic::AtomicUsize,
    /// The ids of each read of several hooks at once.
    many: std::sync::Mutex<Vec<Vec<HookId>>>,
    /// Reads of several hooks at once that have answered.
    many_done: std::sync::atomic::AtomicUsize,
}

/// The store's registry, counting its reads.
fn counting(store: &Store) -> std::sync::Arc<CountingReads> {
    std::sync::Arc::new(CountingReads {
        inner: store.webhooks.clone(),
        reads: Default::default(),
        many: Default::default(),
        many_done: Default::default(),
    })
}

#[async_trait::async_trait]
impl WebhookRegistry for CountingReads {
    async fn create(&self, hook: &Webhook) -> eventfleet_storage::Result<()> {
        self.inner.create(hook).await
    }
    async fn get(&self, id: &HookId) -> eventfleet_storage::Result<Option<Webhook>> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // A read that takes a while, as DynamoDB's does, so the requests behind it overlap it.
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.inner.get(id).await
    }
    async fn get_many(&self, ids: &[HookId]) -> Vec<eventfleet_storage::Result<Option<Webhook>>> {
        self.many.lock().unwrap().push(ids.to_vec());
        let answers = self.inner.get_many(ids).await;
        self.many_done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        answers
    }
    async fn list(&self) -> eventfleet_storage::Result<Vec<Webhook>> {
        self.inner.list().await
    }
    async fn set_active(&self, id: &HookId, active: bool) -> eventfleet_storage::Result<Webhook> {
        self.inner.set_active(id, active).await
    }
    async fn set_filter(
        &self,
        id: &HookId,
        filter: Option<&eventfleet_schema::HookFilter>,
    ) -> eventfleet_storage::Result<Webhook> {
        self.inner.set_filter(id, filter).await
    }
    async fn set_group_key(&self, id: &HookId, group_key: Option<&str>) -> eventfleet_storage::Result<Webhook> {
        self.inner.set_group_key(id, group_key).await
    }
    async fn set_per_delivery(&self, id: &HookId, per_delivery: bool) -> eventfleet_storage::Result<Webhook> {
        self.inner.set_per_delivery(id, per_delivery).await
    }
    async fn record_invocations(&self, id: &HookId, count: u64) -> eventfleet_storage::Result<()> {
        self.inner.record_invocations(id, count).await
    }
}

#[tokio::test]
async fn requests_that_miss_together_share_one_read() {
    let (_dir, store, hook) = store_with_hook().await;
    let counting = counting(&store);
    let cache = CachedHooks::new(counting.clone(), Duration::from_secs(3600), COUNTS_EVERY);
    let mut gets = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (cache, id) = (cache.clone(), hook.id.clone());
        gets.spawn(async move { cache.get(&id).await.unwrap().unwrap().id });
    }
    while let Some(got) = gets.join_next().await {
        assert_eq!(got.unwrap(), hook.id);
    }
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 1, "32 requests, one read");
    // An unknown id is not cached: read again by each request that comes after, but shared by those that come
    // together (a burst to a made-up id is one read, not one each).
    let unknown = HookId::new();
    assert_eq!(cache.get(&unknown).await.unwrap(), None);
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 2);
    let mut gets = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (cache, id) = (cache.clone(), unknown.clone());
        gets.spawn(async move { cache.get(&id).await.unwrap() });
    }
    while let Some(got) = gets.join_next().await {
        assert_eq!(got.unwrap(), None);
    }
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 3);
    // A request cancelled while it reads (its client gone) leaves nothing behind: the next one reads.
    let other = HookId::new();
    let cancelled = tokio::time::timeout(Duration::from_millis(5), cache.get(&other)).await;
    assert!(cancelled.is_err(), "cancelled mid-read");
    assert_eq!(cache.get(&other).await.unwrap(), None);
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 5);
}

/// Polls `done` every 20 ms until it holds, for up to 10 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn entries_past_half_their_ttl_are_read_ahead_together_in_the_background() {
    let (_dir, store, hook) = store_with_hook().await;
    let mut others = Vec::new();
    for i in 0..3 {
        let other = Webhook { id: HookId::new(), name: format!("other {i}"), ..hook.clone() };
        store.webhooks.create(&other).await.unwrap();
        others.push(other);
    }
    let counting = counting(&store);
    // Long enough that a stall of the test machine of a second or two changes nothing below.
    let ttl = Duration::from_secs(6);
    let cache = CachedHooks::new(counting.clone(), ttl, COUNTS_EVERY);
    for other in &others {
        // Read, then used from memory: in use.
        assert!(cache.get(&other.id).await.unwrap().is_some());
        assert!(cache.get(&other.id).await.unwrap().is_some());
    }
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert!(counting.many.lock().unwrap().is_empty(), "nothing is read ahead before half the TTL");
    // Past half their TTL; another process disables one of them.
    tokio::time::sleep(ttl / 2 + Duration::from_millis(100)).await;
    store.webhooks.set_active(&others[0].id, false).await.unwrap();
    // Served from memory, and the three are read again together, in the background.
    assert!(cache.get(&others[1].id).await.unwrap().unwrap().active);
    until("the entries are read ahead", || counting.many_done.load(std::sync::atomic::Ordering::SeqCst) > 0).await;
    let mut ahead = counting.many.lock().unwrap()[0].clone();
    ahead.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut want: Vec<HookId> = others.iter().map(|o| o.id.clone()).collect();
    want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(ahead, want, "every entry in use past half its TTL, in one read");
    // The change it brought is served from memory: nothing was read alone.
    until("the read ahead is applied", || {
        futures_util::FutureExt::now_or_never(cache.get(&others[0].id))
            .and_then(|got| got.ok().flatten())
            .is_some_and(|hook| !hook.active)
    })
    .await;
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(counting.many.lock().unwrap().len(), 1, "one read ahead, not one a request");
}

/// Hooks first read at different times (a worker reaches each hook's group in turn) join one read ahead: the one
/// past half its TTL brings along the used ones past a quarter of it.
#[tokio::test]
async fn hooks_read_at_different_times_are_read_ahead_together() {
    let (_dir, store, hook) = store_with_hook().await;
    let later = Webhook { id: HookId::new(), name: "later".into(), ..hook.clone() };
    store.webhooks.create(&later).await.unwrap();
    let counting = counting(&store);
    let ttl = Duration::from_secs(4);
    let cache = CachedHooks::new(counting.clone(), ttl, COUNTS_EVERY);
    let start = Instant::now();
    // Each read, then used from memory: in use.
    for _ in 0..2 {
        assert!(cache.get(&hook.id).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..2 {
        assert!(cache.get(&later.id).await.unwrap().is_some());
    }
    // The first past half its TTL, the later one past a quarter only: a request for the first reads both ahead.
    tokio::time::sleep((start + ttl / 2 + Duration::from_millis(100)).saturating_duration_since(Instant::now())).await;
    assert!(cache.get(&hook.id).await.unwrap().is_some());
    until("the entries are read ahead", || counting.many_done.load(std::sync::atomic::Ordering::SeqCst) > 0).await;
    let mut ahead = counting.many.lock().unwrap()[0].clone();
    ahead.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut want = vec![hook.id.clone(), later.id.clone()];
    want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(ahead, want, "one read of both");
}

#[tokio::test]
async fn an_entry_no_request_used_since_its_read_is_not_read_ahead_and_is_dropped_once_expired() {
    let (_dir, store, hook) = store_with_hook().await;
    let cold = Webhook { id: HookId::new(), name: "cold".into(), ..hook.clone() };
    store.webhooks.create(&cold).await.unwrap();
    let counting = counting(&store);
    // A stall of the test machine under half the TTL changes nothing below.
    let ttl = Duration::from_secs(2);
    let cache = CachedHooks::new(counting.clone(), ttl, COUNTS_EVERY);
    assert!(cache.get(&cold.id).await.unwrap().is_some());
    assert!(cache.get(&hook.id).await.unwrap().is_some());
    // The busy hook is used for several TTLs; the cold one never again.
    let start = Instant::now();
    let (mut last, mut longest_gap) = (Instant::now(), Duration::ZERO);
    while start.elapsed() < ttl * 3 {
        assert!(cache.get(&hook.id).await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(20)).await;
        longest_gap = longest_gap.max(last.elapsed());
        last = Instant::now();
    }
    let many = counting.many.lock().unwrap().clone();
    assert!(many.len() >= 3, "the busy hook was read ahead every half TTL or so: {many:?}");
    assert!(many.iter().all(|ids| ids == &vec![hook.id.clone()]), "only the hook in use is read ahead: {many:?}");
    // The busy hook never expired under load: read once, then only ahead (unless the machine stalled the loop
    // for most of half a TTL, when a read ahead may come too late).
    let reads = counting.reads.load(std::sync::atomic::Ordering::SeqCst);
    if longest_gap < ttl / 2 - Duration::from_millis(300) {
        assert_eq!(reads, 2, "each read alone once (longest gap {longest_gap:?})");
    }
    let reads_before = counting.reads.load(std::sync::atomic::Ordering::SeqCst);
    // The cold one was dropped: its next request reads it.
    assert!(cache.get(&cold.id).await.unwrap().is_some());
    assert_eq!(counting.reads.load(std::sync::atomic::Ordering::SeqCst), reads_before + 1);
}
