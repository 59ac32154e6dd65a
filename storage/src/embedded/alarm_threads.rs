//! Documents (alarm threads, channel states) on SQLite: one row per document, written only when its version still matches.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{EmbeddedStore, millis};
use crate::documents::{DOCUMENT_TTL, Documents};
use crate::{Result, StorageError};

#[async_trait]
impl Documents for EmbeddedStore {
    async fn document(&self, key: &str) -> Result<Option<(String, u64)>> {
        let (key, now) = (key.to_owned(), self.now());
        self.read(move |conn| {
            let row: Option<(String, i64)> = conn
                .prepare_cached("SELECT record, version FROM alarm_threads WHERE alarm_arn = ?1 AND expires_at > ?2")?
                .query_row(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(row.map(|(json, version)| (json, version as u64)))
        })
        .await
    }

    async fn put_document(&self, key: &str, json: String, version: u64) -> Result<u64> {
        let key = key.to_owned();
        let now = self.now();
        let expires = now.saturating_add(millis(DOCUMENT_TTL));
        let (expected, next) = (version as i64, version as i64 + 1);
        self.writer
            .submit(move |conn| {
                // An expired row counts as absent, as reads see it.
                let changed = conn
                    .prepare_cached(
                        "INSERT INTO alarm_threads (alarm_arn, version, record, updated_at, expires_at)
                         VALUES (?1, ?3, ?4, ?5, ?6)
                         ON CONFLICT (alarm_arn) DO UPDATE SET
                            version = excluded.version, record = excluded.record,
                            updated_at = excluded.updated_at, expires_at = excluded.expires_at
                         WHERE alarm_threads.version = ?2 OR (?2 = 0 AND alarm_threads.expires_at <= ?5)",
                    )?
                    .execute(params![key, expected, next, json, now, expires])?;
                if changed == 0 {
                    return Err(StorageError::Conflict(format!("{key} changed since version {expected}")));
                }
                Ok(next as u64)
            })
            .await
    }
}
