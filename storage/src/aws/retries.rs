//! Retry records on DynamoDB: one item per event, replaced on upsert.

use async_trait::async_trait;
use eventfleet_schema::{ErrorClass, EventId, IdempotencyKey, RetryRecord, RetryStatus};

use super::item::{Item, Reader, n, s, ts, ttl};
use super::{AwsStore, unavailable};
use crate::Result;
use crate::retries::RetryRecords;

fn item(r: &RetryRecord) -> Item {
    let mut item = Item::from([
        ("event_id".into(), s(r.event_id.to_string())),
        ("idempotency_key".into(), s(r.idempotency_key.as_str())),
        ("attempts".into(), n(r.attempts)),
        ("last_error".into(), s(&r.last_error)),
        ("error_class".into(), s(r.error_class.as_str())),
        ("status".into(), s(r.status.as_str())),
        ("updated_at".into(), ts(r.updated_at)),
        ("expires_at".into(), ts(r.expires_at)),
        ("ttl".into(), ttl(r.expires_at)),
    ]);
    if let Some(next) = r.next_attempt_at {
        item.insert("next_attempt_at".into(), ts(next));
    }
    if let Some(reason) = &r.dead_reason {
        item.insert("dead_reason".into(), s(reason));
    }
    item
}

pub(super) fn record(item: &Item) -> Result<RetryRecord> {
    let r = Reader::new(item, "retries");
    Ok(RetryRecord {
        event_id: r.parsed("event_id", EventId::parse)?,
        idempotency_key: IdempotencyKey::from_raw(r.str("idempotency_key")?),
        attempts: r.u32("attempts")?,
        last_error: r.str("last_error")?,
        error_class: r.parsed("error_class", ErrorClass::parse)?,
        next_attempt_at: r.opt_ts("next_attempt_at")?,
        status: r.parsed("status", RetryStatus::parse)?,
        dead_reason: r.opt_str("dead_reason")?,
        updated_at: r.ts("updated_at")?,
        expires_at: r.ts("expires_at")?,
    })
}

impl AwsStore {
    /// Marks an event's retry record resolved, if it has one (after a success that followed failures).
    pub(super) async fn resolve_retry(&self, event_id: EventId) {
        let result = self
            .clients
            .dynamodb
            .update_item()
            .table_name(&self.names.retries_table)
            .key("event_id", s(event_id.to_string()))
            .update_expression("SET #s = :resolved, updated_at = :now REMOVE next_attempt_at")
            .condition_expression("attribute_exists(event_id)")
            .expression_attribute_names("#s", "status")
            .expression_attribute_values(":resolved", s(RetryStatus::Resolved.as_str()))
            .expression_attribute_values(":now", ts(self.now()))
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(e) => {
                tracing::warn!(error = %unavailable("UpdateItem retries", e), %event_id, "could not resolve the retry record")
            }
        }
    }
}

#[async_trait]
impl RetryRecords for AwsStore {
    async fn upsert(&self, record: &RetryRecord) -> Result<()> {
        self.clients
            .dynamodb
            .put_item()
            .table_name(&self.names.retries_table)
            .set_item(Some(item(record)))
            .send()
            .await
            .map_err(|e| unavailable("PutItem retries", e))?;
        Ok(())
    }

    async fn get(&self, event_id: EventId) -> Result<Option<RetryRecord>> {
        let now = self.now();
        let out = self
            .clients
            .dynamodb
            .get_item()
            .table_name(&self.names.retries_table)
            .key("event_id", s(event_id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| unavailable("GetItem retries", e))?;
        match out.item {
            Some(item) => {
                let rec = record(&item)?;
                Ok((rec.expires_at > now).then_some(rec))
            }
            None => Ok(None),
        }
    }

    async fn list(&self, status: Option<RetryStatus>, limit: usize) -> Result<Vec<RetryRecord>> {
        // Failing events are few (a healthy fleet has almost none): a filtered scan serves operators.
        let now = self.now();
        let mut scan = self
            .clients
            .dynamodb
            .scan()
            .table_name(&self.names.retries_table)
            .filter_expression(if status.is_some() { "expires_at > :now AND #s = :s" } else { "expires_at > :now" })
            .expression_attribute_values(":now", ts(now));
        if let Some(status) = status {
            scan =
                scan.expression_attribute_names("#s", "status").expression_attribute_values(":s", s(status.as_str()));
        }
        let items = super::item::scan_all(scan, "Scan retries").await?;
        let mut out = items.iter().map(record).collect::<Result<Vec<_>>>()?;
        out.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        out.truncate(limit);
        Ok(out)
    }
}
