//! The expiry port on SQLite: expired rows deleted a bounded batch at a time, in one writer job.
//!
//! No table has an index on `expires_at` (one more b-tree insert on the hot path for every line and record), so a
//! sweep reads each table from its oldest rows: the idempotency records (in claim order since migration 10), the
//! audit lines (by id) and the retry records (by event id, a UUIDv7) are each written about in the order they
//! expire, and a sweep deletes the expired among the first `max` of them. A row that outlives the ones after it
//! (a longer horizon, an audit TTL shortened) holds its place, and the sweep still deletes past it up to `max`
//! such rows. The dedup window and the alarm documents are small tables (a dedup entry lives five minutes): their
//! expired rows are looked up directly.

use async_trait::async_trait;
use rusqlite::params;

use super::EmbeddedStore;
use crate::Result;
use crate::expiry::Expiry;

/// One statement a table: `?1` now, `?2` the batch.
const SWEEPS: [&str; 5] = [
    "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency ORDER BY rowid LIMIT ?2)
         AND expires_at <= ?1",
    "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id LIMIT ?2) AND expires_at <= ?1",
    "DELETE FROM retries WHERE event_id IN (SELECT event_id FROM retries ORDER BY event_id LIMIT ?2)
         AND expires_at <= ?1",
    "DELETE FROM dedup WHERE (queue, dedup_id) IN (SELECT queue, dedup_id FROM dedup WHERE expires_at <= ?1 LIMIT ?2)",
    "DELETE FROM alarm_threads WHERE alarm_arn IN
         (SELECT alarm_arn FROM alarm_threads WHERE expires_at <= ?1 LIMIT ?2)",
];

#[async_trait]
impl Expiry for EmbeddedStore {
    async fn sweep_expired(&self, max: usize) -> Result<u64> {
        let (now, max) = (self.now(), i64::try_from(max).unwrap_or(i64::MAX));
        self.writer
            .submit(move |conn| {
                let mut deleted = 0u64;
                for sql in SWEEPS {
                    deleted += conn.prepare_cached(sql)?.execute(params![now, max])? as u64;
                }
                Ok(deleted)
            })
            .await
    }
}
