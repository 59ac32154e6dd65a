//! The audit port: every event's timeline, append-only.

use async_trait::async_trait;
use eventfleet_schema::{AuditEntry, EventId, Step, Timestamp};

use crate::Result;

/// Which audit entries to return across events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only this step.
    pub step: Option<Step>,
    /// At or after.
    pub since: Option<Timestamp>,
    /// Before.
    pub until: Option<Timestamp>,
    /// At most this many, oldest first.
    pub limit: Option<usize>,
}

/// The audit trail. Entries expire after the backend's audit TTL (90 days by default).
#[async_trait]
pub trait AuditLog: Send + Sync {
    /// Appends entries (one batch write where the backend allows).
    async fn append(&self, entries: Vec<AuditEntry>) -> Result<()>;

    /// One event's timeline, in the order the entries were appended.
    async fn history(&self, event_id: EventId) -> Result<Vec<AuditEntry>>;

    /// Entries across events.
    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>>;
}
