//! A short-lived cache in front of a [`WebhookRegistry`]: on DynamoDB every hook delivery would otherwise read the
//! hook twice (ingress and worker) and write its invocation count once.
//!
//! - Hooks read within `ttl` are served from memory, so disabling a hook or changing its channel takes up to
//!   `ttl` to reach a process that read it recently (this process's own `set_active` applies at once). When an
//!   entry expires under load, one request reads the hook again and the others wait for its answer, rather than
//!   each reading it. That read also reads again every entry past half its TTL ([`WebhookRegistry::get_many`],
//!   one `BatchGetItem` on DynamoDB), so the hooks a process uses come to expire together: a busy process reads
//!   its hooks in one request a TTL, not one a hook.
//! - Invocation counts are added up in memory and written every [`COUNTS_EVERY`], one write per hook, and by
//!   [`CachedHooks::flush`], which the processes call when they stop. The counts of the last interval before a
//!   process dies are lost: they are statistics, not events. The interval is not the TTL (which bounds how stale
//!   a hook's settings are), so a short TTL costs no writes.

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

/// Other entries a read refreshes along with its own at most (with it, one `BatchGetItem`'s 100 keys).
const ALONG: usize = 99;

/// How often the ingress writes the invocation counts it added up: a busy hook's count in the console lags up to
/// this much, and ten hooks cost a write every three seconds.
pub const COUNTS_EVERY: Duration = Duration::from_secs(30);

/// The cache; see the module docs.
pub struct CachedHooks {
    inner: Arc<dyn WebhookRegistry>,
    ttl: Duration,
    hooks: Mutex<HashMap<HookId, (Instant, Webhook)>>,
    /// The reads under way, one per hook: a request that finds one shares its answer (a hook, none, or the
    /// error); if the request reading is cancelled, one of those waiting reads instead.
    reading: Mutex<HashMap<HookId, Arc<Read>>>,
    /// Bumped by this process's changes: a read begun before one is not cached.
    changes: std::sync::atomic::AtomicU64,
    counts: Mutex<HashMap<HookId, u64>>,
}

impl CachedHooks {
    /// Caches `inner` for `ttl` and starts the task that writes the counts every `counts_every` (on the current
    /// tokio runtime; it ends when the cache is dropped).
    pub fn new(inner: Arc<dyn WebhookRegistry>, ttl: Duration, counts_every: Duration) -> Arc<Self> {
        let cache = Arc::new(Self {
            inner,
            ttl,
            hooks: Mutex::default(),
            reading: Mutex::default(),
            changes: Default::default(),
            counts: Mutex::default(),
        });
        tokio::spawn(flush_every(Arc::downgrade(&cache), counts_every.max(Duration::from_millis(100))));
        cache
    }

    /// Writes the invocation counts added up so far; what fails to write is kept for the next time.
    pub async fn flush(&self) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        for (id, count) in counts {
            if let Err(e) = self.inner.record_invocations(&id, count).await {
                tracing::warn!(error = %e, hook_id = %id, count, "could not write hook invocation counts; kept");
                *self.counts.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += count;
            }
        }
    }
}

/// One read of a hook, shared by the requests that come while it is under way.
type Read = tokio::sync::OnceCell<Result<Option<Webhook>>>;

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

    /// Reads `id`, and with it every other entry past half its TTL (refreshed in the cache when read fine).
    async fn read_along(&self, id: &HookId, changes: u64) -> Result<Option<Webhook>> {
        let ageing: Vec<HookId> = {
            let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
            let reading = self.reading.lock().unwrap_or_else(|p| p.into_inner());
            hooks
                .iter()
                .filter(|(other, (at, _))| {
                    *other != id && at.elapsed() >= self.ttl / 2 && !reading.contains_key(*other)
                })
                .map(|(other, _)| other.clone())
                .take(ALONG)
                .collect()
        };
        if ageing.is_empty() {
            return self.inner.get(id).await;
        }
        let ids: Vec<HookId> = std::iter::once(id.clone()).chain(ageing).collect();
        let mut read = self.inner.get_many(&ids).await?.into_iter();
        let first = read.next().flatten();
        let unchanged = self.changes.load(std::sync::atomic::Ordering::SeqCst) == changes;
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        for (other, hook) in ids.iter().skip(1).zip(read) {
            match hook {
                // Deleted meanwhile: no longer served.
                None => {
                    hooks.remove(other);
                }
                // Read before this process changed a hook: not kept (the entry expires as it would have).
                Some(_) if !unchanged => {}
                Some(hook) => {
                    hooks.insert(other.clone(), (Instant::now(), hook));
                }
            }
        }
        Ok(first)
    }

    /// The hook as read within the TTL.
    fn fresh(&self, id: &HookId) -> Option<Webhook> {
        let hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        hooks.get(id).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, hook)| hook.clone())
    }
}

async fn flush_every(cache: Weak<CachedHooks>, every: Duration) {
    loop {
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
            return Ok(Some(hook));
        }
        let changes = self.changes.load(std::sync::atomic::Ordering::SeqCst);
        let read = self.reading.lock().unwrap_or_else(|p| p.into_inner()).entry(id.clone()).or_default().clone();
        // However this request ends (answered, or cancelled by its client), the read leaves the map: the next
        // request after it reads again, or takes the cache.
        let _leave = Leave { cache: self, id, read: &read };
        let hook = read.get_or_init(|| self.read_along(id, changes)).await.clone()?;
        let mut hooks = self.hooks.lock().unwrap_or_else(|p| p.into_inner());
        match &hook {
            // Unknown ids are not cached: anyone can make them up.
            None => {
                hooks.remove(id);
            }
            // Read before this process changed a hook: served to this request, not kept.
            Some(_) if self.changes.load(std::sync::atomic::Ordering::SeqCst) != changes => {}
            Some(h) => {
                if hooks.len() >= MAX_ENTRIES {
                    hooks.clear();
                }
                hooks.insert(id.clone(), (Instant::now(), h.clone()));
            }
        }
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
        Ok(())
    }
}
