//! The audit port on DynamoDB, and the group commit of unconditional puts it shares with the workers' `DONE`
//! records: a writer task takes every put waiting and writes them together with `BatchWriteItem` (25 items a
//! request, across tables, unprocessed items retried), answering each caller once its items are stored. Under
//! load many events share one request.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use eventfleet_schema::{AuditEntry, EventId, Step, Timestamp};

use super::batch::{GroupCommit, Linger};
use super::item::{Item, Reader, s, ts, ttl};
use super::{AwsStore, unavailable};
use crate::audit::{AuditLog, AuditQuery};
use crate::{Result, StorageError};

/// DynamoDB's limit of items per `BatchWriteItem`.
const BATCH: usize = 25;
/// Batch writes in flight at once; more puts wait and join a later (larger) batch.
const IN_FLIGHT: usize = 2;
/// How long a batch that is not full waits for more items. Short: the ingress waits for its lines, the workers
/// for their `started` lines before the handler and for `DONE` before the delete.
const LINGER: Duration = Duration::from_millis(5);

/// The group commit of unconditional puts, to any table: audit lines, and the workers' `DONE` records with their
/// `succeeded` lines (one `BatchWriteItem` carries both tables).
pub(super) type Puts = GroupCommit<(String, Item), Result<()>>;

/// Starts the put writer. Items of the `optional` table (the event log's) ride in the same batches, but a batch
/// that fails with them is written again without them: that table failing (not created yet, a permission
/// missing) fails its own items only, never an accept's lines or a worker's `DONE`.
pub(super) fn puts(client: aws_sdk_dynamodb::Client, optional: Option<String>) -> Puts {
    GroupCommit::start(BATCH, IN_FLIGHT, Linger::Always(LINGER), move |items: Vec<(String, Item)>| {
        let client = client.clone();
        let optional = optional.clone().filter(|table| items.iter().any(|(t, _)| t == table));
        async move {
            let n = items.len();
            let Some(table) = optional else { return vec![write_all(&client, items).await; n] };
            let tables: Vec<bool> = items.iter().map(|(t, _)| *t == table).collect();
            let rest: Vec<(String, Item)> = items.iter().filter(|(t, _)| *t != table).cloned().collect();
            match write_all(&client, items).await {
                Ok(()) => vec![Ok(()); n],
                Err(e) => {
                    tracing::warn!(error = %e, %table, "a batch with event log items failed: writing the rest alone");
                    let again = if rest.is_empty() { Ok(()) } else { write_all(&client, rest).await };
                    tables.into_iter().map(|optional| if optional { Err(e.clone()) } else { again.clone() }).collect()
                }
            }
        }
    })
}

/// Writes items in chunks of 25, resending what DynamoDB leaves unprocessed ([`super::unprocessed`]).
pub(super) async fn write_all(client: &aws_sdk_dynamodb::Client, mut items: Vec<(String, Item)>) -> Result<()> {
    // DynamoDB refuses a whole batch that names one key twice; the same line written by two racing deliveries
    // (the accept's lines have fixed keys) is one item.
    let mut unique: Vec<(String, Item)> = Vec::with_capacity(items.len());
    for item in items.drain(..) {
        if !unique.contains(&item) {
            unique.push(item);
        }
    }
    for chunk in unique.chunks(BATCH) {
        let mut pending: HashMap<String, Vec<WriteRequest>> = HashMap::new();
        for (table, item) in chunk {
            let put = PutRequest::builder()
                .set_item(Some(item.clone()))
                .build()
                .map_err(|e| StorageError::Invalid(e.to_string()))?;
            pending.entry(table.clone()).or_default().push(WriteRequest::builder().put_request(put).build());
        }
        super::unprocessed::until_processed("BatchWriteItem", pending, |pending| async move {
            let out = (client.batch_write_item())
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|e| unavailable("BatchWriteItem", e))?;
            let mut left = out.unprocessed_items.unwrap_or_default();
            left.retain(|_, requests| !requests.is_empty());
            Ok(((), left))
        })
        .await?;
    }
    Ok(())
}

fn entry(item: &Item) -> Result<AuditEntry> {
    let r = Reader::new(item, "audit");
    let detail = match r.opt_str("detail")? {
        Some(text) => serde_json::from_str(&text).map_err(|e| StorageError::Corrupt(format!("audit detail: {e}")))?,
        None => serde_json::Value::Null,
    };
    Ok(AuditEntry {
        event_id: r.parsed("event_id", EventId::parse)?,
        at: r.ts("at")?,
        step: r.parsed("step", Step::parse)?,
        actor: r.str("actor")?,
        detail,
    })
}

