//! A short-lived cache in front of a [`WebhookRegistry`]: on DynamoDB every hook delivery would otherwise read the
//! hook twice (ingress and worker) and write its invocation count once.
//!
//! - Hooks read within `ttl` are served from memory, so disabling a hook or changing its channel takes up to
//!   `ttl` to reach a process that read it recently (this process's own `set_active` applies at once). When an
//!   entry expires under load, one request reads the hook again and the others wait for its answer, rather than
//!   each reading it.
//! - **Read ahead, together.** A request served an entry past half its TTL starts, in the background, one read
//!   of every entry past a quarter of its TTL that a request used since it was read ([`WebhookRegistry::get_many`]:
//!   `BatchGetItem`s of up to 100 on DynamoDB); one such read at a time, given up after a TTL. So the hooks a busy
//!   process uses are read together, a few requests a TTL rather than one a hook, and they do not expire under
//!   load. An entry no request used since its read is not read ahead, and is dropped once expired. A hook read
//!   ahead as gone is dropped; one whose read failed keeps its entry until it expires, and its next request reads
//!   it alone. An entry's age counts from when its read began, and a read never replaces a later one.
//! - Invocation counts are added up in memory and written every [`COUNTS_EVERY`] (every hook's in one request on
//!   DynamoDB), and by [`CachedHooks::flush`], which the processes call when they stop. The counts of the last
//!   interval before a process dies are lost: they are statistics, not events. The interval is not the TTL (which
//!   bounds how stale a hook's settings are), so a short TTL costs no writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use eventfleet_schema::{HookFilter, HookId, Webhook};
use tokio::time::Instant;

use crate::Result;
use crate::webhooks::WebhookRegistry;

/// Entries kept at most; beyond it the cache starts over (hooks are few, ids in requests are not).
const MAX_ENTRIES: usize = 10_000;

/// How often the ingress writes the invocation counts it added up: a busy hook's count in the console lags up to
/// this much, and every hook's count costs one write (one request on DynamoDB) an interval.
pub const COUNTS_EVERY: Duration = Duration::from_secs(30);

/// The cache; see the module docs.
pub struct CachedHooks {
    inner: Arc<dyn WebhookRegistry>,
    ttl: Duration,
    hooks: Mutex<HashMap<HookId, Entry>>,
    /// When the next read ahead may be due (the oldest entry's read plus half the TTL): until then a request
    /// does not look.
    due: Mutex<Option<Instant>>,
    /// A read ahead is under way.
    reading_ahead: std::sync::atomic::AtomicBool,
    /// This cache, for the read ahead's task.
    me: Weak<CachedHooks>,
    /// The reads under way, one per hook: a request that finds one shares its answer (a hook, none, or the
    /// error); if the request reading is cancelled, one of those waiting reads instead.
    reading: Mutex<HashMap<HookId, Arc<Read>>>,
    /// Bumped by this process's changes: a read begun before one is not cached.
    changes: std::sync::atomic::AtomicU64,
    counts: Mutex<HashMap<HookId, u64>>,
    /// Told of every count, and of the cache's drop: the task that writes the counts waits for it, so an idle
    /// process has no timer of this cache's running.
    counted: Arc<tokio::sync::Notify>,
    /// Held while counts are written: a flush at shutdown waits for a periodic one under way, whose counts are
    /// out of `counts` already.
    writing: tokio::sync::Mutex<()>,
}

impl Drop for CachedHooks {
    fn drop(&mut self) {
        // The writing task looks, finds the cache gone and ends.
        self.counted.notify_one();
    }
}

impl CachedHooks {
    /// Caches `inner` for `ttl` and starts the task that writes the counts `counts_every` after the first one
    /// counted since the last write (on the current tokio runtime; it ends when the cache is dropped).
    pub fn new(inner: Arc<dyn WebhookRegistry>, ttl: Duration, counts_every: Duration) -> Arc<Self> {
        let cache = Arc::new_cyclic(|me| Self {
            inner,
            ttl,
            hooks: Mutex::default(),
            due: Mutex::default(),
            reading_ahead: Default::default(),
            me: me.clone(),
            reading: Mutex::default(),
            changes: Default::default(),
            counts: Mutex::default(),
            counted: Arc::default(),
            writing: tokio::sync::Mutex::default(),
        });
        let counted = Arc::clone(&cache.counted);
        tokio::spawn(flush_every(Arc::downgrade(&cache), counted, counts_every.max(Duration::from_millis(100))));
        cache
    }

