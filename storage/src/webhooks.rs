//! The webhook registry port.

use async_trait::async_trait;
use eventfleet_schema::{HookFilter, HookId, Webhook};

use crate::Result;

/// Registered incoming webhooks.
#[async_trait]
pub trait WebhookRegistry: Send + Sync {
    /// Registers a hook; an existing id is [`crate::StorageError::Conflict`].
    async fn create(&self, hook: &Webhook) -> Result<()>;

    /// A hook by id.
    async fn get(&self, id: &HookId) -> Result<Option<Webhook>>;

    /// Hooks by id: one answer per id, in order (`None` for an id no hook has; an error is that id's alone). A
    /// backend whose reads are requests reads them together.
    async fn get_many(&self, ids: &[HookId]) -> Vec<Result<Option<Webhook>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.get(id).await);
        }
        out
    }

    /// Every hook, oldest first.
    async fn list(&self) -> Result<Vec<Webhook>>;

    /// Enables or disables a hook; returns it. Unknown id: [`crate::StorageError::NotFound`].
    async fn set_active(&self, id: &HookId, active: bool) -> Result<Webhook>;

    /// Sets (or, with `None`, removes) a hook's filter; returns the hook. Unknown id:
    /// [`crate::StorageError::NotFound`].
    async fn set_filter(&self, id: &HookId, filter: Option<&HookFilter>) -> Result<Webhook>;

    /// Sets (or, with `None`, removes) a hook's group key (a JSON pointer); returns the hook. Unknown id:
    /// [`crate::StorageError::NotFound`].
    async fn set_group_key(&self, id: &HookId, group_key: Option<&str>) -> Result<Webhook>;

    /// Sets whether a hook posts GitHub runs, deployments and pull requests as a message per delivery (`true`)
    /// or one living message each; returns the hook. Unknown id: [`crate::StorageError::NotFound`].
    async fn set_per_delivery(&self, id: &HookId, per_delivery: bool) -> Result<Webhook>;

    /// Counts `count` accepted invocations.
    async fn record_invocations(&self, id: &HookId, count: u64) -> Result<()>;

    /// Counts the invocations of several hooks; one result a hook, in order. A backend that can write them in
    /// fewer requests than one a hook does.
    async fn record_many_invocations(&self, counts: &[(HookId, u64)]) -> Vec<Result<()>> {
        let mut results = Vec::with_capacity(counts.len());
        for (id, count) in counts {
            results.push(self.record_invocations(id, *count).await);
        }
        results
    }
}
