//! The retry-record port: attempts, errors and dead-letter reasons.

use async_trait::async_trait;
use eventfleet_schema::{EventId, RetryRecord, RetryStatus};

use crate::Result;

/// Retry records, one per event that failed at least once.
#[async_trait]
pub trait RetryRecords: Send + Sync {
    /// Writes the record, replacing the event's previous one.
    async fn upsert(&self, record: &RetryRecord) -> Result<()>;

    /// The event's record, unless absent or expired.
    async fn get(&self, event_id: EventId) -> Result<Option<RetryRecord>>;

    /// Records with a status (all when `None`), most recently updated first.
    async fn list(&self, status: Option<RetryStatus>, limit: usize) -> Result<Vec<RetryRecord>>;
}