    /// Writes the invocation counts added up so far; what fails to write is kept for the next time.
    pub async fn flush(&self) {
        let _writing = self.writing.lock().await;
        let counts: Vec<(HookId, u64)> =
            std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner())).into_iter().collect();
        if counts.is_empty() {
            return;
        }
        let written = self.inner.record_many_invocations(&counts).await;
        for ((id, count), result) in counts.into_iter().zip(written) {
            if let Err(e) = result {
                // A hook no longer stored has nowhere to count: kept, its counts would be tried every interval.
                if matches!(e, crate::StorageError::NotFound(_)) {
                    tracing::warn!(hook_id = %id, count, "invocation counts of a hook that is gone: dropped");
                    continue;
                }
                tracing::warn!(error = %e, hook_id = %id, count, "could not write hook invocation counts; kept");
                *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += count;
                // Written again next time.
                self.counted.notify_one();
            }
        }
    }
}

/// One read of a hook, shared by the requests that come while it is under way: when it began, and its answer.
type Read = tokio::sync::OnceCell<(Instant, Result<Option<Webhook>>)>;

/// Takes a read out of the map when a request that shared it is done (if no later read replaced it).
struct Leave<'a> {
    cache: &'a CachedHooks,
    id: &'a HookId,
    read: &'a Arc<Read>,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut reading = self.cache.reading.lock().unwrap_or_else(|p| p.into_inner());
        if reading.get(self.id).is_some_and(|r| Arc::ptr_eq(r, self.read)) {
            reading.remove(self.id);
        }
    }
}

impl CachedHooks {
    /// Forgets the hook: read again by the next request, not served from a read begun before a change.
    fn forget(&self, id: &HookId) {
        self.changes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.hooks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
        self.reading.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// The hook as read within the TTL, marked as used now. One past half its TTL makes a read ahead due now (it
    /// may have been left out of the last one, unused then).
    fn fresh(&self, id: &HookId) -> Option<Webhook> {
        let now = Instant::now();
        let (hook, ageing) = {
            let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
            let entry = hooks.get_mut(id).filter(|entry| now.duration_since(entry.read_at) < self.ttl)?;
            entry.used_at = now;
            (entry.hook.clone(), now.duration_since(entry.read_at) >= self.ttl / 2)
        };
        if ageing {
            *self.due.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
        }
        Some(hook)
    }

    /// Keeps `hook` as read at `read_at`, unless the entry holds a later read.
    fn keep(&self, id: &HookId, hook: Webhook, read_at: Instant) {
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        if hooks.get(id).is_some_and(|entry| entry.read_at >= read_at) {
            return;
        }
        if hooks.len() >= MAX_ENTRIES {
            hooks.clear();
        }
        // Used as of its read: the request that read it is what the read served; a later one makes it in use.
        hooks.insert(id.clone(), Entry { read_at, used_at: read_at, hook });
        let mut due = self.due.lock().unwrap_or_else(|p| p.into_inner());
        let at = read_at + self.ttl / 2;
        *due = Some(due.map_or(at, |due| due.min(at)));
    }

    /// Starts a read ahead when one may be due (an entry past half its TTL) and none is under way: of every entry
    /// past a quarter of its TTL that a request used since it was read; an expired entry no request used within the
    /// TTL is dropped.
    fn read_ahead(&self) {
        use std::sync::atomic::Ordering;
        let now = Instant::now();
        if self.due.lock().unwrap_or_else(|p| p.into_inner()).is_none_or(|due| now < due) {
            return;
        }
        // Outside a runtime there is nothing to run it on: entries are read on their misses instead.
        if tokio::runtime::Handle::try_current().is_err() || self.reading_ahead.load(Ordering::Acquire) {
            return;
        }
        if self.reading_ahead.swap(true, Ordering::AcqRel) {
            return;
        }
        // Cleared however the read ends (answered, failed, timed out, panicked, or dropped with the runtime).
        let ahead = ReadingAhead(self.me.clone());
        let ids: Vec<HookId> = {
            let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
            hooks.retain(|_, entry| {
                now.duration_since(entry.read_at) < self.ttl || now.duration_since(entry.used_at) < self.ttl
            });
            // With the ones past half their TTL go the used ones past a quarter, which would come due before the
            // next read ahead: hooks first read at different times (a worker reaches each hook's group in turn)
            // join one schedule instead of each keeping its own.
            let ids = hooks
                .iter()
                .filter(|(_, entry)| now.duration_since(entry.read_at) >= self.ttl / 4 && entry.used_at > entry.read_at)
                .map(|(id, _)| id.clone())
                .collect();
            // The next look: when the oldest entry not read now (younger than a quarter) comes past half its TTL,
            // or the ones read now do; a request served an entry past half its TTL brings it forward.
            let next =
                hooks.values().map(|entry| entry.read_at).filter(|at| now.duration_since(*at) < self.ttl / 4).min();
            *self.due.lock().unwrap_or_else(|p| p.into_inner()) = Some(next.unwrap_or(now) + self.ttl / 2);
            ids
        };
        let Some(me) = self.me.upgrade().filter(|_| !ids.is_empty()) else { return };
        tokio::spawn(async move {
            let _ahead = ahead;
            // What a read returns is the hook as it was when the read began: its age counts from then.
            let at = Instant::now();
            // A read that never answers must not stop every later one.
            let Ok(read) = tokio::time::timeout(me.ttl, me.inner.get_many(&ids)).await else {
                tracing::warn!(hooks = ids.len(), "reading hooks ahead timed out");
                return;
            };
            debug_assert_eq!(read.len(), ids.len(), "one answer per hook");
            let mut hooks = me.hooks.lock().unwrap_or_else(|p| p.into_inner());
            for (id, result) in ids.iter().zip(read) {
                // An entry gone meanwhile (this process changed the hook) or read again since stays as it is.
                let Some(entry) = hooks.get_mut(id).filter(|entry| entry.read_at < at) else { continue };
                match result {
                    Ok(Some(hook)) => {
                        entry.read_at = at;
                        entry.hook = hook;
                    }
                    // Gone: no longer served.
                    Ok(None) => {
                        hooks.remove(id);
                    }
                    // Kept until it expires; its next request then reads it alone.
                    Err(e) => tracing::warn!(error = %e, hook_id = %id, "could not read a hook ahead"),
                }
            }
        });
    }
}

/// Clears the cache's read-ahead flag when dropped.
struct ReadingAhead(Weak<CachedHooks>);

impl Drop for ReadingAhead {
    fn drop(&mut self) {
        if let Some(cache) = self.0.upgrade() {
            cache.reading_ahead.store(false, std::sync::atomic::Ordering::Release);
        }
    }
}

/// A cached hook: when it was read, and when a request last used it.
struct Entry {
    read_at: Instant,
    used_at: Instant,
    hook: Webhook,
}

async fn flush_every(cache: Weak<CachedHooks>, counted: Arc<tokio::sync::Notify>, every: Duration) {
    loop {
        // Nothing counted, nothing to write: no timer while the process is idle.
        counted.notified().await;
        if cache.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(every).await;
        let Some(cache) = cache.upgrade() else { return };
        cache.flush().await;
    }
}

#[async_trait]
impl WebhookRegistry for CachedHooks {
    async fn create(&self, hook: &Webhook) -> Result<()> {
        self.inner.create(hook).await
    }