impl AwsStore {
    pub(super) fn audit_item(&self, e: &AuditEntry) -> Item {
        // The sort key orders an event's lines by time, then by append order: UUIDv7s made in one process
        // increase, so lines appended in one call keep their order.
        self.audit_item_keyed(e, format!("{:015}#{}", e.at.as_millis(), uuid::Uuid::now_v7()))
    }

    /// A line whose sort key depends only on its time, step and `order`: writing it again (another delivery of
    /// the same event writing the same line) replaces it instead of adding a second. `order` sorts such lines
    /// of one instant before the others (a UUIDv7 starts with a digit above `-`).
    pub(super) fn audit_item_once(&self, e: &AuditEntry, order: u8) -> Item {
        self.audit_item_keyed(e, format!("{:015}#{order}-{}", e.at.as_millis(), e.step.as_str()))
    }

    fn audit_item_keyed(&self, e: &AuditEntry, at_seq: String) -> Item {
        let expires = e.at.plus(self.options.audit_ttl);
        Item::from([
            ("event_id".into(), s(e.event_id.to_string())),
            ("at_seq".into(), s(at_seq)),
            ("at".into(), ts(e.at)),
            ("step".into(), s(e.step.as_str())),
            ("actor".into(), s(&e.actor)),
            ("detail".into(), s(e.detail.to_string())),
            ("expires_at".into(), ts(expires)),
            ("ttl".into(), ttl(expires)),
        ])
    }

    fn live_entries(&self, items: Vec<Item>, now: Timestamp) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for item in items {
            if Reader::new(&item, "audit").ts("expires_at")? > now {
                out.push(entry(&item)?);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl AuditLog for AwsStore {
    async fn append(&self, entries: Vec<AuditEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let items = entries.iter().map(|e| (self.names.audit_table.clone(), self.audit_item(e))).collect();
        for result in self.puts.submit_all(items).await {
            result.unwrap_or_else(|| Err(StorageError::unavailable("audit writer stopped")))?;
        }
        Ok(())
    }

    async fn history(&self, event_id: EventId) -> Result<Vec<AuditEntry>> {
        let now = self.now();
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .clients
                .dynamodb
                .query()
                .table_name(&self.names.audit_table)
                .key_condition_expression("event_id = :e")
                .expression_attribute_values(":e", s(event_id.to_string()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| unavailable("Query audit", e))?;
            items.extend(out.items.unwrap_or_default());
            start = out.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        self.live_entries(items, now)
    }

    async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        // Across events there is no key to query by: a filtered scan, for operators' occasional reads.
        let now = self.now();
        let mut filters = vec!["expires_at > :now".to_owned()];
        let mut values = vec![(":now", ts(now))];
        if let Some(step) = query.step {
            filters.push("#step = :step".into());
            values.push((":step", s(step.as_str())));
        }
        if let Some(since) = query.since {
            filters.push("#at >= :since".into());
            values.push((":since", ts(since)));
        }
        if let Some(until) = query.until {
            filters.push("#at < :until".into());
            values.push((":until", ts(until)));
        }
        let filter = filters.join(" AND ");
        let mut scan = self.clients.dynamodb.scan().table_name(&self.names.audit_table).filter_expression(&filter);
        if filter.contains("#at") {
            scan = scan.expression_attribute_names("#at", "at");
        }
        if filter.contains("#step") {
            scan = scan.expression_attribute_names("#step", "step");
        }
        for (k, v) in values {
            scan = scan.expression_attribute_values(k, v);
        }
        let items = super::item::scan_all(scan, "Scan audit").await?;
        let mut entries = self.live_entries(items, now)?;
        entries.sort_by_key(|e| e.at);
        if let Some(limit) = query.limit {
            entries.truncate(limit);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sort_keys_order_by_time_then_append_order() {
        let a = format!("{:015}#{}", 1_700_000_000_000_i64, uuid::Uuid::now_v7());
        let b = format!("{:015}#{}", 1_700_000_000_000_i64, uuid::Uuid::now_v7());
        let c = format!("{:015}#{}", 999_i64, uuid::Uuid::now_v7());
        assert!(a < b && c < a);
    }
}
