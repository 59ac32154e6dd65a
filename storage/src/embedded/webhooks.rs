//! The webhook registry on SQLite.

use async_trait::async_trait;
use eventfleet_schema::{HookFilter, HookId, HookKind, Timestamp, Webhook};
use rusqlite::{OptionalExtension, Row, params};

use super::EmbeddedStore;
use crate::webhooks::WebhookRegistry;
use crate::{Result, StorageError};

const COLUMNS: &str = "id, name, channel, kind, active, secret, invocation_count, created_by, created_at, filter, group_key, per_delivery";

fn hook(r: &Row<'_>) -> rusqlite::Result<Webhook> {
    let kind: String = r.get(3)?;
    Ok(Webhook {
        id: HookId::from_raw(r.get::<_, String>(0)?),
        name: r.get(1)?,
        channel: r.get(2)?,
        kind: HookKind::parse(&kind).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                3,
                rusqlite::types::Type::Text,
                format!("hook kind {kind}").into(),
            )
        })?,
        active: r.get(4)?,
        secret: r.get(5)?,
        invocation_count: r.get::<_, i64>(6)? as u64,
        created_by: r.get(7)?,
        created_at: Timestamp::from_millis(r.get(8)?),
        filter: r
            .get::<_, Option<String>>(9)?
            .map(|json| serde_json::from_str(&json))
            .transpose()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(9, rusqlite::types::Type::Text, Box::new(e)))?,
        group_key: r.get(10)?,
        per_delivery: r.get(11)?,
    })
}

fn filter_json(filter: Option<&HookFilter>) -> Result<Option<String>> {
    filter
        .filter(|f| !f.is_empty())
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StorageError::Invalid(format!("hook filter: {e}")))
}

#[async_trait]
impl WebhookRegistry for EmbeddedStore {
    async fn create(&self, h: &Webhook) -> Result<()> {
        let h = h.clone();
        let filter = filter_json(h.filter.as_ref())?;
        self.writer
            .submit(move |conn| {
                let inserted = conn
                    .prepare_cached(&format!(
                        "INSERT OR IGNORE INTO webhooks ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                    ))?
                    .execute(params![
                        h.id.as_str(),
                        h.name,
                        h.channel,
                        h.kind.as_str(),
                        h.active,
                        h.secret,
                        h.invocation_count as i64,
                        h.created_by,
                        h.created_at.as_millis(),
                        filter,
                        h.group_key,
                        h.per_delivery
                    ])?;
                if inserted == 0 {
                    return Err(StorageError::Conflict(format!("hook {} exists", h.id)));
                }
                Ok(())
            })
            .await
    }

    async fn get(&self, id: &HookId) -> Result<Option<Webhook>> {
        let id = id.as_str().to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks WHERE id = ?1"))?
                .query_row([id], hook)
                .optional()?)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Webhook>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {COLUMNS} FROM webhooks ORDER BY created_at, id"))?
                .query_map([], hook)?
                .collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn set_active(&self, id: &HookId, active: bool) -> Result<Webhook> {
        let id = id.as_str().to_owned();
        self.writer
            .submit(move |conn| {
                conn.prepare_cached(&format!("UPDATE webhooks SET active = ?2 WHERE id = ?1 RETURNING {COLUMNS}"))?
                    .query_row(params![id, active], hook)
                    .optional()?
                    .ok_or_else(|| StorageError::NotFound(format!("hook {id}")))
            })
            .await
    }

    async fn set_filter(&self, id: &HookId, filter: Option<&HookFilter>) -> Result<Webhook> {
        let id = id.as_str().to_owned();
        let filter = filter_json(filter)?;
        self.writer
            .submit(move |conn| {
                conn.prepare_cached(&format!("UPDATE webhooks SET filter = ?2 WHERE id = ?1 RETURNING {COLUMNS}"))?
                    .query_row(params![id, filter], hook)
                    .optional()?
                    .ok_or_else(|| StorageError::NotFound(format!("hook {id}")))
            })
            .await
    }

    async fn set_group_key(&self, id: &HookId, group_key: Option<&str>) -> Result<Webhook> {
        let id = id.as_str().to_owned();
        let group_key = group_key.map(str::to_owned);
        self.writer
            .submit(move |conn| {
                conn.prepare_cached(&format!("UPDATE webhooks SET group_key = ?2 WHERE id = ?1 RETURNING {COLUMNS}"))?
                    .query_row(params![id, group_key], hook)
                    .optional()?
                    .ok_or_else(|| StorageError::NotFound(format!("hook {id}")))
            })
            .await
    }

    async fn set_per_delivery(&self, id: &HookId, per_delivery: bool) -> Result<Webhook> {
        let id = id.as_str().to_owned();
        self.writer
            .submit(move |conn| {
                conn.prepare_cached(&format!(
                    "UPDATE webhooks SET per_delivery = ?2 WHERE id = ?1 RETURNING {COLUMNS}"
                ))?
                .query_row(params![id, per_delivery], hook)
                .optional()?
                .ok_or_else(|| StorageError::NotFound(format!("hook {id}")))
            })
            .await
    }

    async fn record_invocations(&self, id: &HookId, count: u64) -> Result<()> {
        let id = id.as_str().to_owned();
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.writer
            .submit(move |conn| {
                let n = conn
                    .prepare_cached("UPDATE webhooks SET invocation_count = invocation_count + ?2 WHERE id = ?1")?
                    .execute(rusqlite::params![id, count])?;
                if n == 0 {
                    return Err(StorageError::NotFound(format!("hook {id}")));
                }
                Ok(())
            })
            .await
    }
}