    async fn get(&self, id: &HookId) -> Result<Option<Webhook>> {
        if let Some(hook) = self.fresh(id) {
            self.read_ahead();
            return Ok(Some(hook));
        }
        let changes = self.changes.load(std::sync::atomic::Ordering::SeqCst);
        let read = self.reading.lock().unwrap_or_else(|p| p.into_inner()).entry(id.clone()).or_default().clone();
        // However this request ends (answered, or cancelled by its client), the read leaves the map: the next
        // request after it reads again, or takes the cache.
        let _leave = Leave { cache: self, id, read: &read };
        let (read_at, hook) = read
            .get_or_init(|| async {
                let at = Instant::now();
                (at, self.inner.get(id).await)
            })
            .await
            .clone();
        let hook = hook?;
        match &hook {
            // Unknown ids are not cached: anyone can make them up.
            None => {
                self.hooks.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
            }
            // Read before this process changed a hook: served to this request, not kept.
            Some(_) if self.changes.load(std::sync::atomic::Ordering::SeqCst) != changes => {}
            Some(h) => self.keep(id, h.clone(), read_at),
        }
        self.read_ahead();
        Ok(hook)
    }

    async fn list(&self) -> Result<Vec<Webhook>> {
        self.inner.list().await
    }

    async fn set_active(&self, id: &HookId, active: bool) -> Result<Webhook> {
        let changed = self.inner.set_active(id, active).await;
        // After the write: a read racing it would otherwise cache the old hook for the whole TTL.
        self.forget(id);
        changed
    }

    async fn set_filter(&self, id: &HookId, filter: Option<&HookFilter>) -> Result<Webhook> {
        let changed = self.inner.set_filter(id, filter).await;
        self.forget(id);
        changed
    }

    async fn set_group_key(&self, id: &HookId, group_key: Option<&str>) -> Result<Webhook> {
        let changed = self.inner.set_group_key(id, group_key).await;
        self.forget(id);
        changed
    }

    async fn set_per_delivery(&self, id: &HookId, per_delivery: bool) -> Result<Webhook> {
        let changed = self.inner.set_per_delivery(id, per_delivery).await;
        self.forget(id);
        changed
    }

    async fn record_invocations(&self, id: &HookId, count: u64) -> Result<()> {
        *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(id.clone()).or_default() += count;
        self.counted.notify_one();
        Ok(())
    }
}
