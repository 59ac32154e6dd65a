//! The expiry port: rows past their expiry given back. Reads already treat an expired idempotency record, audit
//! line, retry record, dedup entry or alarm document as absent; a sweep only reclaims the space they hold.

use async_trait::async_trait;

use crate::Result;

/// Deletes what has expired, a bounded batch at a time.
#[async_trait]
pub trait Expiry: Send + Sync {
    /// Deletes up to `max` expired rows of each kind (idempotency records, audit lines, retry records, dedup
    /// entries, alarm documents); returns how many in all. The embedded store's background sweep, one short
    /// writer job a call so that it never holds up the hot path; DynamoDB's TTL does it by itself there (0).
    async fn sweep_expired(&self, max: usize) -> Result<u64>;
}
