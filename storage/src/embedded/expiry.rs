//! The expiry port on SQLite: expired rows deleted a bounded batch at a time, in one writer job.
//!
//! No table has an index on `expires_at` (one more b-tree insert on the hot path for every line and record), so a
//! sweep reads the idempotency records (in claim order since migration 10), the audit lines (by id) and the retry
//! records (by event id, a UUIDv7) from their oldest rows: each is written about in the order it expires. It looks
//! at the first [`WINDOW`] times `max` rows of each and deletes up to `max` expired among them, so a row that
//! outlives the ones after it (a retry record of an old event replayed, records claimed before a horizon was
//! shortened) holds up nothing until that many do; past them, space comes back once they expire (reads never see an
//! expired row either way). The dedup window and the alarm documents are small tables (a dedup entry lives five
//! minutes): their expired rows are looked up directly.
//!
//! An audit line is deleted a day past its expiry: the event log's sweep reads an event's outcome from its trail
//! at the end of its retention, which may be the trail's own expiry (retention up to the audit TTL).

use async_trait::async_trait;
use rusqlite::params;

use super::EmbeddedStore;
use crate::Result;
use crate::expiry::Expiry;

/// Rows a sweep looks at in each table read from its oldest, for each it may delete.
const WINDOW: i64 = 10;

/// How long past its expiry an audit line is kept for the event log's sweep, in ms.
const AUDIT_GRACE_MS: i64 = 24 * 3600 * 1000;

/// The tables read from their oldest rows: name, the key they are in order of, the grace past expiry in ms.
const OLDEST_FIRST: [(&str, &str, i64); 3] =
    [("idempotency", "rowid", 0), ("audit", "id", AUDIT_GRACE_MS), ("retries", "event_id", 0)];

/// The small tables whose expired rows are looked up directly: name, key, the key's columns.
const LOOKED_UP: [(&str, &str, &str); 2] =
    [("dedup", "(queue, dedup_id)", "queue, dedup_id"), ("alarm_threads", "alarm_arn", "alarm_arn")];

#[async_trait]
impl Expiry for EmbeddedStore {
    async fn sweep_expired(&self, max: usize) -> Result<u64> {
        let now = self.now();
        let max = i64::try_from(max).unwrap_or(i64::MAX / WINDOW);
        self.writer
            .submit(move |conn| {
                let mut deleted = 0u64;
                for (table, key, grace) in OLDEST_FIRST {
                    let sql = format!(
                        "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM
                             (SELECT {key}, expires_at FROM {table} ORDER BY {key} LIMIT ?3)
                         WHERE expires_at <= ?1 LIMIT ?2)"
                    );
                    let cutoff = now.saturating_sub(grace);
                    deleted += conn.prepare_cached(&sql)?.execute(params![cutoff, max, max.saturating_mul(WINDOW)])?
                        as u64;
                }
                for (table, key, columns) in LOOKED_UP {
                    let sql = format!(
                        "DELETE FROM {table} WHERE {key} IN (SELECT {columns} FROM {table} WHERE expires_at <= ?1 LIMIT ?2)"
                    );
                    deleted += conn.prepare_cached(&sql)?.execute(params![now, max])? as u64;
                }
                Ok(deleted)
            })
            .await
    }
}
