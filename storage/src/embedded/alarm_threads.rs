//! Alarm threads on SQLite: one row per document, written only when its version still matches.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{EmbeddedStore, from_json, millis, to_json};
use crate::alarm_threads::{AlarmThread, AlarmThreads, ChannelState, THREAD_TTL, channel_key};
use crate::{Result, StorageError};

impl EmbeddedStore {
    async fn get_versioned<T: DeserializeOwned + Send + 'static>(&self, key: String) -> Result<Option<(T, u64)>> {
        let now = self.now();
        self.read(move |conn| {
            let row: Option<(String, i64)> = conn
                .prepare_cached("SELECT record, version FROM alarm_threads WHERE alarm_arn = ?1 AND expires_at > ?2")?
                .query_row(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            row.map(|(json, version)| Ok((from_json(&json)?, version as u64))).transpose()
        })
        .await
    }

    async fn put_versioned<T: Serialize>(&self, key: String, record: &T, version: u64) -> Result<u64> {
        let json = to_json(record)?;
        let now = self.now();
        let expires = now.saturating_add(millis(THREAD_TTL));
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

#[async_trait]
impl AlarmThreads for EmbeddedStore {
    async fn thread(&self, alarm_arn: &str) -> Result<Option<AlarmThread>> {
        let found = self.get_versioned::<AlarmThread>(alarm_arn.to_owned()).await?;
        Ok(found.map(|(mut t, version)| {
            t.version = version;
            t
        }))
    }

    async fn put_thread(&self, thread: &AlarmThread) -> Result<u64> {
        self.put_versioned(thread.alarm_arn.clone(), thread, thread.version).await
    }

    async fn channel(&self, channel: &str) -> Result<Option<ChannelState>> {
        let found = self.get_versioned::<ChannelState>(channel_key(channel)).await?;
        Ok(found.map(|(mut c, version)| {
            c.version = version;
            c
        }))
    }

    async fn put_channel(&self, state: &ChannelState) -> Result<u64> {
        self.put_versioned(channel_key(&state.channel), state, state.version).await
    }
}
